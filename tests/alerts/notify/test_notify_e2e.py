"""End to end through the real alert service: detection messages -> alert service (rules,
Redis, ``vigil.alerts``) -> notifier -> a real HTTP receiver and the local mosquitto. Every
alert event the service stored in Redis arrives, byte for byte as published, with its snapshot,
after it was stored and without waiting for later events (one walk-in at a time: its events
arrive before the next one's detections are sent); the Redis-write-to-receipt latency is
printed (``-s``)."""

from __future__ import annotations

import base64
import json
import statistics
import threading
import time
import uuid

import cv2
import numpy as np
import pytest

from alerts.service import AlertService
from alerts.store import AlertStore
from pipeline.common.kafka import make_producer
from tests.support.messages import det_message
from tests.support.notify import (
    MqttRecorder,
    Receiver,
    cfg_from,
    clear_retained,
    config_dict,
    mqtt_address,
    running,
    webhook,
)

pytestmark = pytest.mark.integration

ZONE = [[0.0, 0.0], [0.5, 0.0], [0.5, 1.0], [0.0, 1.0]]
RULE = {
    "id": "intrusion",
    "type": "zone_intrusion",
    "zone": ZONE,
    "classes": ["person"],
    "min_frames": 3,
    "clear_after_s": 1.0,
    "cooldown_s": 0,
    "severity": "high",
}


CYCLES = 3
FRAMES_PER_CYCLE = 18  # in for 8 frames (started after 3), out for 10 (ended after 1 s)
CLOCK_GRAIN_S = 0.001  # Redis TIME and time.time() of this host, rounded to the microsecond


def detections(camera: str, t0: float, cycles: int) -> list[dict]:
    """A person walks in for 8 frames, out for 10, ``cycles`` times, at 5 frames/s."""
    out = []
    epoch = int(t0 * 1000)
    for seq in range(FRAMES_PER_CYCLE * cycles):
        inside = seq % FRAMES_PER_CYCLE < 8
        box = [0.1, 0.2, 0.3, 0.8] if inside else [0.7, 0.2, 0.9, 0.8]
        ts = t0 + seq / 5
        det = {"class_id": 0, "label": "person", "confidence": 0.9, "box": box}
        track = 1 + seq // FRAMES_PER_CYCLE
        out.append(det_message(camera, epoch, seq, ts, [det | {"track_id": track}]))
    return out


def test_alert_service_to_webhook_and_mqtt(kafka_bootstrap):
    host, port = mqtt_address()
    tag = f"t{uuid.uuid4().hex[:8]}"
    with Receiver() as rx:
        sinks = [
            webhook(rx.url, include_snapshot="base64"),
            {
                "id": "home",
                "type": "mqtt",
                "url": f"mqtt://{host}:{port}",
                "prefix": f"{tag}/",
                "discovery_prefix": f"{tag}-ha",
            },
        ]
        data = config_dict(kafka_bootstrap, sinks)
        data["alerts"] = {"rules": [RULE], "service": {"group_id": f"{tag}-alerts"}}
        cfg = cfg_from(data)
        store = AlertStore(cfg.redis)
        t0 = time.time() - 60
        msgs = detections("cam-a", t0, cycles=CYCLES)
        jpeg = cv2.imencode(".jpg", np.full((90, 160, 3), 90, np.uint8))[1].tobytes()
        pipe = store.client.pipeline(transaction=False)
        for m in msgs:  # what the ingest worker stores: the frames, for snapshots
            pipe.set(store.frame_key("cam-a", m["epoch"], m["seq"]), jpeg, ex=600)
        pipe.execute()
        rec = MqttRecorder(host, port, [f"{tag}/#"])
        stop = threading.Event()
        service = AlertService(cfg)
        t = threading.Thread(target=service.run, args=(stop,), daemon=True)
        t.start()
        try:
            with running(cfg):
                producer = make_producer(cfg.kafka, "test-detections")
                # one walk-in at a time: each alert event reaches the webhook and MQTT before
                # the next walk-in's detections exist, so nothing is held back waiting for more
                # events (a batch, a full queue, the next poll's records)
                for c in range(CYCLES):
                    for m in msgs[c * FRAMES_PER_CYCLE : (c + 1) * FRAMES_PER_CYCLE]:
                        producer.send(cfg.kafka.topics.detections, key="cam-a", value=m)
                    producer.flush(timeout=30)
                    n = 2 * (c + 1)  # started and ended of each walk-in
                    assert len(rx.wait(n, 30)) == n, (c, rx.keys())
                    assert rec.wait(lambda n=n: len(rec.get(f"{tag}/alerts")) >= n, 30), c
                    assert store.stream_len() == n
                producer.close()
                stored = store.recent(count=100)[::-1]
                assert len(stored) == 2 * CYCLES
                reqs = rx.snapshot()
        finally:
            stop.set()
            t.join(30)
            seen = rec.topics()
            rec.close()
            clear_retained(host, port, seen)
    assert [r.headers["idempotency-key"] for r in reqs] == [
        f"{a['id']}:{a['status']}" for a in stored
    ]
    latencies = []
    for req, a in zip(reqs, stored, strict=True):
        body = req.json
        snap = body.pop("snapshot_jpeg_base64", None)
        assert body == a
        if a["status"] == "started":
            assert base64.b64decode(snap) == store.get_snapshot(a["id"])
        written = store.get_alert(a["id"])[f"written_{a['status']}"]
        latencies.append((req.wall - written) * 1000)
        assert req.wall >= written - CLOCK_GRAIN_S  # stored in Redis first, then published
    mqtt_lat = []
    by_key = {(a["id"], a["status"]): a for a in stored}
    for m in rec.get(f"{tag}/alerts"):
        e = json.loads(m.payload)
        assert (e["id"], e["status"]) in by_key
        written = store.get_alert(e["id"])[f"written_{e['status']}"]
        mqtt_lat.append((m.t - written) * 1000)
        assert m.t >= written - CLOCK_GRAIN_S
    print(
        f"\nRedis write -> webhook receipt: median {statistics.median(latencies):.0f} ms, "
        f"max {max(latencies):.0f} ms; -> MQTT receipt: median "
        f"{statistics.median(mqtt_lat):.0f} ms, max {max(mqtt_lat):.0f} ms "
        f"({2 * CYCLES} events, one walk-in at a time)"
    )
