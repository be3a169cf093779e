"""A forged detection message with a future reader epoch (issue 22, finding 5). The alert service
takes the reader that started later as a camera's current one; one message whose epoch is 11 days
ahead used to become the current reader, and every real frame after it was refused as an older
reader's: no alert for the rest of the run. Such a message (an epoch more than
``alerts.service.max_clock_skew_s`` ahead of the service's clock or of its own capture time) is
dead-lettered with the reason; the real reader keeps the camera. No ACLs needed."""

from __future__ import annotations

import json
import time

import pytest

from alerts.store import AlertStore
from pipeline.common.kafka import ensure_topics
from pipeline.config import parse_config
from tests.support.alert_service import Running, base_dict
from tests.support.kafka import produce, read_topic
from tests.support.messages import IN_BOX, OUT_BOX, det_message
from tests.support.redis import cleanup, stream_events
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration

RULE = {
    "id": "intrusion",
    "type": "zone_intrusion",
    "zone": [[0.0, 0.0], [0.5, 0.0], [0.5, 1.0], [0.0, 1.0]],
    "classes": ["person"],
    "min_frames": 3,
    "clear_after_s": 1.0,
    "cooldown_s": 0,
}


def person(box: list[float]) -> list[dict]:
    return [{"class_id": 0, "label": "person", "confidence": 0.9, "box": box}]


def test_a_future_epoch_is_dead_lettered_and_the_real_reader_still_alerts(
    kafka_bootstrap,
) -> None:
    cfg = parse_config(base_dict(kafka_bootstrap, rules=[RULE], live_rules=False))
    ensure_topics(cfg.kafka)
    store = AlertStore(cfg.redis)
    now = time.time()
    real = int((now - 30) * 1000)  # the real worker's reader started 30 s ago
    t0 = now - 20
    before = [
        ("door", det_message("door", real, s, t0 + s * 0.2, person(OUT_BOX))) for s in range(5)
    ]
    # the attack: one message, its epoch 11 days ahead (capture time: now, like a real frame)
    forged = det_message("door", int((now + 11 * 86400) * 1000), 0, now, person(OUT_BOX))
    # ahead of its own capture time only: capture_ts an hour ago, the epoch now
    stale = det_message("door", int(now * 1000), 1, now - 3600, person(OUT_BOX))
    after = [
        ("door", det_message("door", real, s, t0 + s * 0.2, person(IN_BOX))) for s in range(5, 15)
    ]
    produce(cfg, [*before, ("door", forged), ("door", stale), *after])
    service = Running(cfg)
    try:
        # the real frames after the forged one are the camera's: a person in the zone alerts
        assert wait_for(lambda: store.stream_len() >= 1, 90), stream_events(store)
        (alert_id, status), *_ = stream_events(store)
        alert = store.get_alert(alert_id)
        assert (alert["camera_id"], alert["epoch"], status) == ("door", real, "started")
        dead = read_topic(cfg, cfg.kafka.topics.detections_dlq, 2)
        errors = [json.loads(r.value)["error"] for r in dead]
        assert len(errors) == 2, errors
        assert "ahead of the service's clock" in errors[0]
        assert "ahead of its capture_ts" in errors[1]
        assert all("alerts.service.max_clock_skew_s: 60" in e for e in errors)
    finally:
        service.close()
        cleanup(store.client, cfg.redis.key_prefix)
        store.client.close()
