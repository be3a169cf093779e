"""`vigil run` ends cleanly on every exit path: time limit, SIGTERM, Ctrl-C (SIGINT).

Defect (issue 12, 10): after "ingest worker ... stopped" the process printed `terminate called
without an active exception` and died with SIGABRT: camera reader threads were still inside
FFmpeg when the interpreter exited. A supervisor must see status 0 and no native abort.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.support.config import make_config_dict
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
WHOLE_FRAME = [[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]]


def write_config(tmp_path: Path, bootstrap: str, url: str) -> Path:
    d = make_config_dict(bootstrap)
    tag = d["redis"]["key_prefix"].rstrip(":")
    d["cameras"] = [{"id": "room", "url": url, "fps": 3}]
    d["alerts"] = {
        "rules": [{"id": "anyone", "type": "zone_intrusion", "zone": WHOLE_FRAME}],
        "service": {"group_id": f"{tag}-alerts"},
    }
    path = tmp_path / "vigil.yaml"
    path.write_text(yaml.safe_dump(d))
    return path


@pytest.mark.parametrize("how", ["max-seconds", "SIGTERM", "SIGINT"])
def test_vigil_run_exits_with_status_0(how, kafka_bootstrap, camera_sim, tmp_path):
    sim = camera_sim("classroom.mp4")
    cfg = write_config(tmp_path, kafka_bootstrap, sim.urls["classroom"])
    log = tmp_path / "run.log"
    argv = [sys.executable, "-m", "pipeline.cli", "run", "-c", str(cfg)]
    if how == "max-seconds":
        argv += ["--max-seconds", "5"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
    try:
        if how != "max-seconds":
            # stop it while cameras stream and messages flow, as a supervisor would
            assert wait_for(lambda: b"connected" in log.read_bytes(), 90), log.read_text()[-2000:]
            time.sleep(2)
            proc.send_signal(getattr(signal, how))
        code = proc.wait(120)
    finally:
        if proc.poll() is None:
            proc.kill()
    text = log.read_text(errors="replace")
    assert code == 0, f"exit status {code}\n{text[-3000:]}"
    assert "terminate called" not in text and "Traceback" not in text, text[-3000:]
    assert "ingest worker" in text and "stopped" in text
