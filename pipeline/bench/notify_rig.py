"""The rig of the notifier bench (``pipeline.bench.notify``): a webhook receiver in its own
process, an MQTT counter, bench configs, ``vigil`` subprocesses and synthetic alert events.

The receiver runs as ``python3 -m pipeline.bench.notify_rig receiver PORT_FILE``.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml

from pipeline.common.assets import REPO_ROOT as REPO
from pipeline.config import VigilConfig

SECRET = "bench-secret-0123456789abcdef"
ZONE = [[0.0, 0.0], [0.5, 0.0], [0.5, 1.0], [0.0, 1.0]]


# -- the webhook receiver (its own process) ------------------------------------------------------


def receiver_main(port_file: str) -> None:
    """HTTP/1.1 keep-alive receiver: 200 to every POST, records (wall time, Idempotency-Key);
    ``GET /stats`` returns them."""
    lock = threading.Lock()
    got: list[tuple[float, str]] = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:  # noqa: N802
            t = time.time()
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            key = self.headers.get("Idempotency-Key", "")
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()
            with lock:
                got.append((t, key))

        def do_GET(self) -> None:  # noqa: N802
            with lock:
                body = json.dumps(got).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_a: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    Path(port_file).write_text(str(server.server_address[1]))
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    server.serve_forever()


class Receiver:
    def __init__(self, tmp: Path) -> None:
        port_file = tmp / f"rx-{uuid.uuid4().hex[:6]}.port"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pipeline.bench.notify_rig", "receiver", str(port_file)],
            cwd=REPO,
        )
        deadline = time.monotonic() + 15
        while not port_file.exists() or not port_file.read_text():
            if time.monotonic() > deadline:
                raise RuntimeError("receiver did not start")
            time.sleep(0.05)
        self.url = f"http://127.0.0.1:{port_file.read_text()}/hook"

    def records(self) -> list[tuple[float, str]]:
        with urllib.request.urlopen(self.url.replace("/hook", "/stats"), timeout=10) as r:
            return [tuple(x) for x in json.loads(r.read())]

    def count(self) -> int:
        return len(self.records())

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


class MqttCounter:
    """Records (wall time, payload) of every message on ``topic``."""

    def __init__(self, host: str, port: int, topic: str) -> None:
        import paho.mqtt.client as mqtt  # noqa: PLC0415 (only this bench's MQTT parts)
        from paho.mqtt.enums import CallbackAPIVersion  # noqa: PLC0415

        self.got: list[tuple[float, bytes]] = []
        self._ready = threading.Event()
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-{os.getpid()}")
        c.on_connect = lambda cl, *_: cl.subscribe(topic, qos=1)
        c.on_subscribe = lambda *_: self._ready.set()
        c.on_message = lambda _c, _u, m: self.got.append((time.time(), m.payload))
        c.connect(host, port, keepalive=30)
        c.loop_start()
        if not self._ready.wait(10):
            raise RuntimeError(f"cannot subscribe to {topic} on {host}:{port}")
        self.client = c

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


# -- configs -------------------------------------------------------------------------------------


def bench_config(base: VigilConfig, tag: str, notify: dict, alerts: dict | None = None) -> dict:
    """``base`` with topics, Redis prefix and groups of this run only (secrets kept)."""
    data = base.model_dump(mode="json")
    data["redis"]["url"] = base.redis.url.get_secret_value()
    if base.kafka.password is not None:
        data["kafka"]["password"] = base.kafka.password.get_secret_value()
    data["kafka"]["topics"] = {k: f"nb{tag}.{v}" for k, v in data["kafka"]["topics"].items()}
    data["redis"]["key_prefix"] = f"nb{tag}:"
    data["alerts"] = alerts or {}
    data["notify"] = {
        "group_id": f"nb{tag}-notify",
        "auto_offset_reset": "earliest",
        "session_timeout_ms": 6000,
        **notify,
    }
    for key in ("console", "cameras"):
        data.pop(key, None)
    return data


def write_config(tmp: Path, data: dict) -> Path:
    path = tmp / f"{data['redis']['key_prefix'].rstrip(':')}-{uuid.uuid4().hex[:4]}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def vigil(*argv: str, log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", *argv],
        cwd=REPO,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cleanup(cfg: VigilConfig) -> None:
    from alerts.store import AlertStore  # noqa: PLC0415 (only for the cleanup)

    store = AlertStore(cfg.redis)
    for key in store.client.scan_iter(f"{cfg.redis.key_prefix}*", count=1000):
        store.client.delete(key)


def alert_events(n: int, cameras: int) -> list[dict]:
    """``n`` alert.v1 events: started/ended pairs, round robin over ``cameras``."""
    out = []
    t0 = 1_795_752_000.0
    for i in range(n // 2):
        cam, started = f"cam{i % cameras}", t0 + i * 0.1
        aid = hashlib.sha1(f"{cam}|r|{i}|{started}".encode()).hexdigest()[:20]
        base = {
            "schema_version": 1,
            "id": aid,
            "camera_id": cam,
            "rule_id": f"r{i % 10}",
            "rule_type": "zone_intrusion",
            "severity": "high",
            "label": "person",
            "track_id": i + 1,
            "started_at": started,
            "frame_seq": i,
            "epoch": 1_795_751_000_000,
            "box": [0.1, 0.2, 0.3, 0.8],
            "confidence": 0.9,
            "count": None,
            "zone": ZONE,
        }
        out.append(
            {
                **base,
                "status": "started",
                "ended_at": None,
                "updated_at": started,
                "details": {"frames": 3},
            }
        )
        out.append(
            {
                **base,
                "status": "ended",
                "ended_at": started + 2,
                "updated_at": started + 2,
                "details": {"reason": "cleared"},
            }
        )
    return out


def mqtt_url() -> tuple[str, int]:
    host, port = os.environ.get("VIGIL_MQTT", "127.0.0.1:1883").rsplit(":", 1)
    return host, int(port)


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "receiver":
        sys.exit("usage: python3 -m pipeline.bench.notify_rig receiver PORT_FILE")
    receiver_main(sys.argv[2])
