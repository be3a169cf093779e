"""The whole chain on real footage, no fakes: RTSP camera-sim -> OpenCV -> YOLO + ByteTrack ->
Kafka -> alert service -> Redis + the alerts topic. Intrusion and loitering on the office clip,
crowding on the classroom clip, each with a snapshot that decodes as a JPEG."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import cv2
import jsonschema
import numpy as np
import pytest

import alerts
from alerts.config import parse_alerts_config
from alerts.service import AlertService
from alerts.store import AlertStore
from pipeline.app import build_worker
from pipeline.cameras.registry import put_cameras
from pipeline.cameras.spec import CameraSpec
from pipeline.common.kafka import ensure_topics
from pipeline.config import parse_config
from tests.support.config import make_config_dict

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TABLE_ZONE = [[0.30, 0.55], [0.90, 0.55], [0.90, 1.0], [0.30, 1.0]]
RULES = [
    {
        "id": "table-intrusion",
        "type": "zone_intrusion",
        "cameras": ["office"],
        "zone": TABLE_ZONE,
        "classes": ["person"],
        "min_confidence": 0.4,
        "min_frames": 3,
        "severity": "high",
    },
    {
        "id": "table-loitering",
        "type": "loitering",
        "cameras": ["office"],
        "zone": TABLE_ZONE,
        "classes": ["person"],
        "dwell_s": 4,
    },
    {
        "id": "classroom-crowding",
        "type": "crowding",
        "cameras": ["classroom"],
        "classes": ["person"],
        "min_count": 4,
        "min_seconds": 1,
    },
]


def test_footage_to_alerts_in_redis_and_kafka(kafka_bootstrap, camera_sim, detector, topic_reader):
    data = make_config_dict(kafka_bootstrap)
    data["alerts"] = {"rules": RULES}
    cfg = parse_config(data, "test")
    ensure_topics(cfg.kafka)
    sim = camera_sim("one-by-one-person-detection.mp4", "classroom.mp4")
    put_cameras(
        cfg.kafka,
        [
            CameraSpec(id="office", url=sim.urls["one-by-one-person-detection"], fps=5),
            CameraSpec(id="classroom", url=sim.urls["classroom"], fps=4),
        ],
    )
    store = AlertStore(cfg.redis)
    stop = threading.Event()
    worker = build_worker(cfg, detector=detector, worker_id="w-e2e").start()
    service = AlertService(cfg, parse_alerts_config(cfg.alerts))
    threads = [
        threading.Thread(target=worker.run, args=(stop,), daemon=True),
        threading.Thread(target=service.run, args=(stop,), daemon=True),
    ]
    for t in threads:
        t.start()
    wanted = {
        ("office", "table-intrusion"),
        ("office", "table-loitering"),
        ("classroom", "classroom-crowding"),
    }
    try:
        deadline = time.monotonic() + 120
        seen: set[tuple[str, str]] = set()
        while time.monotonic() < deadline and not wanted <= seen:
            time.sleep(1)
            seen = {
                (a["camera_id"], a["rule_id"])
                for a in store.recent(count=200)
                if a["status"] == "started"
            }
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
        worker.close()
    assert wanted <= seen, f"missing alerts: {wanted - seen}"

    started = [a for a in store.recent(count=200) if a["status"] == "started"]
    schema_reader = topic_reader(cfg, cfg.kafka.topics.alerts)
    kafka_alerts = {
        (r["value"]["id"], r["value"]["status"])
        for r in schema_reader.until(
            lambda rs: (
                {(r["value"]["id"], "started") for r in rs}
                >= {(a["id"], "started") for a in started}
            ),
            30,
        )
    }
    for alert in started:
        assert (alert["id"], "started") in kafka_alerts, (
            f"alert {alert['id']} is in Redis but not on Kafka"
        )
        assert alert["label"] == "person"
        full = store.get_alert(alert["id"])
        assert full["camera_id"] == alert["camera_id"] and full["rule_id"] == alert["rule_id"]
        # Redis' write time minus the capture time of the frame that started the alert (its
        # updated_at): the real latency, whatever it was on this machine
        latency = float(full["latency_ms"])
        assert latency == pytest.approx(
            (full["written_started"] - alert["updated_at"]) * 1000, abs=1
        )
        assert latency >= 0, latency
        jpeg = store.get_snapshot(alert["id"])
        assert jpeg, f"no snapshot for {alert['rule_id']}"
        image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
        assert image is not None and image.shape[0] > 100
    schema = json.loads((Path(alerts.__file__).parent / "schemas" / "alert.v1.json").read_text())
    for rec in schema_reader.records:
        jsonschema.validate(rec["value"], schema)
    crowd = next(a for a in started if a["rule_id"] == "classroom-crowding")
    assert crowd["count"] >= 4
    by_stream = store.recent("office", count=200)
    assert {a["rule_id"] for a in by_stream} <= {"table-intrusion", "table-loitering"}
