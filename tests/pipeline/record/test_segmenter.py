"""Recording a camera: segments that play on their own in FFmpeg's player, cut on keyframes, laid
out by UTC date and hour, stamped on the wall clock; outages are gaps; a killed recorder leaves a
playable file; a bad camera or folder is one clear error."""

from __future__ import annotations

import errno
import logging
import os
import signal
import statistics
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from pipeline.common.errors import InputError
from pipeline.common.redis import RedisConfig
from pipeline.record import segmenter
from pipeline.record.index import SegmentIndex, rebuild
from pipeline.record.segmenter import Recorder, StreamUnavailable
from tests.support.assets import footage_path
from tests.support.config import REDIS_URL
from tests.support.net import free_port
from tests.support.recordings import (
    CLIP,
    CLIP_FRAME_S,
    CLIP_GOP_S,
    decode_errors,
    ffprobe_duration,
    ffprobe_packets,
    make_jumping_stream,
    make_unrecordable,
    start_child_recorder,
)
from tests.support.waiting import wait_for

integration = pytest.mark.integration


@integration
def test_segments_are_segment_s_long_start_on_keyframes_and_play(camera_recording):
    rec = camera_recording
    files = sorted(rec.root.rglob("*.mp4"))
    assert [rec.root / s.path for s in rec.segments] == files
    assert len(files) == 3  # 25 s in 10 s segments: 10, 10 and the rest
    for seg in rec.segments:
        path = rec.root / seg.path
        start = datetime.fromtimestamp(seg.start, UTC)
        assert seg.path == Path(
            "cam1", start.strftime("%Y-%m-%d"), start.strftime("%H"), f"{int(seg.start * 1000)}.mp4"
        )
        packets = ffprobe_packets(path)
        assert packets[0][1], f"{seg.path} does not start on a keyframe"
        assert decode_errors(path) == "", seg.path
        assert ffprobe_duration(path) == pytest.approx(seg.duration, abs=CLIP_FRAME_S + 0.01)
        assert seg.bytes == path.stat().st_size
    for seg in rec.segments[:-1]:  # cut at the first keyframe once segment_s is reached
        assert ffprobe_duration(rec.root / seg.path) == pytest.approx(rec.segment_s, abs=0.01)


@integration
def test_segment_times_are_the_wall_clock_of_arrival_and_contiguous(camera_recording):
    rec = camera_recording
    segs = rec.segments
    assert rec.began <= segs[0].start and segs[-1].end <= rec.ended + CLIP_GOP_S
    for a, b in zip(segs, segs[1:], strict=False):
        assert b.start == pytest.approx(a.end, abs=CLIP_FRAME_S / 2)  # no gap, no overlap
    assert rec.index.gaps(rec.camera, segs[0].start, segs[-1].end) == []
    # packets are stamped with when they came (the ingest worker's capture_ts clock): half of
    # them within a frame of it (anchoring on the PTS of B-frame streams is 4 frames off)
    assert statistics.median(rec.lag_s) < CLIP_FRAME_S


@integration
def test_index_holds_every_segment_and_rebuild_finds_the_same_from_the_files(camera_recording):
    rec = camera_recording
    indexed = rec.index.segments(rec.camera, rec.began - 60, rec.ended + 60)
    assert indexed == rec.segments
    other = SegmentIndex(rec.index.client, type(rec.index.keys)(rec.key_prefix + "rebuilt:"))
    try:
        report = rebuild(rec.root, other)
        assert report.indexed == {"cam1": 3} and report.skipped == []
        rebuilt = other.segments(rec.camera, rec.began - 60, rec.ended + 60)
        assert [s.path for s in rebuilt] == [s.path for s in rec.segments]
        for got, want in zip(rebuilt, rec.segments, strict=True):
            assert got.start == pytest.approx(want.start, abs=0.001)  # the name: whole ms
            assert got.end == pytest.approx(want.end, abs=CLIP_FRAME_S + 0.002)
            assert got.bytes == want.bytes
    finally:
        other.clear(rec.camera)
    # a segment query inside one segment finds just it
    mid = rec.segments[1].start + 1
    assert rec.index.segments(rec.camera, mid, mid + 1) == [rec.segments[1]]


@integration
def test_outage_is_a_gap_not_a_stretched_segment(camera_sim, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="pipeline.record")
    sim = camera_sim(CLIP)
    url = next(iter(sim.urls.values()))
    found = []
    rec = Recorder(
        "cam1",
        url,
        tmp_path,
        segment_s=2,
        read_timeout_s=2,
        backoff_initial_s=0.1,
        backoff_max_s=0.3,
        settle_s=0.3,
        on_segment=found.append,
    ).start()
    try:
        assert wait_for(lambda: len(found) >= 1, timeout=30), rec.stats
        sim.stop()
        down = time.time()
        assert wait_for(lambda: rec.stats.state == "lost", timeout=10), rec.stats
        time.sleep(1.5)  # the camera stays away while the recorder retries
        before_up = len(found)
        up = time.time()
        sim.start()  # the same port: the recorder reconnects to the same URL
        assert wait_for(lambda: len(found) >= before_up + 2, timeout=30), rec.stats
    finally:
        rec.stop()
    gaps = [(a, b) for a, b in zip(found, found[1:], strict=False) if b.start - a.end > 1.0]
    assert len(gaps) == 1, [(s.start, s.end) for s in found]
    last, first = gaps[0]
    assert last.end <= down + 0.2  # ends with its last packet, not stretched over the outage
    assert first.start >= up  # the next starts with the first packet after the camera is back
    for seg in found:
        assert seg.duration <= 2 + CLIP_GOP_S + 0.01  # no segment spans the outage
        assert decode_errors(tmp_path / seg.path) == ""
    lines = [r.getMessage() for r in caplog.records if r.name == "pipeline.record.segmenter"]
    assert sum("stream lost" in m for m in lines) == 1, lines
    assert sum("retrying with backoff" in m for m in lines) == 1, lines  # not one per retry
    assert sum("back after" in m for m in lines) == 1, lines


@integration
def test_killed_recorder_leaves_a_playable_file_that_rebuild_indexes(camera_sim, tmp_path, caplog):
    sim = camera_sim(CLIP)
    proc = start_child_recorder("cam1", next(iter(sim.urls.values())), tmp_path, 60)
    try:
        files = wait_for(lambda: list(tmp_path.rglob("*.mp4")), timeout=10)
        assert len(files) == 1
        # a few fragments (one per keyframe, one a second) and part of the next
        wait_for(lambda: len(ffprobe_packets(files[0])) >= 35, timeout=20, step=0.5)
        time.sleep(0.5)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    path = files[0]
    packets = ffprobe_packets(path)
    assert len(packets) >= 30 and packets[0][1]
    assert decode_errors(path) == ""
    bad = path.parent / f"{int(path.stem) + 90_000}.mp4"  # named like a segment, not one
    bad.write_bytes(os.urandom(2000))
    index = SegmentIndex.from_config(_redis_cfg())
    caplog.set_level(logging.WARNING, logger="pipeline.record")
    try:
        report = rebuild(tmp_path, index)
        assert report.indexed == {"cam1": 1}
        assert [p for p, _ in report.skipped] == [bad]
        assert [r.getMessage() for r in caplog.records if str(bad) in r.getMessage()] != []
        (seg,) = index.segments("cam1", 0, 2**40)
        assert seg.path == path.relative_to(tmp_path)
        assert seg.start == int(path.stem) / 1000
        shown = max(t for t, _ in packets) - min(t for t, _ in packets) + CLIP_FRAME_S
        assert seg.duration == pytest.approx(shown, abs=0.01)
    finally:
        index.clear("cam1")


def _redis_cfg() -> RedisConfig:
    return RedisConfig(url=REDIS_URL, key_prefix=f"t{uuid.uuid4().hex[:8]}:")


# -- errors a user can fix, without a camera --------------------------------------------------


def test_unwritable_dir_is_one_error_naming_it(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(InputError) as e:
        Recorder("cam1", footage_path(CLIP), blocker / "recordings")
    assert str(blocker / "recordings") in str(e.value) and "cannot write" in str(e.value)


def test_missing_file_camera_fails_naming_it(tmp_path):
    missing = tmp_path / "nope.mp4"
    rec = Recorder("cam1", str(missing), tmp_path / "rec")
    with pytest.raises(StreamUnavailable, match=f"cannot open {missing}"):
        rec.run()
    assert list((tmp_path / "rec").rglob("*.mp4")) == []


def test_bad_camera_id_and_url_are_refused_before_anything_runs(tmp_path):
    with pytest.raises(ValueError, match="invalid camera id"):
        Recorder("../etc", footage_path(CLIP), tmp_path)
    with pytest.raises(ValueError, match="control character"):
        Recorder("cam1", "rtsp://127.0.0.1:1/x\r\nSET a b", tmp_path)


def test_unreachable_camera_logs_once_and_never_its_password(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="pipeline.record")
    url = f"rtsp://admin:s3cret-pw@127.0.0.1:{free_port()}/cam"
    rec = Recorder(
        "cam1", url, tmp_path, open_timeout_s=1, backoff_initial_s=0.02, backoff_max_s=0.05
    ).start()
    try:
        assert wait_for(lambda: rec.stats.state == "lost", timeout=10)
        assert wait_for(lambda: rec.stats.open_failures >= 4, timeout=10), rec.stats
    finally:
        rec.stop()
    lines = [r.getMessage() for r in caplog.records]
    assert sum("retrying with backoff" in m for m in lines) == 1, lines
    assert not any("s3cret-pw" in m for m in lines)
    assert "s3cret-pw" not in (rec.stats.last_error or "")
    assert "cam" in " ".join(lines)


def test_a_jump_in_the_streams_clock_ends_the_segment_and_anchors_again(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="pipeline.record")
    # 0.6 s at 30 s, then back to 0 s (a reboot), then ahead to 100 s
    stream = make_jumping_stream(tmp_path / "jumps.ts", [30, 0, 100], part_s=0.6)
    found = []
    began = time.time()
    Recorder(
        "cam1", str(stream), tmp_path / "rec", segment_s=0.5, settle_s=0.1, on_segment=found.append
    ).run()
    ended = time.time()
    lines = [r.getMessage() for r in caplog.records if "jumped" in r.getMessage()]
    assert len(lines) == 2, lines
    assert "jumped by 3" in lines[0] and "jumped by -9" in lines[1], lines
    # the wall clock throughout: never 30 s or 100 s away, in order, no segment over a jump
    times = [(round(s.start - began, 2), round(s.end - began, 2)) for s in found]
    assert len(found) >= 5, times
    assert all(began - 0.2 <= s.start and s.end <= ended + 0.2 for s in found), times
    assert all(b.start >= a.end - 0.05 for a, b in zip(found, found[1:], strict=False)), times
    assert all(s.duration <= 0.5 + 0.01 for s in found), times
    assert sum(s.frames for s in found) >= 15
    assert decode_errors(tmp_path / "rec" / found[-1].path) == ""


@pytest.mark.parametrize(
    "kind, says",
    [
        ("flv", "its video is flv (FLV / Sorenson Spark"),
        ("audio", "has no video stream (it has audio)"),
    ],
)
def test_a_stream_mp4_cannot_hold_stops_the_recording_with_one_line_naming_why(
    kind, says, tmp_path, caplog, monkeypatch
):
    caplog.set_level(logging.INFO, logger="pipeline.record")
    monkeypatch.setattr(segmenter, "is_file_url", lambda url: False)  # as a network camera
    source = make_unrecordable(tmp_path / f"{kind}.mkv", kind)
    camera = f"cam{uuid.uuid4().hex[:6]}"  # metric series of its own
    rec = Recorder(
        camera,
        str(source),
        tmp_path / "rec",
        open_timeout_s=1,
        backoff_initial_s=0.02,
        backoff_max_s=0.05,
        source="record_url",
    ).start()
    assert wait_for(lambda: not rec.alive, timeout=10), rec.stats
    # stopped, not retried: reconnecting would find the same codec
    assert rec.stats.state == "failed" and rec.stats.open_failures == 0, rec.stats
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(lines) == 1, lines
    assert f"record_url {source}" in lines[0] and says in lines[0], lines
    assert "MP4 segments cannot hold" in lines[0] or kind == "audio"
    assert "recording stopped" in lines[0] and not any(r.exc_info for r in caplog.records)
    assert REGISTRY.get_sample_value("vigil_recording_unrecordable", {"camera": camera}) == 1
    assert list((tmp_path / "rec").rglob("*.mp4")) == []


def test_a_folder_that_cannot_be_written_pauses_recording_until_it_can(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="pipeline.record")
    found = []
    camera = f"cam{uuid.uuid4().hex[:6]}"  # metric series of its own
    blocker = tmp_path / camera  # a file where the camera's folder goes: mkdir fails
    blocker.write_text("")
    paused = {"camera": camera}
    rec = Recorder(
        camera, footage_path(CLIP), tmp_path, segment_s=1, settle_s=0.1, on_segment=found.append
    ).start()
    try:
        assert wait_for(lambda: rec.stats.state == "paused", timeout=10), rec.stats
        assert REGISTRY.get_sample_value("vigil_recording_paused", paused) == 1
        reason = {**paused, "reason": "not_writable"}
        assert REGISTRY.get_sample_value("vigil_recording_pauses_total", reason) == 1
        assert wait_for(lambda: rec.stats.packets >= 25, timeout=10)  # two keyframes more
        assert found == []
        blocker.unlink()
        assert wait_for(lambda: len(found) >= 1, timeout=10), rec.stats
        assert REGISTRY.get_sample_value("vigil_recording_paused", paused) == 0
    finally:
        rec.stop()
    assert rec.alive is False
    lines = [r.getMessage() for r in caplog.records]
    assert sum("cannot write segments" in m for m in lines) == 1, lines
    assert sum("writing segments again" in m for m in lines) == 1, lines
    assert decode_errors(tmp_path / found[0].path) == ""


def test_a_full_disk_pauses_recording_with_a_metric_until_space_returns(
    tmp_path, caplog, monkeypatch
):
    caplog.set_level(logging.INFO, logger="pipeline.record")
    full = threading.Event()
    full.set()
    real = segmenter.SegmentOutput

    def output(*a, **kw):  # the disk as the muxer sees it: full until told otherwise
        if full.is_set():
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(*a, **kw)

    monkeypatch.setattr(segmenter, "SegmentOutput", output)
    camera = f"full{uuid.uuid4().hex[:6]}"  # metric series of its own

    def metric(name: str, **labels) -> float | None:
        return REGISTRY.get_sample_value(name, {"camera": camera, **labels})

    found = []
    rec = Recorder(
        camera, footage_path(CLIP), tmp_path, segment_s=1, settle_s=0.1, on_segment=found.append
    ).start()
    try:
        assert wait_for(lambda: rec.stats.state == "paused", timeout=10), rec.stats
        assert metric("vigil_recording_paused") == 1
        assert metric("vigil_recording_pauses_total", reason="disk_full") == 1
        assert wait_for(lambda: rec.stats.packets >= 25, timeout=10)  # two keyframes more
        assert found == [] and rec.alive
        full.clear()
        assert wait_for(lambda: len(found) >= 1, timeout=10), rec.stats
        assert metric("vigil_recording_paused") == 0
    finally:
        rec.stop()
    lines = [r.getMessage() for r in caplog.records]
    assert sum("cannot write segments" in m and "No space left" in m for m in lines) == 1, lines
    assert sum("recording resumed" in m for m in lines) == 1, lines
    assert metric("vigil_recording_pauses_total", reason="disk_full") == 1
    assert decode_errors(tmp_path / found[0].path) == ""
