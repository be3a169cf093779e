#!/usr/bin/env bash
# Install what the local pipeline and its services need. Idempotent: each step checks first,
# so a second run only takes a few seconds.
#   1. Debian packages (Redis, mosquitto, GStreamer RTSP server, OpenCV's shared libs, JDK/Maven if absent)
#   2. the locked Python packages (requirements.lock), then this checkout as an editable package
#   3. the Apache Kafka broker jars, cached outside the checkout so fresh clones reuse them
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PYTHON="${PYTHON:-python3}"
KAFKA_VERSION="${VIGIL_KAFKA_VERSION:-4.1.1}"
KAFKA_LIBS="${VIGIL_CACHE:-$HOME/.cache/vigil}/kafka-$KAFKA_VERSION/libs"

say() { echo "setup: $*"; }

# --- 1. system packages -------------------------------------------------------------------------
pkgs=(redis-server python3-gi gir1.2-gst-rtsp-server-1.0
      # the notifier's MQTT sink: broker (services.sh start-mqtt) and its command-line clients
      mosquitto mosquitto-clients
      gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad
      gstreamer1.0-plugins-ugly gstreamer1.0-libav gstreamer1.0-tools libgl1 libglib2.0-0
      # the console's browser tests: Debian's Chromium driven headless by Playwright
      chromium chromium-driver
      # ffprobe / ffmpeg: the independent player the recording tests check segments and clips with
      ffmpeg)
command -v java >/dev/null || pkgs+=(default-jdk-headless)
command -v mvn >/dev/null || pkgs+=(maven)

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  say "installing Debian packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  # Without package lists (fresh image) apt cannot find anything: update once.
  if ! compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null; then
    $SUDO apt-get update -qq
  fi
  # Keep apt from starting a system-wide redis-server on 6379 or mosquitto on 1883 (with
  # persistence); services.sh runs its own throw-away ones. Only when no policy is in place already.
  policy=/usr/sbin/policy-rc.d
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
    $SUDO chmod +x "$policy"
    trap '$SUDO rm -f "$policy"' EXIT
  fi
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
    || { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; }
else
  say "Debian packages present"
fi

# --- 2. Python package --------------------------------------------------------------------------
# requirements.lock pins every package (runtime + dev) with its hashes: a new user, the demo and CI
# all run the set that `make test` passed with, not whatever the registries serve that day
# (`make lock` regenerates it; README "Upgrading dependencies"). pyproject.toml keeps the open
# ranges for those who install Vigil as a library.
# Reinstall only when vigil is not installed editable from *this* checkout, or a locked package
# is missing or at another version. Never force-reinstalls (torch alone is gigabytes); pip only
# fetches what is actually missing.
LOCK="$REPO/requirements.lock"
py_ok() {
  "$PYTHON" - "$REPO" "$LOCK" <<'PY'
import json, os, re, sys
# A vigil.egg-info in the current directory must not pass for an install.
sys.path = [p for p in sys.path if p not in ("", os.getcwd())]
from importlib import metadata
from pathlib import Path
try:
    from packaging.requirements import Requirement
except ImportError:
    from pip._vendor.packaging.requirements import Requirement

repo, lock = Path(sys.argv[1]), Path(sys.argv[2])
try:
    url = json.loads(metadata.distribution("vigil").read_text("direct_url.json") or "{}").get("url", "")
except metadata.PackageNotFoundError:
    sys.exit("vigil not installed")
if not url.startswith("file://") or Path(url[7:]).resolve() != repo.resolve():
    sys.exit(f"vigil installed from {url or 'elsewhere'}, not {repo}")
# Lock lines: `name==version ; marker \` followed by hash and comment lines.
for line in lock.read_text().splitlines():
    if not re.match(r"[A-Za-z0-9]", line):
        continue
    req = Requirement(line.rstrip(" \\"))
    if req.marker and not req.marker.evaluate():
        continue
    try:
        version = metadata.version(req.name)
    except metadata.PackageNotFoundError:
        sys.exit(f"{req.name} missing")
    if not req.specifier.contains(version, prereleases=True):
        sys.exit(f"{req.name} {version} is not the locked {req.specifier}")
PY
}
if why="$(py_ok 2>&1)"; then
  say "Python packages at the versions of requirements.lock, vigil editable: present"
else
  say "installing Python packages from requirements.lock ($why)"
  "$PYTHON" -m pip install -q --require-hashes -r "$LOCK"
  # Vigil itself: its dependencies are all in the lock; no build isolation, so nothing unpinned
  # is fetched to build it (setuptools is in the lock).
  "$PYTHON" -m pip install -q --no-deps --no-build-isolation -e "$REPO"
fi

# --- 3. Kafka broker jars -----------------------------------------------------------------------
if [ -f "$KAFKA_LIBS/kafka_2.13-$KAFKA_VERSION.jar" ]; then
  say "Kafka $KAFKA_VERSION jars present in $KAFKA_LIBS"
else
  say "fetching Kafka $KAFKA_VERSION jars from Maven Central into $KAFKA_LIBS"
  tmp="$KAFKA_LIBS.tmp.$$"
  rm -rf "$tmp"
  # Copy into a temp dir and rename, so an interrupted download never looks complete.
  # Output captured: Debian's mvn emits stray colour codes even with -q -B; shown only on failure.
  if ! out="$(mvn -q -B -f "$REPO/deploy/local/kafka/pom.xml" -Dkafka.version="$KAFKA_VERSION" \
      dependency:copy-dependencies -DoutputDirectory="$tmp" 2>&1)"; then
    echo "$out" >&2; rm -rf "$tmp"; say "ERROR: could not fetch the Kafka jars (see above)"; exit 1
  fi
  rm -rf "$KAFKA_LIBS" && mv "$tmp" "$KAFKA_LIBS"
fi
say "done"
