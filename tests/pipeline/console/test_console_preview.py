"""The rule preview through the console (``POST /api/rules/preview``, docs/console.md "Rule
preview"): past ``console.preview_timeout_s`` it answers 504 and writes nothing (no key in
Redis, no record on any topic), even when the rule had already found an alert whose frame is in
Redis (a finished preview would store that alert's snapshot). A would-be alert whose live frame
expired shows the camera's recording at its start, drawn like a snapshot; one whose moment is not
recorded says so. Real local Kafka and Redis, the console served by uvicorn on a free port."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from kafka import TopicPartition

from alerts.config import parse_alerts_config
from alerts.engine import RuleEngine
from alerts.snapshots import render_image
from pipeline.common.kafka import make_consumer, make_producer
from pipeline.common.redis import RedisKeys
from pipeline.record.index import SegmentIndex
from pipeline.record.still import frame_at
from tests.support.console import ConsoleStack, console_stack
from tests.support.messages import IN_BOX, ZONE, det_message, frame_jpeg
from tests.support.recordings import copy_recording

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
        recordings={"dir": str(tmp_path_factory.mktemp("recordings"))},
    ) as s:
        yield s


def produce(cfg, camera: str, msgs: list[dict]) -> None:
    """Detection messages as the ingest worker writes them (keyed by camera, stamped with
    their capture time)."""
    producer = make_producer(cfg.kafka, "test", linger_ms=20)
    for m in msgs:
        producer.send(
            cfg.kafka.topics.detections,
            key=camera,
            value=m,
            timestamp_ms=int(m["capture_ts"] * 1000),
        )
    producer.flush(30)
    producer.close()


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
    produce(cfg, "lobby", msgs)
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


def test_preview_shows_the_recording_once_the_live_frame_expired(
    stack, camera_recording, monkeypatch
):
    """Two would-be alerts of the recorded camera, their live frames long gone: the first
    started while the camera was recorded and shows the recording's frame at its start with its
    box drawn (pixel for pixel); the second, after the recording ended, says "not recorded"."""
    cfg, client = stack.cfg, stack.users.client
    monkeypatch.setattr(cfg.console, "preview_timeout_s", 60.0)  # this module's is tiny
    rec = camera_recording
    index = copy_recording(
        rec, Path(cfg.recordings.dir), SegmentIndex(client, RedisKeys(cfg.redis.key_prefix))
    )
    rule = dict(RULE, id="cam1-zone", cameras=[rec.camera])
    person = {"class_id": 0, "label": "person", "confidence": 0.9, "box": IN_BOX}
    t0 = rec.segments[0].start - 4
    epoch = int(t0 * 1000)
    # 5 fps; a person in the zone 2.2 s into the second segment, another after the recording
    visits = [(rec.segments[1].start + 2.23, 1), (rec.segments[-1].end + 3, 2)]
    msgs = []
    for seq in range(int((visits[1][0] + 4 - t0) * 5)):
        ts = t0 + seq / 5
        dets = [dict(person, track_id=tid) for at, tid in visits if at <= ts < at + 2]
        msgs.append(det_message(rec.camera, epoch, seq, ts, dets))
    produce(cfg, rec.camera, msgs)
    engine = RuleEngine({"rules": [rule]})
    started = [ev for m in msgs for ev in engine.process(m) if ev.status == "started"]
    assert [ev.track_id for ev in started] == [1, 2]

    op = stack.login("operator")
    r = op.post(
        "/api/rules/preview", json={"rule": rule, "start": t0, "end": msgs[-1]["capture_ts"] + 1}
    )
    assert r.status_code == 200, r.text
    alerts = r.json()["alerts"]
    assert [a["id"] for a in alerts] == [ev.id for ev in started]
    recorded, later = alerts
    assert (recorded["snapshot_source"], recorded["snapshot_note"]) == ("recording", None)
    assert (later["snapshot_url"], later["snapshot_note"]) == (None, "not recorded")
    got = op.get(recorded["snapshot_url"])
    assert got.status_code == 200 and got.headers["content-type"] == "image/jpeg"
    shown = cv2.imdecode(np.frombuffer(got.content, np.uint8), cv2.IMREAD_COLOR)
    # what the alert's snapshot would be on the recording's frame at the alert's start
    quality = parse_alerts_config(cfg.alerts).service.snapshot_quality
    frame = frame_at(index, Path(cfg.recordings.dir), rec.camera, started[0].started_at)
    want = render_image(frame, started[0].to_dict(), quality)
    want = cv2.imdecode(np.frombuffer(want, np.uint8), cv2.IMREAD_COLOR)
    assert shown.shape == want.shape and np.array_equal(shown, want)
