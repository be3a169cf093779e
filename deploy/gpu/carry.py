"""What the GPU bench carries to a bare GPU machine, computed from requirements.lock.

    python deploy/gpu/carry.py build [--out .gpu-carry]     # `make gpu-carry`
    python deploy/gpu/carry.py machine                        # pins of what the machine has

``build`` writes ``<out>/wheels`` (Python 3.12 manylinux x86_64 wheels, hashes checked against
the lock) and ``<out>/assets`` (the bench's footage and yolov5n.pt), prints the size and fails
over ``--limit-mib`` (the 64 MiB a device call carries). Which distributions:

1. the top-level modules ``vigil bench``'s detector path loads, measured by running it on the CPU
   here with the service packages hidden (as tests/pipeline/test_cli_imports.py does), mapped to
   their distributions;
2. with their dependencies as requirements.lock records them (its ``# via`` lines), except a
   dependency the bench never imports whose wheel is over ``--max-unloaded-mib`` (polars'
   runtime, 54 MiB: ultralytics uses it for tables, not to detect);
3. minus what the GPU machine has (:data:`pipeline.common.bare.GPU_MACHINE`) and everything the
   lock says those need (torch brings the nvidia-* libraries, matplotlib its helpers, ...).

Versions and hashes are the lock's, evaluated for CPython 3.12 on Linux x86_64. ``machine``
prints ``name==version`` for the machine's own packages (the rehearsal venv, ``make
gpu-rehearsal``).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from packaging.markers import Marker
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from pipeline.common.bare import GPU_MACHINE, NOT_FOR_THE_BENCH  # noqa: E402

#: The interpreter and platform of the GPU machine, for the lock's environment markers.
TARGET = {
    "python_version": "3.12",
    "python_full_version": "3.12.3",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "platform_machine": "x86_64",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
    "os_name": "posix",
    "extra": "",
}
PLATFORMS = ("manylinux2014_x86_64", "manylinux_2_17_x86_64", "manylinux_2_28_x86_64")
#: One distribution standing in for another (same import name, no GUI libraries).
PROVIDES = {"opencv-python-headless": ("opencv-python",)}
FOOTAGE_GLOB = "*.mp4"
WEIGHTS = "yolov5n.pt"

# The detector path of `vigil bench` with the service packages hidden; prints what it loaded.
PROBE = """
import json, sys
from pipeline.common.bare import NOT_FOR_THE_BENCH, hide
hide(NOT_FOR_THE_BENCH)
from pipeline.cli import main
code = main(sys.argv[1:])
print("LOADED " + json.dumps(sorted({m.partition(".")[0] for m in sys.modules})))
sys.exit(code)
"""
PROBE_ARGS = [
    "bench",
    "--device",
    "cpu",
    "--backends",
    "torch",
    "--skip",
    "pipeline,gating,alerts",
    "--imgsz",
    "320",
    "--batch-sizes",
    "1",
    "--detector-seconds",
    "0.2",
    "--accuracy-frames",
    "1",
]


@dataclass
class Pin:
    name: str
    version: str
    hashes: list[str]
    via: set[str] = field(default_factory=set)


def read_lock(path: Path) -> dict[str, Pin]:
    """The lock's entries that apply to :data:`TARGET`, by canonical name."""
    pins: dict[str, Pin] = {}
    current: Pin | None = None
    in_via = False
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not raw.startswith((" ", "#")) and "==" in line:
            spec, _, marker = line.rstrip(" \\").partition(";")
            name, _, version = spec.strip().partition("==")
            current = None
            if marker.strip() and not Marker(marker.strip()).evaluate(TARGET):
                continue
            current = Pin(canonicalize_name(name), version.strip(), [])
            pins[current.name] = current
            in_via = False
        elif current is None:
            continue
        elif line.startswith("--hash="):
            current.hashes.append(line.rstrip(" \\").removeprefix("--hash="))
        elif line.startswith("# via"):
            rest = line.removeprefix("# via").strip()
            in_via = not rest
            if rest:
                current.via.add(rest)
        elif in_via and line.startswith("#   "):
            current.via.add(line.removeprefix("#").strip())
        else:
            in_via = False
    for pin in pins.values():  # "vigil (pyproject.toml)" -> "vigil"
        pin.via = {canonicalize_name(v.split(" ")[0]) for v in pin.via}
    return pins


def closure(names: set[str], pins: dict[str, Pin]) -> set[str]:
    """``names`` and everything the lock says they need."""
    needs: dict[str, set[str]] = {}
    for pin in pins.values():
        for parent in pin.via:
            needs.setdefault(parent, set()).add(pin.name)
    out: set[str] = set()
    todo = [canonicalize_name(n) for n in names]
    while todo:
        n = todo.pop()
        if n not in out:
            out.add(n)
            todo += needs.get(n, ())
    return out


def machine_has(pins: dict[str, Pin]) -> set[str]:
    have = {canonicalize_name(n) for n in GPU_MACHINE}
    for n in list(have):
        have |= {canonicalize_name(p) for p in PROVIDES.get(n, ())}
    return closure(have, pins)


def probe_modules(python: str) -> list[str]:
    """Top-level modules `vigil bench`'s detector path loads (run here, on the CPU)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    p = subprocess.run(
        [python, "-c", PROBE, *PROBE_ARGS],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if p.returncode != 0 or "LOADED " not in p.stdout:
        sys.exit(f"carry: the bench probe failed:\n{p.stdout[-2000:]}{p.stderr[-4000:]}")
    return json.loads(p.stdout.split("LOADED ", 1)[1].splitlines()[0])


def distributions(modules: list[str]) -> set[str]:
    """The installed distributions providing ``modules`` (the project itself left out)."""
    mapping = importlib.metadata.packages_distributions()
    found = {canonicalize_name(d) for m in modules for d in mapping.get(m, ())}
    return found - {"vigil"}


def needed(pins: dict[str, Pin], python: str) -> tuple[list[str], set[str], list[str]]:
    """(distributions to carry, those the bench loads itself, modules the probe loaded)."""
    modules = probe_modules(python)
    dists = distributions(modules)
    missing = sorted(d for d in dists if d not in pins)
    if missing:  # e.g. colorama: locked for Windows only, imported here when present
        print(f"carry: loaded here, not locked for Linux: {missing} (left out)", file=sys.stderr)
        dists -= set(missing)
    hidden = {canonicalize_name(m) for m in NOT_FOR_THE_BENCH}
    carry = closure(dists, pins) - machine_has(pins) - {"vigil"}
    leaked = sorted(carry & hidden)
    if leaked:
        sys.exit(f"carry: the bench would need packages it must run without: {leaked}")
    return sorted(carry), dists, modules


def download(names: list[str], pins: dict[str, Pin], dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
        for n in names:
            pin = pins[n]
            f.write(f"{pin.name}=={pin.version} " + " ".join(f"--hash={h}" for h in pin.hashes))
            f.write("\n")
        reqs = f.name
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--require-hashes"]
    cmd += ["--only-binary=:all:", "--python-version", "3.12", "--implementation", "cp"]
    cmd += ["--abi", "cp312", "--abi", "abi3", "--abi", "none"]
    for p in PLATFORMS:
        cmd += ["--platform", p]
    cmd += ["-d", str(dest), "-r", reqs]
    try:
        subprocess.run(cmd, check=True)
    finally:
        os.unlink(reqs)
    for whl in dest.glob("*.whl"):  # a wheel of an older carry
        if wheel_name(whl) not in names:
            whl.unlink()


def wheel_name(whl: Path) -> str:
    return canonicalize_name(re.split(r"-\d", whl.name, maxsplit=1)[0])


def leave_out_unloaded(wheels: Path, loaded: set[str], max_mib: float) -> list[str]:
    """Remove the wheels of locked dependencies the bench never imports that weigh over
    ``max_mib`` (polars' 54 MiB runtime: ultralytics needs it for tables, not to detect)."""
    out = []
    for whl in sorted(wheels.glob("*.whl")):
        if wheel_name(whl) not in loaded and whl.stat().st_size > max_mib * 2**20:
            out.append(f"{whl.name} ({whl.stat().st_size / 2**20:.1f} MiB)")
            whl.unlink()
    return out


def copy_assets(src: Path, dest: Path) -> None:
    """The footage and weights the bench reads; read-only, so exports go to $VIGIL_CACHE
    (not into the carry)."""
    if not (src / "models" / WEIGHTS).is_file():
        sys.exit(f"carry: {src}/models/{WEIGHTS} missing: set VIGIL_ASSETS")
    if dest.exists():
        for d in (dest, *dest.rglob("*")):
            if d.is_dir():
                d.chmod(0o755)
        shutil.rmtree(dest)
    (dest / "models").mkdir(parents=True)
    (dest / "footage").mkdir()
    shutil.copy2(src / "models" / WEIGHTS, dest / "models" / WEIGHTS)
    for clip in sorted((src / "footage").glob(FOOTAGE_GLOB)):
        shutil.copy2(clip, dest / "footage" / clip.name)
    if (src / "ATTRIBUTION.md").is_file():
        shutil.copy2(src / "ATTRIBUTION.md", dest / "ATTRIBUTION.md")
    for d in (dest / "models", dest / "footage", dest):
        d.chmod(0o555)


def size_mib(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


def cmd_build(args: argparse.Namespace) -> int:
    pins = read_lock(Path(args.lock))
    out = Path(args.out)
    names, loaded, modules = needed(pins, args.python)
    download(names, pins, out / "wheels")
    left_out = leave_out_unloaded(out / "wheels", loaded, args.max_unloaded_mib)
    from pipeline.common.assets import assets_dir

    copy_assets(assets_dir(), out / "assets")
    manifest = {
        "lock": str(args.lock),
        "modules_loaded": modules,
        "wheels": sorted(w.name for w in (out / "wheels").glob("*.whl")),
        "left_out_not_imported": left_out,
        "machine_has": sorted(machine_has(pins)),
    }
    (out / "carry.json").write_text(json.dumps(manifest, indent=1) + "\n")
    wheels, assets, total = size_mib(out / "wheels"), size_mib(out / "assets"), size_mib(out)
    print(
        f"carry: {len(names)} distributions ({', '.join(f'{n}=={pins[n].version}' for n in names)})"
    )
    if left_out:
        print(f"carry: left out, never imported by the bench: {', '.join(left_out)}")
    print(f"carry: {out}: wheels {wheels:.1f} MiB + assets {assets:.1f} MiB = {total:.1f} MiB")
    if total > args.limit_mib:
        print(f"carry: {total:.1f} MiB is over the {args.limit_mib} MiB limit", file=sys.stderr)
        return 1
    return 0


def cmd_machine(args: argparse.Namespace) -> int:
    pins = read_lock(Path(args.lock))
    for name in GPU_MACHINE:
        n = canonicalize_name(name)
        alias = next((p for p in PROVIDES.get(n, ()) if p in pins), None)
        pin = pins.get(n) or (pins.get(alias) if alias else None)
        print(f"{name}=={pin.version}" if pin else name)
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="wheels + assets for the GPU machine")
    b.add_argument("--out", default=str(ROOT / ".gpu-carry"))
    b.add_argument("--limit-mib", type=float, default=64.0)
    b.add_argument("--python", default=sys.executable, help="runs the bench probe")
    b.add_argument(
        "--max-unloaded-mib",
        type=float,
        default=5.0,
        help="leave out a dependency the bench never imports when its wheel is larger",
    )
    b.set_defaults(func=cmd_build)
    m = sub.add_parser("machine", help="name==version of what the GPU machine has")
    m.set_defaults(func=cmd_machine)
    for p in (b, m):
        p.add_argument("--lock", default=str(ROOT / "requirements.lock"))
    args = ap.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
