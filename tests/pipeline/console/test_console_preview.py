"""The rule preview through the console (``POST /api/rules/preview``, docs/console.md "Rule
preview"): past ``console.preview_timeout_s`` it answers 504 and writes nothing (no key in
Redis, no record on any topic), even when the rule had already found an alert whose frame is in
Redis (a finished preview would store that alert's snapshot). Real local Kafka and Redis, the
console served by uvicorn on a free port."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from kafka import TopicPartition

from alerts.engine import RuleEngine
from pipeline.common.kafka import make_consumer, make_producer
from pipeline.common.redis import RedisKeys
from tests.support.console import ConsoleStack, console_stack
from tests.support.messages import IN_BOX, ZONE, det_message, frame_jpeg

pytestmark = pytest.mark.integration

PREVIEW_TIMEOUT_S = 1.0
RULE = {"id": "lobby-zone", "type": "zone_intrusion", "zone": ZONE, "cameras": ["lobby"]}


@pytest.fixture(scope="module")
def stack(kafka_bootstrap, tmp_path_factory) -> Iterator[ConsoleStack]:
    """A console on the test's own topics and Redis prefix with a tiny
    ``console.preview_timeout_s``."""
    with console_stack(
        kafka_bootstrap,
        tmp_path_factory.mktemp("console"),
        console={"preview_timeout_s": PREVIEW_TIMEOUT_S},
        roles=("operator",),
    ) as s:
        yield s


def end_offsets(cfg) -> dict[tuple[str, int], int]:
    """The end offset of every partition of every topic of ``cfg``."""
    c = make_consumer(cfg.kafka, "test-end", group_id=None, enable_auto_commit=False)
    try:
        tps = [
            TopicPartition(topic, p)
            for topic in cfg.kafka.topics.model_dump().values()
            for p in c.partitions_for_topic(topic) or ()
        ]
        return {(tp.topic, tp.partition): off for tp, off in c.end_offsets(tps).items()}
    finally:
        c.close()


def test_preview_past_its_timeout_answers_504_and_writes_nothing(stack, monkeypatch):
    cfg, client = stack.cfg, stack.users.client
    keys = RedisKeys(cfg.redis.key_prefix)
    t0 = time.time() - 600
    epoch = int(t0 * 1000)
    person = {"class_id": 0, "label": "person", "confidence": 0.9, "box": IN_BOX, "track_id": 1}
    # 2 minutes at 5 fps, a person in the zone all along: more records than one deadline check
    msgs = [det_message("lobby", epoch, seq, t0 + seq / 5, [person]) for seq in range(600)]
    producer = make_producer(cfg.kafka, "test", linger_ms=20)
    for m in msgs:
        producer.send(
            cfg.kafka.topics.detections,
            key="lobby",
            value=m,
            timestamp_ms=int(m["capture_ts"] * 1000),
        )
    producer.flush(30)
    producer.close()
    # the frame of the alert the rule raises is still in Redis: a finished preview would keep
    # its snapshot under console:preview:...
    engine = RuleEngine({"rules": [RULE]})
    first = next(ev for m in msgs for ev in engine.process(m) if ev.status == "started")
    client.set(keys.frame("lobby", first.epoch, first.frame_seq), frame_jpeg(), ex=300)

    op = stack.login("operator")
    redis_before = set(client.scan_iter(match=f"{cfg.redis.key_prefix}*", count=1000))
    kafka_before = end_offsets(cfg)

    # a rule that gets slow once it has raised its alert: it stalls past the preview's timeout
    found, real = [], RuleEngine.process

    def slow_after_the_alert(self, message):
        if found and len(found) == 1:
            found.append("stalled")
            time.sleep(2 * PREVIEW_TIMEOUT_S)
        events = real(self, message)
        if not found and any(e.status == "started" for e in events):
            found.append(events[0].id)
        return events

    monkeypatch.setattr(RuleEngine, "process", slow_after_the_alert)
    r = op.post("/api/rules/preview", json={"rule": RULE, "since_s": 900})
    monkeypatch.undo()

    assert r.status_code == 504, r.text
    assert f"did not finish within {PREVIEW_TIMEOUT_S:g} s" in r.json()["detail"]
    assert found == [first.id, "stalled"]  # the rule had found the alert before time was up
    # nothing written: the same keys in Redis (no preview snapshot, no alert), no new records
    assert set(client.scan_iter(match=f"{cfg.redis.key_prefix}*", count=1000)) == redis_before
    assert end_offsets(cfg) == kafka_before
