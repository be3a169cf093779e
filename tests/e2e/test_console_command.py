"""`vigil console -c vigil.yaml` (docs/console.md, README): a process serving the console on
127.0.0.1 at ``console.port``; a supervisor's SIGTERM or a Ctrl-C (SIGINT) stops it cleanly
(exit status 0, no traceback, the port released)."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml

from pipeline.config import parse_config
from pipeline.console.auth import UserStore
from tests.support.config import make_config_dict
from tests.support.net import free_port, port_open
from tests.support.redis import cleanup
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
PASSWORD = "correct horse battery"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_vigil_console_serves_on_127_0_0_1_and_stops_on_a_signal(sig, kafka_bootstrap, tmp_path):
    port = free_port()
    data = make_config_dict(kafka_bootstrap, console={"port": port})
    path = tmp_path / "vigil.yaml"
    path.write_text(yaml.safe_dump(data))
    users = UserStore(parse_config(data, "test").redis)
    users.add("viewer", PASSWORD, "viewer")
    log = tmp_path / "console.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pipeline.cli", "console", "-c", str(path)],
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        started = wait_for(lambda: f"console: {base}/".encode() in log.read_bytes(), 60)
        assert started, log.read_text(errors="replace")[-3000:]
        health = httpx.get(f"{base}/healthz", timeout=10)
        assert health.status_code == 200 and health.json() == {"status": "ok"}
        page = httpx.get(f"{base}/", timeout=10)
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        assert "<title>Vigil console</title>" in page.text

        # it is the console, with its users in Redis
        c = httpx.Client(base_url=base, timeout=30)
        r = c.post("/api/login", json={"username": "viewer", "password": PASSWORD})
        assert r.status_code == 200 and r.json()["role"] == "viewer"
        proc.send_signal(sig)
        code = proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        cleanup(users.client, data["redis"]["key_prefix"])
    text = log.read_text(errors="replace")
    assert code == 0, f"exit status {code}\n{text[-3000:]}"
    assert "Traceback" not in text, text[-3000:]
    assert not port_open("127.0.0.1", port)
