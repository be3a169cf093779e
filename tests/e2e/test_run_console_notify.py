"""`vigil run` starts the console when ``console.enabled`` is true (docs/console.md, "Config") and
the notifier when ``notify.sinks`` is set (docs/notify.md): one `vigil run` process on a
camera-sim camera serves the console on 127.0.0.1 and delivers the alert the footage raises to
a local webhook; with ``console.enabled: false`` nothing listens on ``console.port``."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import types
from pathlib import Path

import httpx
import pytest
import yaml

from pipeline.cli import main
from pipeline.config import parse_config
from pipeline.console.auth import UserStore
from tests.support.config import make_config_dict
from tests.support.net import free_port, port_open
from tests.support.notify import SECRET, Receiver, config_dict, signature_ok, webhook
from tests.support.redis import cleanup
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
PASSWORD = "correct horse battery"
WHOLE_FRAME = [[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]]


def test_vigil_run_serves_the_console_and_delivers_alerts_to_a_webhook(
    kafka_bootstrap, camera_sim, tmp_path
):
    sim = camera_sim("classroom.mp4")
    port = free_port()
    with Receiver() as rx:
        data = config_dict(kafka_bootstrap, [webhook(rx.url)])
        tag = data["redis"]["key_prefix"].rstrip(":")
        data["cameras"] = [{"id": "room", "url": sim.urls["classroom"], "fps": 3}]
        data["alerts"] = {
            "rules": [{"id": "anyone", "type": "zone_intrusion", "zone": WHOLE_FRAME}],
            "service": {"group_id": f"{tag}-alerts"},
        }
        data["console"] = {"enabled": True, "port": port}
        path = tmp_path / "vigil.yaml"
        path.write_text(yaml.safe_dump(data))
        users = UserStore(parse_config(data, "test").redis)
        users.add("viewer", PASSWORD, "viewer")
        log = tmp_path / "run.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "pipeline.cli", "run", "-c", str(path)],
                cwd=REPO,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        base = f"http://127.0.0.1:{port}"
        try:
            # the console, on 127.0.0.1 at console.port
            up = wait_for(lambda: proc.poll() is None and port_open("127.0.0.1", port), 90)
            assert up, log.read_text(errors="replace")[-3000:]
            assert httpx.get(f"{base}/healthz", timeout=10).json() == {"status": "ok"}
            page = httpx.get(f"{base}/", timeout=10)
            assert page.status_code == 200 and "<title>Vigil console</title>" in page.text

            # the notifier: the footage's alert reaches the webhook, signed
            got = wait_for(
                lambda: [r for r in rx.snapshot() if r.json.get("status") == "started"], 120
            )
            assert got, f"no alert delivered\n{log.read_text(errors='replace')[-3000:]}"
            alert = got[0].json
            assert (alert["camera_id"], alert["rule_id"]) == ("room", "anyone")
            assert signature_ok(got[0])

            # the console serves the same pipeline's alerts
            c = httpx.Client(base_url=base, timeout=30)
            assert c.post("/api/login", json={"username": "viewer", "password": PASSWORD})
            one = c.get(f"/api/alerts/{alert['id']}")
            assert one.status_code == 200 and one.json()["camera_id"] == "room"

            proc.send_signal(signal.SIGTERM)
            code = proc.wait(120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
            cleanup(users.client, data["redis"]["key_prefix"])
    text = log.read_text(errors="replace")
    assert code == 0, f"exit status {code}\n{text[-3000:]}"
    assert "Traceback" not in text, text[-3000:]
    assert SECRET not in text  # the webhook's secret is never logged
    assert not port_open("127.0.0.1", port)  # the console stopped with it


@pytest.mark.parametrize("enabled", [True, False])
def test_vigil_run_serves_the_console_only_when_enabled(
    enabled, kafka_bootstrap, tmp_path, monkeypatch
):
    """What `vigil run` serves beside its ingest worker (replaced here: no detector to load) while
    that worker runs."""
    port = free_port()
    data = make_config_dict(kafka_bootstrap, console={"enabled": enabled, "port": port})
    path = tmp_path / "vigil.yaml"
    path.write_text(yaml.safe_dump(data))
    seen = {}

    def run_ingest(cfg, *, extra_services=None, **_kw) -> int:
        seen["serving"] = port_open("127.0.0.1", port)
        stop = threading.Event()
        stop.set()
        for service in extra_services or []:
            service(stop)  # the run is over: each stops
        return 0

    monkeypatch.setitem(sys.modules, "pipeline.app", types.SimpleNamespace(run_ingest=run_ingest))
    assert main(["run", "-c", str(path)]) == 0
    assert seen["serving"] is enabled
    assert not port_open("127.0.0.1", port)


@pytest.mark.parametrize(
    ("in_run", "flag", "expected"),
    [(True, [], True), (False, [], False), (True, ["--no-record"], False)],
)
def test_vigil_run_runs_a_recorder_unless_turned_off(
    in_run, flag, expected, kafka_bootstrap, tmp_path, monkeypatch
):
    """`vigil run` records beside its ingest worker by default (the recorder joins its group and
    records the cameras with record.enabled); `recordings.in_run: false` or `--no-record` not."""
    import pipeline.cli.run as run

    data = make_config_dict(
        kafka_bootstrap, console={"enabled": False}, recordings={"in_run": in_run}
    )
    path = tmp_path / "vigil.yaml"
    path.write_text(yaml.safe_dump(data))
    started = []

    def recorder_runner(cfg):
        return lambda stop: started.append(cfg.recordings.group_id)

    def run_ingest(cfg, *, extra_services=None, **_kw) -> int:
        stop = threading.Event()
        stop.set()
        for service in extra_services or []:
            service(stop)
        return 0

    monkeypatch.setattr(run, "recorder_runner", recorder_runner)
    monkeypatch.setitem(sys.modules, "pipeline.app", types.SimpleNamespace(run_ingest=run_ingest))
    assert main(["run", "-c", str(path), *flag]) == 0
    assert started == ([data["recordings"]["group_id"]] if expected else [])
