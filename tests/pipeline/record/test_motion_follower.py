"""The recorder's motion follower (pipeline/record/motion_follower.py): a motion spell of a camera
recorded in mode events holds ``[started_at - pre_s, last_at + post_s]`` of its recordings (the
same holds as alerts: the camera's recorder records them); other cameras hold nothing; hostile
records are skipped and counted. Then the whole path through Kafka: the worker's publisher,
the follower, and the recorder that owns the camera."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from pipeline.cameras.settings import RecordConfig
from pipeline.cameras.spec import CameraSpec
from pipeline.common.kafka import ensure_topics, make_producer
from pipeline.common.motion_spells import MotionSpell
from pipeline.common.redis import RedisKeys
from pipeline.ingest.publisher import DetectionPublisher
from pipeline.record.holds import HoldStore
from pipeline.record.index import SegmentIndex
from pipeline.record.motion_follower import KEEP_S, MAX_AHEAD_S, MotionFollower
from pipeline.record.service import RecorderService
from tests.support.assets import footage_path
from tests.support.config import KAFKA, REDIS_URL, make_config
from tests.support.recordings import CLIP
from tests.support.redis import cleanup
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration

EVENTS = RecordConfig(enabled=True, mode="events", pre_s=2, post_s=3)
CONTINUOUS = RecordConfig(enabled=True, pre_s=2, post_s=3)


@pytest.fixture
def holds() -> Iterator[HoldStore]:
    client = redis.Redis.from_url(REDIS_URL)
    keys = RedisKeys(f"t{os.urandom(4).hex()}:")
    try:
        yield HoldStore(client, keys)
    finally:
        cleanup(client, keys.prefix)
        client.close()


def _follower(holds: HoldStore, now: float) -> MotionFollower:
    cfg = make_config(KAFKA)
    records = {"gate": EVENTS, "hall": CONTINUOUS}
    return MotionFollower(
        cfg.kafka, holds, records.get, group_id="unused", clock=lambda: now
    )  # handle() only: no Kafka


def test_a_spell_of_a_camera_in_mode_events_holds_its_range(holds):
    now = 1796680000.0
    f = _follower(holds, now)
    assert f.handle(json.dumps(MotionSpell("gate", now - 5, now - 1).message()), "m[0]@0")
    [hold] = holds.active("gate", now)
    assert (hold.alert_id, hold.start, hold.end) == (
        f"motion-{round((now - 5) * 1000)}",
        now - 7,
        now + 2,
    )
    assert hold.until == now + 2 + KEEP_S and not hold.open
    # its renewal moves the same hold on; the end message too
    assert f.handle(json.dumps(MotionSpell("gate", now - 5, now).message()), "m[0]@1")
    assert f.handle(json.dumps(MotionSpell("gate", now - 5, now, ended=True).message()), "@2")
    assert [(h.start, h.end) for h in holds.active("gate", now)] == [(now - 7, now + 3)]
    # a camera recorded continuously, an unknown one, an old spell: nothing
    assert not f.handle(json.dumps(MotionSpell("hall", now - 5, now).message()), "m[0]@3")
    assert not f.handle(json.dumps(MotionSpell("yard", now - 5, now).message()), "m[0]@4")
    old = now - 3 - KEEP_S - 1
    assert not f.handle(json.dumps(MotionSpell("gate", old - 5, old).message()), "m[0]@5")
    assert holds.active("hall", now) == [] and holds.active("yard", now) == []
    assert f.held == 3 and f.skipped.total == 0


def test_hostile_records_are_skipped_and_counted(holds, caplog):
    now = 1796680000.0
    f = _follower(holds, now)
    caplog.set_level(logging.ERROR, logger="pipeline.record.motion_follower")
    future = MotionSpell("gate", now, now + MAX_AHEAD_S + 60).message()  # records for an hour
    for i, raw in enumerate([b"\xff", b"[]", json.dumps({"v": 1}), json.dumps(future)]):
        assert not f.handle(raw, f"m[0]@{i}")
    assert f.skipped.total == 4 and holds.active("gate", now) == []
    assert "m[0]@3" in caplog.text and "ahead" in caplog.text


def _indexed(index: SegmentIndex, camera: str) -> list:
    return list(index.segments(camera, 0, 2e9))


def test_motion_published_by_ingest_makes_the_cameras_recorder_record_it(tmp_path: Path, holds):
    """Through Kafka, no fakes: the ingest publisher's motion message, the recorder's follower,
    its hold in Redis and the recorder of the camera (mode events) writing that range only."""
    cfg = make_config(
        KAFKA, recordings={"dir": str(tmp_path), "segment_s": 1, "session_timeout_ms": 6000}
    )
    ensure_topics(cfg.kafka)
    index = SegmentIndex(holds.client, holds.keys)
    rec = {"enabled": True, "mode": "events", "pre_s": 0, "post_s": 1}
    spec = CameraSpec(id="gate", url=str(footage_path(CLIP)), record=rec)
    follower = MotionFollower(
        cfg.kafka,
        holds,
        lambda cid: spec.record if cid == "gate" else None,
        group_id=f"{cfg.recordings.group_id}-motion",
        session_timeout_ms=6000,
    )
    service = RecorderService(
        cfg.kafka, cfg.recordings, index, holds=holds, motion=follower, settle_s=0.2
    )
    publisher = DetectionPublisher(
        cfg.kafka.topics.detections, KAFKA, logging.getLogger("test"), cfg.kafka.topics.motion
    )
    publisher.producer = make_producer(cfg.kafka, "test-motion")
    try:
        follower.start()
        assert wait_for(
            lambda: follower.loop.consumer is not None and follower.loop.consumer.assignment(),
            timeout=30,
        ), "the follower got no partition"
        service.reconcile({"gate": spec})  # as the registry would (the file camera plays live)
        gate = service.recorder("gate").gate
        time.sleep(1.5)
        assert gate.events == 0 and _indexed(index, "gate") == []  # no motion: nothing written
        t = time.time()
        publisher.publish_motion("gate", MotionSpell("gate", t, t).message())
        publisher.publish_motion("gate", MotionSpell("gate", t, t + 1.0).message())
        publisher.producer.flush(10)
        poll = service.events.poll_once
        assert wait_for(lambda: poll() or gate.events == 1, timeout=15), "no recording started"
        assert wait_for(lambda: poll() or not gate.on, timeout=10), "the recording did not stop"
        time.sleep(1.0)
        assert gate.events == 1 and not gate.on  # the stream goes on: nothing more is written
    finally:
        service.close()
        publisher.close(5)
    segs = _indexed(index, "gate")
    assert segs, "nothing recorded"
    # from the keyframe at or before the spell's start (one a second), to the first keyframe past
    # last_at + post_s
    assert t - 1.1 <= segs[0].start <= t + 0.05, segs[0].start - t
    assert t + 2.0 <= segs[-1].end <= t + 3.2, segs[-1].end - t
    assert follower.held == 2
