"""Hostile records on Vigil's topics (issue 22, finding 3): anyone who can write to a topic of a
single-broker setup (no ACLs) can send a record built to hurt its readers. Every reader gets the
same set: JSON nested 100,000 deep, a 10 MB value (gzipped, it passes the broker's 1 MiB bound
on a batch), invalid UTF-8, a list where an object belongs, a string where a number belongs, a
record without a key (the broker refuses that one on a compacted topic, which the test checks)
and a tombstone for a key that never existed. Each reader must still be alive afterwards, keep
what it had, and apply a good record sent after them.

Against the real local Kafka; every test has its own topics and groups."""

from __future__ import annotations

import json
import threading
import time

import pytest
from kafka.errors import KafkaError
from prometheus_client import REGISTRY

from alerts.rules_topic import RULES, RulesWatcher, read_rules
from alerts.store import AlertStore
from alerts.subscribe import subscribe
from pipeline.cameras.registry import CAMERAS, RegistryWatcher, read_registry
from pipeline.common.kafka import ensure_topics, make_producer
from pipeline.config import VigilConfig, parse_config
from pipeline.console.topic_view import TopicView
from tests.support.alert_service import base_dict
from tests.support.config import make_config
from tests.support.kafka import read_topic
from tests.support.messages import IN_BOX, ZONE, det_message
from tests.support.redis import cleanup, stream_events
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration

DEEP = b"[" * 100_000
TEN_MB = b'{"id": "' + b"x" * (10 * 1024 * 1024) + b'"}'
BAD_UTF8 = b'{"id": "\xff\xfe\xfa", "camera_id": "\xc3\x28"}'
A_LIST = b'[{"id": "cam-a"}, 1, 2]'

RULE = {
    "id": "intrusion",
    "type": "zone_intrusion",
    "zone": ZONE,
    "classes": ["person"],
    "min_frames": 2,
    "clear_after_s": 1.0,
    "cooldown_s": 0,
}


def camera(cid: str) -> bytes:
    return json.dumps({"id": cid, "url": f"rtsp://127.0.0.1:8554/{cid}"}).encode()


def rule(rid: str) -> bytes:
    return json.dumps({**RULE, "id": rid}).encode()


def hostile(good_key: bytes, wrong_types: bytes) -> list[tuple[bytes, bytes | None]]:
    """The set, keyed so that some hit a key that already has a good value (it must stay)."""
    return [
        (good_key, DEEP),
        (b"h-deep", DEEP),
        (good_key, TEN_MB),
        (b"h-utf8", BAD_UTF8),
        (good_key, A_LIST),
        (b"h-types", wrong_types),
        (b"h-ghost", None),  # a tombstone for a key that never had a value
    ]


def send(cfg: VigilConfig, topic: str, items: list[tuple[bytes | None, bytes | None]]) -> None:
    """Produce ``items`` in order, gzipped, allowing values up to 16 MB (what an attacker's own
    client would do)."""
    producer = make_producer(
        cfg.kafka, "test-hostile", compression_type="gzip", max_request_size=16 * 1024 * 1024
    )
    try:
        for key, value in items:
            producer.send(topic, key=key, value=value).get(timeout=30)
    finally:
        producer.close(timeout=10)


def send_without_key(cfg: VigilConfig, topic: str, value: bytes, compacted: bool) -> None:
    """A record without a key, from its own (non-idempotent) producer: on a compacted topic the
    broker refuses it, which is checked here (the readers then never see one)."""
    producer = make_producer(
        cfg.kafka, "test-hostile-nokey", enable_idempotence=False, acks=1, retries=0
    )
    try:
        future = producer.send(topic, key=None, value=value)
        if compacted:
            with pytest.raises(KafkaError):
                future.get(timeout=30)
        else:
            future.get(timeout=30)
    finally:
        producer.close(timeout=10)


def skipped(reader: str, reason: str) -> float:
    return (
        REGISTRY.get_sample_value(
            "vigil_records_skipped_total", {"reader": reader, "reason": reason}
        )
        or 0.0
    )


@pytest.fixture
def cfg(kafka_bootstrap) -> VigilConfig:
    c = make_config(kafka_bootstrap)
    ensure_topics(c.kafka)
    return c


# -- the camera registry (ingest workers, `vigil cameras`) -------------------------------------------


def test_camera_registry_reader_survives_hostile_records(cfg: VigilConfig) -> None:
    topic = cfg.kafka.topics.cameras
    wrong = b'{"id": "h-types", "url": "rtsp://127.0.0.1/x", "fps": "ten"}'
    before = skipped("cameras", "too_deep")
    send(cfg, topic, [(b"cam-a", camera("cam-a")), *hostile(b"cam-a", wrong)])
    send_without_key(cfg, topic, camera("cam-nokey"), compacted=True)
    send(cfg, topic, [(b"cam-b", camera("cam-b"))])

    owned: list[set[str]] = []
    watcher = RegistryWatcher(
        cfg.kafka,
        f"{cfg.ingest.group_id}-hostile",
        lambda cams: owned.append(set(cams)),
        session_timeout_ms=6000,
    ).start()
    try:
        # the initial read went through the hostile records: the good ones are owned
        assert wait_for(lambda: owned and owned[-1] == {"cam-a", "cam-b"}, 60), owned
        send(cfg, topic, [*hostile(b"cam-b", wrong), (b"cam-c", camera("cam-c"))])
        assert wait_for(lambda: owned[-1] == {"cam-a", "cam-b", "cam-c"}, 30), owned
        assert watcher._thread.is_alive() and watcher.error is None
    finally:
        watcher.stop()
    assert set(read_registry(cfg.kafka)) == {"cam-a", "cam-b", "cam-c"}
    assert skipped("cameras", "too_deep") > before
    assert skipped("cameras", "too_large") > 0 and skipped("cameras", "not_utf8") > 0


# -- the console's topic views -------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["cameras", "rules"])
def test_console_topic_views_survive_hostile_records(cfg: VigilConfig, which: str) -> None:
    if which == "cameras":
        topic, table, good = cfg.kafka.topics.cameras, CAMERAS, camera
        wrong = b'{"id": "h-types", "url": "rtsp://127.0.0.1/x", "fps": "ten"}'
    else:
        topic, table, good = cfg.kafka.topics.rules, RULES, rule
        wrong = json.dumps({**RULE, "id": "h-types", "min_frames": "three"}).encode()
    send(cfg, topic, [(b"a", good("a")), *hostile(b"a", wrong)])
    send_without_key(cfg, topic, good("nokey"), compacted=True)
    send(cfg, topic, [(b"b", good("b"))])
    view = TopicView(cfg.kafka, table, which).start()
    try:
        # a view that restarts its read on every bad record never becomes ready (edits: 503)
        assert set(view.snapshot(timeout_s=30)) == {"a", "b"}, view.error
        send(cfg, topic, [*hostile(b"b", wrong), (b"c", good("c"))])
        assert view.wait(lambda items: set(items) == {"a", "b", "c"}, 30), view.items
        assert view.error is None and view.connected()
        assert view.skipped.total >= 10
    finally:
        view.stop()


# -- the live rules: start-up read, the watcher, the alert service -------------------------------------


def test_rules_readers_survive_hostile_records(cfg: VigilConfig) -> None:
    topic = cfg.kafka.topics.rules
    wrong = json.dumps({**RULE, "id": "h-types", "min_frames": "three"}).encode()
    send(cfg, topic, [(b"r-a", rule("r-a")), *hostile(b"r-a", wrong)])
    send_without_key(cfg, topic, rule("nokey"), compacted=True)
    send(cfg, topic, [(b"r-b", rule("r-b"))])
    assert list(read_rules(cfg.kafka)) == ["r-a", "r-b"]

    calls: list[list[str]] = []
    watcher = RulesWatcher(cfg.kafka, lambda rules: calls.append(list(rules))).start()
    try:
        assert wait_for(lambda: calls and calls[-1] == ["r-a", "r-b"], 30), calls
        send(cfg, topic, [*hostile(b"r-b", wrong), (b"r-c", rule("r-c"))])
        assert wait_for(lambda: calls[-1] == ["r-a", "r-b", "r-c"], 30), calls
        assert watcher._thread.is_alive()
    finally:
        watcher.stop()


class _Service:
    def __init__(self, cfg: VigilConfig) -> None:
        from alerts.service import AlertService

        self.service = AlertService(cfg)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.service.run, args=(self.stop,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(30)


def test_alert_service_survives_hostile_rules_and_detections(kafka_bootstrap) -> None:
    """Hostile records on the rules topic before the start (the start-up read), on it while the
    service runs (the watcher) and on the detections topic: the service starts, dead-letters the
    bad detections, alerts on the good ones and still applies a rule change."""
    d = base_dict(kafka_bootstrap, rules=[])
    d["kafka"]["topics"]["rules"] = d["kafka"]["topics"]["detections"].replace(
        ".detections", ".rules"
    )
    cfg = parse_config(d)
    ensure_topics(cfg.kafka)
    store = AlertStore(cfg.redis)
    rules_topic, det_topic = cfg.kafka.topics.rules, cfg.kafka.topics.detections
    wrong_rule = json.dumps({**RULE, "id": "h-types", "min_frames": "three"}).encode()
    send(cfg, rules_topic, [(b"intrusion", rule("intrusion")), *hostile(b"intrusion", wrong_rule)])

    now = time.time()
    epoch = int(now * 1000) - 10_000
    person = [{"class_id": 0, "label": "person", "confidence": 0.9, "box": IN_BOX}]
    wrong_det = json.dumps(det_message("door", epoch, 0, now - 5, person) | {"seq": "7"}).encode()
    bad = [
        (b"door", DEEP),
        (b"door", TEN_MB),
        (b"door", BAD_UTF8),
        (b"door", A_LIST),
        (b"door", wrong_det),
        (b"door", None),
    ]
    send(cfg, det_topic, bad)
    send_without_key(cfg, det_topic, DEEP, compacted=False)
    good = [
        (b"door", json.dumps(det_message("door", epoch, s, now - 5 + s * 0.2, person)).encode())
        for s in range(4)
    ]
    send(cfg, det_topic, good)
    svc = _Service(cfg)
    try:
        assert wait_for(lambda: store.stream_len() >= 1, 90), stream_events(store)
        assert svc.thread.is_alive()
        dead = read_topic(cfg, cfg.kafka.topics.detections_dlq, len(bad) + 1)
        assert len(dead) == len(bad) + 1
        errors = [json.loads(r.value)["error"] for r in dead]
        assert "JSON nested too deeply" in errors
        assert any("larger than" in e for e in errors)
        # the watcher is still alive: hostile records while running, then a new rule
        send(cfg, rules_topic, [*hostile(b"intrusion", wrong_rule), (b"second", rule("second"))])
        assert wait_for(lambda: "second" in {r.id for r in svc.service.acfg.rules}, 30)
        assert {r.id for r in svc.service.acfg.rules} == {"intrusion", "second"}
        assert svc.thread.is_alive()
    finally:
        svc.close()
        cleanup(store.client, cfg.redis.key_prefix)
        store.client.close()


# -- alert subscribers (`vigil alerts tail`, alerts.subscribe) -------------------------------------------


def test_alert_subscriber_survives_hostile_records(cfg: VigilConfig) -> None:
    topic = cfg.kafka.topics.alerts
    wrong = json.dumps({"id": "h-types", "status": 5, "review": "no"}).encode()
    send(cfg, topic, [(key or b"cam-a", value) for key, value in hostile(b"cam-a", wrong)])
    send_without_key(cfg, topic, DEEP, compacted=False)
    good = {"id": "good", "status": "started", "camera_id": "cam-a", "rule_id": "r"}
    send(cfg, topic, [(b"cam-a", json.dumps(good).encode())])
    got = []
    for alert in subscribe(cfg, from_beginning=True, timeout_s=20):
        got.append(alert)
        if alert.get("id") == "good":
            break
    assert got[-1] == good
    assert skipped("alerts_subscriber", "too_deep") >= 2


# -- the notifier (its alerts reader; it dead-letters) ----------------------------------------------------


def test_notifier_survives_hostile_records(kafka_bootstrap) -> None:
    from tests.support.notify import Receiver, alert, make_cfg, running, webhook

    with Receiver() as rx:
        ncfg = make_cfg(kafka_bootstrap, [webhook(rx.url)])
        topic = ncfg.kafka.topics.alerts
        wrong = json.dumps({**alert(9), "severity": 5}).encode()
        items = hostile(b"cam-a", wrong)
        send(ncfg, topic, items)
        send_without_key(ncfg, topic, DEEP, compacted=False)
        good = alert(0)
        send(ncfg, topic, [(b"cam-a", json.dumps(good).encode())])
        with running(ncfg) as service:
            reqs = rx.wait(1, 60)
            assert wait_for(lambda: service.stats["malformed"] == len(items) + 1, 30)
        assert [r.json["id"] for r in reqs] == [good["id"]]
