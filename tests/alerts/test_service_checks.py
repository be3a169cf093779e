"""What the alert service refuses before the rule engine sees a message (dead letters, no
traceback): a key that is not the message's camera, a capture time far from the record's time
and the service's clock, JSON nested too deeply. Unit tests: records are plain objects, no
services (the end-to-end DLQ path is tests/alerts/test_service.py). Also the checks of
test_service.py that need no Kafka or Redis: a bad alerts config, the scripted messages."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from alerts.engine import RuleEngine
from alerts.service import AlertService
from pipeline.config import parse_config
from pipeline.ingest.messages import load_schema, validate_detection_message
from tests.support.messages import CAMERAS, scripted

REPO = Path(__file__).resolve().parents[2]

ZONE = [[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]]
RULE = {"id": "yard", "type": "zone_intrusion", "zone": ZONE, "classes": ["person"]}


def service(**service_cfg) -> AlertService:
    cfg = parse_config(
        {
            "alerts": {"rules": [RULE], "service": service_cfg},
            "redis": {"url": "redis://127.0.0.1:1/0"},
        },
        "test",
    )
    return AlertService(cfg)


def message(cam: str = "gate", ts: float | None = None, seq: int = 1) -> dict:
    return {
        "schema_version": 1,
        "camera_id": cam,
        "seq": seq,
        "epoch": 1,
        "capture_ts": time.time() if ts is None else ts,
        "frame": {"width": 640, "height": 480},
        "model": {"name": "t", "version": "1"},
        "detections": [
            {"class_id": 0, "label": "person", "confidence": 0.9, "box": [0.4, 0.4, 0.5, 0.6]}
        ],
    }


def record(value: bytes | None, key: bytes | None = b"gate", timestamp_ms: int | None = None):
    ts = int(time.time() * 1000) if timestamp_ms is None else timestamp_ms
    return SimpleNamespace(
        topic="vigil.detections", partition=0, offset=7, key=key, value=value, timestamp=ts
    )


def process(svc: AlertService, rec) -> tuple[list, list, RuleEngine]:
    engine = RuleEngine(svc.acfg)
    alerts: list = []
    dead: list = []
    svc._process_record(engine, rec, alerts, dead)
    return alerts, dead, engine


def test_a_valid_message_raises_its_alert():
    alerts, dead, _ = process(service(), record(json.dumps(message()).encode()))
    assert dead == [] and [a.message["rule_id"] for a in alerts] == ["yard"]


def test_key_that_differs_from_camera_id_is_dead_lettered():
    svc = service()
    alerts, dead, engine = process(svc, record(json.dumps(message("gate")).encode(), key=b"lobby"))
    assert alerts == [] and engine.cameras == []  # no state for either camera
    [(topic, key, value)] = dead
    assert topic == svc.cfg.kafka.topics.detections_dlq and key == b"lobby"
    assert "does not match camera_id 'gate'" in value["error"]
    _, dead, _ = process(svc, record(json.dumps(message("gate")).encode(), key=None))
    assert "message key None" in dead[0][2]["error"]


@pytest.mark.parametrize(
    ("shift", "why"),
    [(1e300, "ahead of"), (3600.0, "ahead of"), (-3 * 24 * 3600.0, "behind")],
)
def test_capture_time_far_from_now_is_dead_lettered(shift: float, why: str):
    """Defect: capture_ts 1e300 was accepted and the camera's clock stayed there (checkpoint)."""
    svc = service()
    ts = shift if shift > 1e100 else time.time() + shift
    alerts, dead, engine = process(svc, record(json.dumps(message(ts=ts)).encode()))
    assert alerts == [] and engine.cameras == []
    assert why in dead[0][2]["error"] and "capture_ts" in dead[0][2]["error"]
    # a normal frame afterwards is processed at its own time
    alerts, dead, _ = process(svc, record(json.dumps(message()).encode()))
    assert dead == [] and len(alerts) == 1


def test_capture_time_far_from_the_record_timestamp_is_dead_lettered():
    svc = service()
    old_record = int((time.time() - 2 * 24 * 3600) * 1000)  # e.g. LogAppendTime of a backlog
    _, dead, _ = process(svc, record(json.dumps(message()).encode(), timestamp_ms=old_record))
    assert "ahead of the Kafka record's timestamp" in dead[0][2]["error"]


def test_time_window_is_configurable_and_can_be_switched_off():
    svc = service(max_future_s=None, max_age_s=None)
    alerts, dead, _ = process(svc, record(json.dumps(message(ts=1_700_000_000.0)).encode()))
    assert dead == [] and len(alerts) == 1
    svc = service(max_future_s=10)
    _, dead, _ = process(svc, record(json.dumps(message(ts=time.time() + 60)).encode()))
    assert "max_future_s: 10" in dead[0][2]["error"]


def test_deeply_nested_json_is_one_line_not_a_traceback(caplog):
    svc = service()
    with caplog.at_level(logging.WARNING):
        alerts, dead, _ = process(svc, record(b"[" * 100_000))
    assert alerts == [] and dead[0][2]["error"] == "JSON nested too deeply"
    errors = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(errors) == 1 and errors[0].exc_info is None
    assert "\n" not in errors[0].getMessage()


# -- moved from test_service.py: they need no Kafka or Redis -------------------------------


def test_bad_alerts_config_is_a_clear_error(tmp_path: Path):
    cfg_path = tmp_path / "vigil.yaml"
    cfg_path.write_text(yaml.safe_dump({"alerts": {"service": {"max_bach": 5}, "rules": []}}))
    res = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "alerts", "serve", "-c", str(cfg_path)],
        cwd=REPO,
        capture_output=True,
        timeout=30,
    )
    assert res.returncode == 2
    assert "service.max_bach: unknown key" in res.stderr.decode()
    assert "Traceback" not in res.stderr.decode()


def test_detection_schema_is_what_we_send():
    # Guard for the scripted messages of test_service.py: they follow the contract.
    assert load_schema()["$id"] == "vigil.detections/v1"
    for _, m in scripted(CAMERAS, 3, 1000.0):
        validate_detection_message(m)


def test_a_frame_that_lands_just_after_its_detection_still_gets_its_snapshot():
    """The worker's frame store writes in the background: the service looks once more, after
    ``snapshot_wait_s``, for a fresh alert whose frame was not there yet; not for old ones."""
    svc = service(snapshot_wait_s=0.05)
    calls: list[list] = []

    class Store:  # the frame is there by the second look (the first found none: `sources`)
        def snapshot_sources(self, items):
            calls.append(list(items))
            return [(b"jpeg", False) for _ in items]

    svc.store = Store()
    now = time.time()
    fresh = SimpleNamespace(
        event=SimpleNamespace(id="a", camera_id="gate", epoch=1, frame_seq=5), capture_ts=now
    )
    old = SimpleNamespace(
        event=SimpleNamespace(id="b", camera_id="gate", epoch=1, frame_seq=1),
        capture_ts=now - 600,
    )
    sources = [(None, False), (None, False)]
    svc._await_late_frames([fresh, old], sources)
    assert sources == [(b"jpeg", False), (None, False)]
    assert calls == [[("a", "gate", 1, 5)]]  # only the fresh one is looked up again
    svc.store, calls[:] = Store(), []
    off = service(snapshot_wait_s=0)
    off.store = svc.store
    sources = [(None, False)]
    off._await_late_frames([fresh], sources)
    assert sources == [(None, False)] and calls == []
