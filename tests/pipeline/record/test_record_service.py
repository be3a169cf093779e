"""The recorder service (pipeline/record/service.py, ``vigil record``): recorders share the cameras
through their own consumer group on the cameras topic, like the ingest workers, record each
owned camera with ``record.enabled`` from its ``record_url`` (else its ``url``), and hand a
stopped recorder's cameras to the others. ffprobe/ffmpeg judge the segments."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import yaml
from kafka.partitioner.default import murmur2

from pipeline.camera_sim import CameraSim
from pipeline.cameras.registry import put_cameras
from pipeline.cameras.spec import CameraSpec
from pipeline.cli import main
from pipeline.common.kafka import ensure_topics
from pipeline.common.redis import RedisKeys
from pipeline.config import VigilConfig
from pipeline.record.holds import HoldStore
from pipeline.record.index import SegmentIndex
from pipeline.record.service import RecorderService
from tests.support.assets import footage_path
from tests.support.config import KAFKA, REDIS_URL, make_config, make_config_dict
from tests.support.net import free_port
from tests.support.recordings import CLIP, decode_errors, ffprobe_duration, ffprobe_size
from tests.support.redis import cleanup
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration

#: the detection substream: 480x270 (one keyframe per ~2 s loop); the main stream is CLIP, 768x432
SUB = "people-detection.mp4"
SUB_SIZE, MAIN_SIZE = (480, 270), (768, 432)
PARTITIONS = 8
#: cameras keyed to partitions 0 and 7 of 8: two recorders get one each, whether Kafka assigns
#: ranges (0-3, 4-7) or round robin (even, odd)
FRONT, BACK, SIDE = "front", "back", "side"


def _partition(camera_id: str) -> int:
    return (murmur2(camera_id.encode()) & 0x7FFFFFFF) % PARTITIONS  # kafka-python's default


def _config(root: Path) -> VigilConfig:
    cfg = make_config(
        KAFKA,
        recordings={
            "dir": str(root),
            "segment_s": 1,
            "read_timeout_s": 5,
            "backoff_max_s": 1,
            "session_timeout_ms": 6000,
        },
    )
    assert cfg.kafka.cameras_partitions == PARTITIONS
    return cfg


@pytest.fixture
def index() -> Iterator[SegmentIndex]:
    client = redis.Redis.from_url(REDIS_URL)
    keys = RedisKeys(f"t{os.urandom(4).hex()}:")
    try:
        yield SegmentIndex(client, keys)
    finally:
        cleanup(client, keys.prefix)
        client.close()


@pytest.fixture
def sim() -> Iterator[CameraSim]:
    with CameraSim({"main": footage_path(CLIP), "sub": footage_path(SUB)}, port=free_port()) as s:
        yield s


def _indexed(index: SegmentIndex, camera: str, after: float = 0.0) -> list:
    return [s for s in index.segments(camera, 0, 2e9) if s.start > after]


def test_two_recorders_share_the_cameras_and_one_takes_over_from_the_other(
    tmp_path, sim, index, caplog
):
    assert {_partition(FRONT) % 2, _partition(BACK) % 2} == {0, 1}
    assert {_partition(FRONT) // 4, _partition(BACK) // 4} == {0, 1}
    cfg = _config(tmp_path)
    on = {"enabled": True}
    cameras = [
        # detection reads the substream, the recording is of the main stream
        CameraSpec(id=FRONT, url=sim.urls["sub"], record_url=sim.urls["main"], record=on),
        CameraSpec(id=BACK, url=sim.urls["sub"], record=on),  # no record_url: its url
        CameraSpec(id=SIDE, url=sim.urls["main"]),  # record disabled
    ]
    ensure_topics(cfg.kafka)
    put_cameras(cfg.kafka, cameras)
    services = [
        RecorderService(cfg.kafka, cfg.recordings, index, recorder_id=f"r{i}", settle_s=0.3)
        for i in (1, 2)
    ]
    caplog.set_level(logging.INFO, logger="pipeline.record.service")
    try:
        for s in services:
            s.start()
        assert wait_for(
            lambda: (
                sorted(len(s.cameras) for s in services) == [1, 1]
                and sorted(c for s in services for c in s.cameras) == [BACK, FRONT]
            ),
            timeout=60,
        ), [s.cameras for s in services]
        assert wait_for(lambda: _indexed(index, FRONT) and _indexed(index, BACK), timeout=30)
        holder = next(s for s in services if s.cameras == [FRONT])
        other = next(s for s in services if s is not holder)
        before = _indexed(index, FRONT)
        closed_at = time.time()
        holder.close()  # as on SIGTERM: finishes its segment, leaves the group
        # the holder may start a segment while closing (a keyframe came): only one starting
        # after close() returned is the other recorder's
        stopped_at = time.time()
        assert wait_for(lambda: other.cameras == [BACK, FRONT], timeout=30), other.cameras
        assert wait_for(lambda: _indexed(index, FRONT, after=stopped_at), timeout=30)
        segments = _indexed(index, FRONT)
    finally:
        for s in services:
            s.close()
    assert f"recorder {holder.recorder_id}: stopped" in caplog.text
    assert f"recorder {other.recorder_id}: recording camera {FRONT}" in caplog.text
    # the takeover shows as a gap in the index, between the two recorders' segments: it starts
    # where the holder stopped (its last frame's end may be stamped a frame or two past the wall
    # clock at which close() returned)
    assert len(segments) > len(before)
    gaps = index.gaps(FRONT, segments[0].start, segments[-1].end)
    assert any(a <= stopped_at + 0.5 and b > closed_at for a, b in gaps), (
        gaps,
        (closed_at, stopped_at),
        [(s.start, s.end) for s in segments],
    )
    for seg in segments:  # every segment plays, from the main stream (record_url)
        path = tmp_path / seg.path
        assert decode_errors(path) == "", path
        # the file holds what the index says: the segment the holder finished on close may be
        # short (it ends where close() found it), but none is empty or longer than indexed
        assert 0 < ffprobe_duration(path) == pytest.approx(seg.end - seg.start, abs=0.1), path
        assert ffprobe_size(path) == MAIN_SIZE, path
    for seg in _indexed(index, BACK):  # without record_url the recording is of url
        assert ffprobe_size(tmp_path / seg.path) == SUB_SIZE
    assert not (tmp_path / SIDE).exists() and not _indexed(index, SIDE)


def test_vigil_record_records_and_sigterm_finishes_the_segment(tmp_path, sim, index, caplog):
    """``vigil record -c vigil.yaml`` in this process; SIGTERM ends it with exit status 0 after
    the segment in progress is finished and indexed."""
    data = make_config_dict(
        KAFKA,
        redis={"url": REDIS_URL, "key_prefix": index.keys.prefix},
        recordings={"dir": str(tmp_path), "segment_s": 1, "read_timeout_s": 5},
    )
    data["recordings"]["group_id"] = data["ingest"]["group_id"] + "-record"
    path = tmp_path / "vigil.yaml"
    path.write_text(yaml.safe_dump(data))
    cfg = make_config(KAFKA, **{k: data[k] for k in ("kafka", "redis", "recordings")})
    ensure_topics(cfg.kafka)
    put_cameras(cfg.kafka, [CameraSpec(id=FRONT, url=sim.urls["main"], record={"enabled": True})])
    signalled: list[int] = []

    def terminate() -> None:
        if wait_for(lambda: len(_indexed(index, FRONT)) >= 2, timeout=60):
            signalled.append(len(_indexed(index, FRONT)))
        os.kill(os.getpid(), signal.SIGTERM)

    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    killer = threading.Thread(target=terminate, daemon=True)
    caplog.set_level(logging.INFO)
    try:
        killer.start()
        code = main(["record", "-c", str(path), "--max-seconds", "90"])
    finally:
        for s, handler in saved.items():
            signal.signal(s, handler)
        killer.join(5)
    assert code == 0
    assert signalled, "no segment was indexed before SIGTERM"
    assert "received SIGTERM" in caplog.text
    segments = _indexed(index, FRONT)
    assert len(segments) > signalled[0]  # the one in progress at SIGTERM, finished and indexed
    last = tmp_path / segments[-1].path
    assert decode_errors(last) == "" and ffprobe_duration(last) > 0


def test_a_camera_in_mode_events_is_recorded_only_while_an_alert_holds_it(tmp_path, index):
    """A hold in Redis (whichever recorder's follower wrote it) makes the camera's recorder
    write; its end stops it at the next keyframe, and nothing more is recorded after."""
    cfg = _config(tmp_path)
    holds = HoldStore(index.client, index.keys)
    t = time.time()
    holds.hold(FRONT, "a" * 20, t - 30, t + 2.0, t + 3600)  # an alert ending 2 s from now
    spec = CameraSpec(
        id=FRONT, url=str(footage_path(CLIP)), record={"enabled": True, "mode": "events"}
    )
    service = RecorderService(cfg.kafka, cfg.recordings, index, holds=holds, settle_s=0.2)
    try:
        service.reconcile({FRONT: spec})  # as the registry would (no Kafka needed here)
        assert service.events is not None
        service.events.poll_once()
        rec = service.recorder(FRONT)
        assert rec is not None and rec.gate is not None
        assert wait_for(lambda: rec.gate.events == 1 and not rec.gate.on, timeout=10)
        time.sleep(1.5)  # the stream goes on: nothing is written without an event
        assert rec.gate.events == 1 and not rec.gate.on
    finally:
        service.close()
    segs = _indexed(index, FRONT)
    assert segs, "nothing recorded"
    assert segs[0].start < t + 1.0  # from the stream's first keyframe: the hold began earlier
    # up to the first keyframe (one a second) past the alert's end, then nothing
    assert t + 2.0 <= segs[-1].end <= t + 3.2, segs[-1].end - t
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*.mp4")) == [
        s.path for s in segs
    ]


def test_a_recorder_on_a_fresh_kafka_makes_the_topics_and_gets_its_partitions(tmp_path, index):
    """`vigil record` (or `vigil run`'s recorder) started before anything made Vigil's topics
    takes the cameras topic's partitions at once (it waited bootstrap_timeout_ms for a topic
    nobody had made, then joined with none)."""
    cfg = _config(tmp_path)  # the test's own topics: none exist yet
    service = RecorderService(cfg.kafka, cfg.recordings, index, settle_s=0.2)
    try:
        service.start()
        watcher = service.watcher
        # within less than the 15 s bootstrap wait it used to sit out before joining with none
        assert wait_for(lambda: len(watcher.consumer.assignment()) == PARTITIONS, timeout=10)
    finally:
        service.close()
