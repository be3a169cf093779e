"""Several alert services each follow the WHOLE live rules topic (docs/rules.md, "Live rules":
"Every alert service reads the whole topic (no consumer group)"): two instances of one consumer
group split the detection partitions between them, yet a rule put once, and then deleted, is
applied by both, so the cameras of both raise (and end) its alerts. Against the real local Kafka
and Redis, with the test's own topics (the rules topic included), key prefix and group."""

from __future__ import annotations

import threading
import time

import pytest

from alerts.rules import parse_rule
from alerts.rules_topic import delete_rule, put_rule
from alerts.service import AlertService
from alerts.store import AlertStore
from pipeline.common.kafka import ensure_topics, make_producer
from pipeline.config import VigilConfig, parse_config
from tests.support.alert_service import base_dict
from tests.support.messages import IN_BOX, ZONE, cameras, det_message, frame_jpeg
from tests.support.redis import cleanup
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration

QUIET = {"id": "loiter", "type": "loitering", "zone": ZONE, "dwell_s": 600}  # raises nothing here
DOOR = {
    "id": "door",
    "type": "zone_intrusion",
    "zone": ZONE,
    "classes": ["person"],
    "min_frames": 2,
    "clear_after_s": 1.0,
    "cooldown_s": 0,
}


class Instance:
    """An alert service of the group, by name, in a thread of this process."""

    def __init__(self, cfg: VigilConfig, name: str) -> None:
        self.service = AlertService(cfg, name=name)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.service.run, args=(self.stop,), daemon=True)
        self.thread.start()

    def partitions(self) -> set[int]:
        consumer = self.service.consumer
        return {tp.partition for tp in consumer.assignment()} if consumer is not None else set()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(30)
        assert not self.thread.is_alive(), "alert service did not stop"


class Cameras:
    """Live cameras: a frame each every 0.1 s (capture_ts = now) with a person in the zone."""

    def __init__(self, cfg: VigilConfig, store: AlertStore, names: list[str]) -> None:
        self.cfg, self.store, self.names = cfg, store, names
        self.jpeg = frame_jpeg(90)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        producer = make_producer(self.cfg.kafka, "test-fanout")
        epoch = int(time.time() * 1000)
        seq = 0
        det = {"class_id": 0, "label": "person", "confidence": 0.9, "box": IN_BOX, "track_id": 7}
        try:
            while not self.stop.is_set():
                for cam in self.names:
                    msg = det_message(cam, epoch, seq, time.time(), [det])
                    self.store.client.set(self.store.frame_key(cam, epoch, seq), self.jpeg, ex=60)
                    producer.send(self.cfg.kafka.topics.detections, key=cam, value=msg)
                producer.flush(10)
                seq += 1
                self.stop.wait(0.1)
        finally:
            producer.close(10)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(15)


def door_events(store: AlertStore, camera: str) -> list[dict]:
    return [
        a
        for a in reversed(store.recent(count=1000))
        if a["rule_id"] == "door" and a["camera_id"] == camera
    ]


def test_every_instance_applies_a_rule_put_once(kafka_bootstrap):
    d = base_dict(kafka_bootstrap, rules=[QUIET])
    cfg = parse_config(d)
    assert cfg.kafka.detections_partitions == 2 and cfg.kafka.topics.rules != "vigil.rules"
    ensure_topics(cfg.kafka)
    store = AlertStore(cfg.redis)
    cams = cameras(2)  # one camera per detection partition
    a = b = feed = None
    try:
        a = Instance(cfg, "fanout-a")
        b = Instance(cfg, "fanout-b")
        # the group splits the two detection partitions: each instance owns one camera
        assert wait_for(lambda: a.partitions() and b.partitions(), 60), "no assignment"
        assert a.partitions() | b.partitions() == {0, 1}
        feed = Cameras(cfg, store, cams)

        put_rule(cfg.kafka, parse_rule(DOOR))  # once, on the one-partition rules topic
        for cam in cams:
            assert wait_for(lambda c=cam: door_events(store, c), 30), (
                f"{cam}: the rule put once was not applied by the instance that owns it "
                f"(a: partitions {a.partitions()}, b: {b.partitions()})"
            )
        # the instances still split the cameras: each one applied the rule itself
        assert {len(a.partitions()), len(b.partitions())} == {1}
        assert a.service.stats["alerts_written"] >= 1 and b.service.stats["alerts_written"] >= 1

        opened = {cam: door_events(store, cam)[0]["id"] for cam in cams}
        delete_rule(cfg.kafka, "door")  # and deleted once: both end their open alert
        for cam, aid in opened.items():
            assert wait_for(lambda aid=aid: store.get_alert(aid)["status"] == "ended", 30), (
                f"{cam}: the deletion was not applied"
            )
            assert store.get_alert(aid)["details"]["reason"] == "rule_changed"
    finally:
        for part in (feed, a, b):
            if part is not None:
                part.close()
        cleanup(store.client, d["redis"]["key_prefix"])
        store.client.close()
