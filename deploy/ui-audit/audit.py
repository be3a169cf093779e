"""``make ui-audit``: Lighthouse on every console page, phone and desktop emulation, logged in.

    python deploy/ui-audit/audit.py [-c examples/demo.yaml] [--out .vigil/ui-audit]

What it does, against the local services (the Makefile starts and stops them):

1. a console on a free port of 127.0.0.1, with the config's cameras in the registry, the first
   camera's recording (the demo footage remuxed into a temporary folder) and one ended alert of
   it (a footage frame as snapshot), so every page has something to show: the alert's detail
   plays its clip, the camera's timeline shows the recording and the alert;
2. an admin user with a password made now, logged in once: the session cookie reaches Lighthouse
   through ``--extra-headers`` (it is never printed; the user is removed at the end);
3. Lighthouse (``deploy/ui-audit/package.json`` pins it; ``npm ci`` there) with Debian's Chromium,
   each page twice: its default mobile emulation and ``--preset=desktop``;
4. a table of the scores (performance, accessibility, best practices) on stdout, each report's
   JSON and the summary ``scores.json`` under ``--out``, and the failing audits of any page below
   target. Exit status 1 when a page misses a target (accessibility and best practices 1.00,
   performance 0.95: issue 25), 2 when it cannot run.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

HERE = Path(__file__).resolve().parent
LIGHTHOUSE = HERE / "node_modules" / "lighthouse" / "cli" / "index.js"
CATEGORIES = ("performance", "accessibility", "best-practices")
TARGETS = {"performance": 0.95, "accessibility": 1.0, "best-practices": 1.0}
FORMS = ("phone", "desktop")
AUDIT_USER = "ui-audit"
ALERT_ID = "a11a11a11a11a11a11a1"


@dataclass(frozen=True)
class Page:
    name: str
    fragment: str  # the hash route; "" is the login page (not logged in)
    logged_in: bool = True


def pages(camera_id: str) -> list[Page]:
    return [
        Page("login", "#/login", logged_in=False),
        Page("cameras", "#/cameras"),
        Page("camera", f"#/camera/{camera_id}"),
        Page("alerts", "#/alerts"),
        Page("alert", f"#/alerts/{ALERT_ID}"),
        Page("timeline", f"#/timeline/{camera_id}"),
        Page("models", "#/models"),
        Page("audit", "#/audit"),
    ]


def seed(cfg, recordings: Path) -> str:
    """The config's cameras in the registry; the first one's recording (the demo footage,
    remuxed into ``recordings`` at full speed, indexed) and one ended alert of it with a
    snapshot 20 s in, so that the alert's detail plays a clip and the camera has a timeline.
    Returns that camera's id."""
    import cv2

    from pipeline.common.assets import footage
    from pipeline.common.kafka import ensure_topics
    from pipeline.record.index import SegmentIndex
    from pipeline.record.segmenter import Recorder
    from tests.support.seeding import seed_camera_alert

    ensure_topics(cfg.kafka)
    if not cfg.cameras:
        raise SystemExit("ui-audit: the config has no cameras to show")
    camera = cfg.cameras[0].id
    video = footage("one-by-one-person-detection.mp4")
    index = SegmentIndex.from_config(cfg.redis)
    index.clear(camera)
    segments = []
    Recorder(
        camera, str(video), recordings, settle_s=0, realtime=False, on_segment=segments.append
    ).run()
    if not segments:
        raise SystemExit(f"ui-audit: recording {video} gave no segment")
    for seg in segments:
        index.add(seg)
    cap = cv2.VideoCapture(str(video))
    cap.set(cv2.CAP_PROP_POS_MSEC, 20_000)
    ok, frame = cap.read()
    cap.release()
    if not ok:
        raise SystemExit("ui-audit: cannot read a frame of the demo footage")
    # the same seeding as the console's phone tests (tests/support/seeding.py)
    seed_camera_alert(
        cfg,
        cfg.cameras,
        segments,
        alert_id=ALERT_ID,
        rule_id="table-intrusion",
        offset_s=20.0,
        duration_s=6.0,
        snapshot=cv2.imencode(".jpg", frame)[1].tobytes(),
    )
    return camera


def lighthouse(url: str, form: str, cookie: str | None, out: Path) -> dict:
    """One Lighthouse run; its JSON report."""
    cmd = [
        "node",
        str(LIGHTHOUSE),
        url,
        "--chrome-path=/usr/bin/chromium",
        "--chrome-flags=--headless=new --no-sandbox --disable-dev-shm-usage",
        f"--only-categories={','.join(CATEGORIES)}",
        "--output=json",
        f"--output-path={out}",
        "--quiet",
    ]
    if form == "desktop":
        cmd.append("--preset=desktop")
    if cookie:
        cmd.append("--extra-headers=" + json.dumps({"Cookie": cookie}))
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    if r.returncode != 0 or not out.is_file():
        tail = (r.stderr or r.stdout).strip().splitlines()[-5:]
        raise RuntimeError(f"lighthouse failed on {url} ({form}): {' / '.join(tail)}")
    return json.loads(out.read_text())


def failing(report: dict, category: str) -> list[str]:
    """The audits of ``category`` that cost it points: ``id (score)``."""
    refs = report["categories"][category]["auditRefs"]
    out = []
    for ref in refs:
        audit = report["audits"].get(ref["id"], {})
        score = audit.get("score")
        if ref.get("weight", 0) > 0 and score is not None and score < 1:
            out.append(f"{ref['id']} ({score:.2f})")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-c", "--config", default=str(ROOT / "examples" / "demo.yaml"))
    ap.add_argument("--out", default=str(ROOT / ".vigil" / "ui-audit"))
    ap.add_argument("--only", nargs="*", help="page names to audit (default: all)")
    args = ap.parse_args(argv)
    if not LIGHTHOUSE.is_file():
        print(f"ui-audit: {LIGHTHOUSE} missing: run `npm ci` in {HERE}", file=sys.stderr)
        return 2
    if not Path("/usr/bin/chromium").is_file():
        print("ui-audit: /usr/bin/chromium missing (Debian package chromium)", file=sys.stderr)
        return 2

    import httpx

    from pipeline.config import load_config
    from pipeline.console.auth import UserStore
    from pipeline.console.server import ConsoleServer
    from pipeline.record.index import SegmentIndex

    cfg = load_config(args.config)
    recordings = Path(tempfile.mkdtemp(prefix="vigil-ui-audit-"))
    cfg.recordings.dir = str(recordings)  # the console cuts the seeded clip from there
    with socket.socket() as sock:  # a free port of 127.0.0.1
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    camera = seed(cfg, recordings)
    users = UserStore(cfg.redis)
    password = secrets.token_urlsafe(16)
    users.add(AUDIT_USER, password, "admin")
    server = ConsoleServer(cfg, "127.0.0.1", port).start()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows, misses = [], []
    try:
        base = server.url.rstrip("/")
        with httpx.Client(base_url=base, timeout=30) as c:
            deadline = time.monotonic() + 60
            while c.get("/readyz").status_code != 200:
                if time.monotonic() > deadline:
                    raise SystemExit("ui-audit: the console never got ready (Kafka, Redis?)")
                time.sleep(0.3)
            r = c.post("/api/login", json={"username": AUDIT_USER, "password": password})
            r.raise_for_status()
            cookie = "; ".join(f"{k}={v}" for k, v in c.cookies.items())
        with tempfile.TemporaryDirectory() as tmp:
            for page in pages(camera):
                if args.only and page.name not in args.only:
                    continue
                for form in FORMS:
                    path = Path(tmp) / f"{page.name}-{form}.json"
                    report = lighthouse(
                        f"{base}/{page.fragment}", form, cookie if page.logged_in else None, path
                    )
                    shutil.copy(path, out / path.name)
                    scores = {k: report["categories"][k]["score"] for k in CATEGORIES}
                    rows.append({"page": page.name, "form": form, **scores})
                    for k, target in TARGETS.items():
                        if scores[k] is None or scores[k] < target:
                            misses.append(
                                f"{page.name} ({form}) {k} {scores[k]}: "
                                + ", ".join(failing(report, k))
                            )
    finally:
        server.stop()
        users.remove(AUDIT_USER)
        SegmentIndex.from_config(cfg.redis).clear(camera)
        shutil.rmtree(recordings, ignore_errors=True)
    meta = {
        "lighthouse": json.loads((HERE / "package.json").read_text())["dependencies"]["lighthouse"],
        "chromium": subprocess.run(
            ["/usr/bin/chromium", "--version"], capture_output=True, text=True, check=False
        ).stdout.strip(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "targets": TARGETS,
    }
    (out / "scores.json").write_text(json.dumps({**meta, "scores": rows}, indent=2))
    print(f"Lighthouse {meta['lighthouse']}, {meta['chromium']}, {meta['date']}")
    print("| page | form | performance | accessibility | best practices |")
    print("|---|---|---|---|---|")
    for row in rows:
        cells = [f"{row[k]:.2f}" if row[k] is not None else "-" for k in CATEGORIES]
        print(f"| {row['page']} | {row['form']} | " + " | ".join(cells) + " |")
    for miss in misses:
        print(f"below target: {miss}")
    print(f"reports: {out}")
    return 1 if misses else 0


if __name__ == "__main__":
    os.environ.setdefault("VIGIL_ASSETS", str(ROOT.parent / "shared" / "assets"))
    sys.exit(main())
