"""The console's numbers (issue 15; BENCHMARKS.md), measured against a real console process:

- list endpoints with 10,000 alerts in Redis: p50 / p95 per request;
- SSE: Redis write of an alert event to its arrival at a client of ``/api/alerts/events``;
- MJPEG live view of 4 cameras: the console's CPU per viewed camera (process CPU time while 4
  live streams are read, minus the same time idle).

    python3 -m pipeline.bench.console [--alerts 10000] [--seconds 30]

Needs Kafka and Redis (make infra-up). Uses its own topic names and Redis prefix, deleted after.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import cv2
import httpx
import yaml

from alerts.store import AlertStore, AlertWrite
from pipeline.cameras.registry import put_cameras
from pipeline.cameras.spec import CameraSpec
from pipeline.common.assets import footage
from pipeline.common.kafka import ensure_topics
from pipeline.common.redis import RedisKeys, redis_client
from pipeline.config import parse_config
from pipeline.console.auth import UserStore

CAMERAS = ["cam-a", "cam-b", "cam-c", "cam-d"]
RULES = ["zone-a", "loiter-b", "crowd-c"]
CLIPS = [
    "classroom.mp4",
    "people-detection.mp4",
    "one-by-one-person-detection.mp4",
    "car-detection.mp4",
]


def _pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def _config(tag: str, port: int, kafka: str, redis_url: str) -> dict:
    return {
        "kafka": {
            "bootstrap_servers": kafka,
            "topics": {k: f"b{tag}.{k}" for k in ("cameras", "detections", "alerts", "rules")},
        },
        "redis": {"url": redis_url, "key_prefix": f"b{tag}:"},
        "console": {"port": port},
    }


def _alert(i: int, t0: float) -> dict:
    cam, rule = CAMERAS[i % 4], RULES[i % 3]
    return {
        "schema_version": 1,
        "id": f"{i:020x}",
        "camera_id": cam,
        "rule_id": rule,
        "rule_type": "zone_intrusion",
        "status": "started" if i % 2 == 0 else "ended",
        "severity": ("low", "medium", "high")[i % 3],
        "label": "person",
        "track_id": i,
        "started_at": t0 + i * 0.1,
        "ended_at": None if i % 2 == 0 else t0 + i * 0.1 + 5,
        "updated_at": t0 + i * 0.1,
        "frame_seq": i,
        "epoch": 1,
        "box": [0.1, 0.1, 0.3, 0.6],
        "confidence": 0.8,
        "count": None,
        "zone": None,
        "details": {},
    }


def _frames(n: int = 20) -> dict[str, list[bytes]]:
    """A few real JPEG frames per camera (what the ingest worker stores for the live view)."""
    out = {}
    for cam, clip in zip(CAMERAS, CLIPS, strict=True):
        cap = cv2.VideoCapture(str(footage(clip)))
        frames = []
        while len(frames) < n:
            ok, img = cap.read()
            if not ok:
                break
            frames.append(cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 85])[1].tobytes())
        cap.release()
        out[cam] = frames
    return out


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--alerts", type=int, default=10_000)
    ap.add_argument("--requests", type=int, default=200, help="per list endpoint")
    ap.add_argument("--sse-events", type=int, default=200)
    ap.add_argument("--seconds", type=float, default=30.0, help="MJPEG and idle windows")
    ap.add_argument("--kafka", default="127.0.0.1:9092")
    ap.add_argument("--redis", default="redis://127.0.0.1:6379/12")
    args = ap.parse_args(argv)

    tag = uuid.uuid4().hex[:8]
    port = _free_port()
    data = _config(tag, port, args.kafka, args.redis)
    cfg = parse_config(data, "bench")
    ensure_topics(cfg.kafka)
    put_cameras(
        cfg.kafka, [CameraSpec(id=c, url=f"rtsp://127.0.0.1:9/{c}", fps=5) for c in CAMERAS]
    )
    store = AlertStore(cfg.redis)
    t0 = time.time() - args.alerts * 0.1
    for start in range(0, args.alerts, 500):
        store.write_alerts(
            [
                AlertWrite(_alert(i, t0), t0 + i * 0.1)
                for i in range(start, min(start + 500, args.alerts))
            ]
        )
    password = secrets.token_urlsafe(16)
    UserStore(cfg.redis).add("bench", password, "viewer")
    cfg_file = Path(tempfile.mkdtemp()) / "console.yaml"
    cfg_file.write_text(yaml.safe_dump(data))
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "console", "-c", str(cfg_file)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    result: dict = {"alerts_in_redis": store.stream_len(), "machine": os.uname().nodename}
    try:
        base = f"http://127.0.0.1:{port}"
        client = httpx.Client(base_url=base, timeout=30)
        deadline = time.monotonic() + 60
        while True:
            try:
                if client.get("/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit("console did not start")
            time.sleep(0.2)
        client.post(
            "/api/login", json={"username": "bench", "password": password}
        ).raise_for_status()
        first = client.get("/api/alerts", params={"limit": 50}).json()
        queries = {
            "GET /api/alerts?limit=50": {"limit": 50},
            "GET /api/alerts page 2 (before=)": {"limit": 50, "before": first["next"]},
            "GET /api/alerts?camera=cam-c&status=started": {"camera": "cam-c", "status": "started"},
            "GET /api/alerts?rule=crowd-c&severity=high": {"rule": "crowd-c", "severity": "high"},
        }
        lists = {}
        for name, params in queries.items():
            times = []
            for _ in range(args.requests):
                t = time.perf_counter()
                r = client.get("/api/alerts", params=params)
                times.append((time.perf_counter() - t) * 1000)
                assert r.status_code == 200 and r.json()["items"], r.text
            lists[name] = times
        times = []
        for _ in range(args.requests):
            t = time.perf_counter()
            assert client.get("/api/cameras").status_code == 200
            times.append((time.perf_counter() - t) * 1000)
        lists["GET /api/cameras (4 cameras)"] = times
        result["list_ms"] = {
            k: {"p50": round(_pct(v, 50), 1), "p95": round(_pct(v, 95), 1)}
            for k, v in lists.items()
        }
        result["sse_ms"] = _sse(client, store, args.sse_events, t0)
        result["mjpeg"] = _mjpeg(client, cfg, proc.pid, args.seconds)
    finally:
        proc.terminate()
        proc.wait(15)
        for key in store.client.scan_iter(match=f"b{tag}:*", count=1000):
            store.client.delete(key)
    print(json.dumps(result, indent=2))
    return 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _sse(client: httpx.Client, store: AlertStore, n: int, t0: float) -> dict:
    """Write ``n`` alert events 50 ms apart; latency = arrival at the SSE client - write time."""
    sent: dict[str, float] = {}
    got: dict[str, float] = {}
    ready = threading.Event()

    def read() -> None:
        with client.stream("GET", "/api/alerts/events", timeout=None) as r:
            ready.set()
            for line in r.iter_lines():
                if line.startswith("data: "):
                    msg = json.loads(line[6:])
                    got[msg["id"]] = time.time()
                    if len(got) >= n:
                        return

    th = threading.Thread(target=read, daemon=True)
    th.start()
    ready.wait(10)
    time.sleep(0.5)
    for i in range(n):
        alert = _alert(10_000_000 + i, t0)
        alert["status"] = "started"
        sent[alert["id"]] = time.time()
        store.write_alert(AlertWrite(alert, time.time()))
        time.sleep(0.05)
    th.join(30)
    lat = [(got[k] - sent[k]) * 1000 for k in sent if k in got]
    return {
        "events": n,
        "received": len(lat),
        "p50": round(_pct(lat, 50), 1) if lat else None,
        "p95": round(_pct(lat, 95), 1) if lat else None,
        "max": round(max(lat), 1) if lat else None,
    }


def _mjpeg(client: httpx.Client, cfg, pid: int, seconds: float) -> dict:
    """Console CPU while 4 MJPEG streams are watched, minus idle, per camera."""
    frames = _frames()
    rk, rc = RedisKeys(cfg.redis.key_prefix), redis_client(cfg.redis)
    stop = threading.Event()

    def worker() -> None:  # what the ingest workers write: 2 frames/s per camera
        seq = 0
        while not stop.is_set():
            seq += 1
            pipe = rc.pipeline(transaction=False)
            for cam in CAMERAS:
                jpeg = frames[cam][seq % len(frames[cam])]
                dets = [{"label": "person", "confidence": 0.8, "box": [0.2, 0.2, 0.4, 0.8]}]
                pipe.hset(
                    rk.live(cam),
                    mapping={"jpeg": jpeg, "detections": json.dumps(dets), "seq": seq},
                )
                pipe.expire(rk.live(cam), 30)
            pipe.execute()
            stop.wait(0.5)

    threading.Thread(target=worker, daemon=True).start()
    time.sleep(1)
    c0, w0 = _cpu_s(pid), time.monotonic()
    time.sleep(seconds)
    idle = (_cpu_s(pid) - c0) / (time.monotonic() - w0)
    parts = [0] * len(CAMERAS)
    watch_stop = threading.Event()

    def watch(i: int, cam: str) -> None:
        with client.stream("GET", f"/api/cameras/{cam}/live", timeout=None) as r:
            for chunk in r.iter_bytes():
                parts[i] += chunk.count(b"--vigilframe")
                if watch_stop.is_set():
                    return

    threads = [
        threading.Thread(target=watch, args=(i, c), daemon=True) for i, c in enumerate(CAMERAS)
    ]
    for t in threads:
        t.start()
    time.sleep(1)
    c0, w0, p0 = _cpu_s(pid), time.monotonic(), sum(parts)
    time.sleep(seconds)
    busy = (_cpu_s(pid) - c0) / (time.monotonic() - w0)
    frames_sent = sum(parts) - p0
    watch_stop.set()
    stop.set()
    return {
        "cameras": len(CAMERAS),
        "parts_per_s_per_camera": round(frames_sent / seconds / len(CAMERAS), 2),
        "console_cpu_idle_pct": round(idle * 100, 1),
        "console_cpu_4_streams_pct": round(busy * 100, 1),
        "cpu_pct_per_camera": round((busy - idle) * 100 / len(CAMERAS), 1),
    }


if __name__ == "__main__":
    sys.exit(main())
