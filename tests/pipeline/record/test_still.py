"""One frame of a recording at a given time (pipeline/record/still.py, the rule preview's
pictures): the frame FFmpeg's own player shows there, None where nothing is recorded, and the
index (Redis data) never makes it read a file outside ``recordings.dir``."""

from __future__ import annotations

import logging
import subprocess
import uuid

import numpy as np
import pytest
import redis

from pipeline.common.redis import RedisKeys
from pipeline.record.index import SegmentIndex
from pipeline.record.layout import segment_path
from pipeline.record.still import frame_at
from tests.support.recordings import CLIP_FRAME_S, fake_segment, ffprobe_size
from tests.support.redis import cleanup

pytestmark = pytest.mark.integration


def ffmpeg_frames(path, first: int, last: int) -> list[np.ndarray]:
    """Frames ``first``..``last`` (display order) of ``path`` as FFmpeg's command line decodes
    them, BGR."""
    w, h = ffprobe_size(path)
    p = subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-i", str(path), "-vf"]
        + [f"select=between(n\\,{first}\\,{last})", "-vsync", "0", "-f", "rawvideo"]
        + ["-pix_fmt", "bgr24", "-"],
        capture_output=True,
        timeout=60,
    )
    assert p.returncode == 0, p.stderr.decode()
    frames = np.frombuffer(p.stdout, np.uint8).reshape(-1, h, w, 3)
    assert len(frames) == last - first + 1
    return list(frames)


def diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def test_the_frame_at_a_time_is_the_one_ffmpeg_shows_there(camera_recording):
    rec = camera_recording
    seg = rec.segments[1]  # a segment after the first: its start is not the recording's
    path = segment_path(rec.root, rec.camera, seg.start)
    n = 23  # the 24th frame shown, 2.3 s into the segment; asked for 20 ms after it
    before, want, after = ffmpeg_frames(path, n - 1, n + 1)
    got = frame_at(rec.index, rec.root, rec.camera, seg.start + n * CLIP_FRAME_S + 0.02)
    assert got is not None and got.shape == want.shape
    # the same picture as FFmpeg's (its own colour conversion: not bit for bit), and closer to
    # it than to the frames shown just before and after
    assert diff(got, want) < 1.5, diff(got, want)
    assert diff(got, want) < min(diff(got, before), diff(got, after))


def test_nothing_recorded_at_that_time_is_none(camera_recording):
    rec = camera_recording
    for t in (rec.segments[0].start - 5, rec.segments[-1].end + 5, float("nan")):
        assert frame_at(rec.index, rec.root, rec.camera, t) is None
    assert frame_at(rec.index, rec.root, "cam-never-recorded", rec.segments[0].start) is None
    with pytest.raises(ValueError, match="camera"):
        frame_at(rec.index, rec.root, "../cam1", rec.segments[0].start)


@pytest.fixture
def own_index(camera_recording):
    client = redis.Redis.from_url(camera_recording.redis_url)
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    try:
        yield SegmentIndex(client, RedisKeys(prefix))
    finally:
        cleanup(client, prefix)


def test_a_forged_index_entry_never_reads_outside_the_folder(
    camera_recording, own_index, tmp_path, caplog
):
    """An entry whose ``path`` names a playable recording outside ``recordings.dir`` (absolute,
    and ``../``) shows nothing; a file under the folder that is not a video is one log line."""
    rec = camera_recording
    root = tmp_path / "recordings"
    root.mkdir()
    seg = rec.segments[0]
    outside = rec.root / seg.path  # a real segment, readable, but not under root
    for i, forged in enumerate((str(outside), f"../../{rec.root.name}/{seg.path}")):
        start = seg.start + 100 * i
        ms = int(start * 1000)
        own_index.client.hset(
            own_index.keys.recording("cam1", ms),
            mapping={"start": repr(start), "end": repr(start + 10), "path": forged},
        )
        own_index.client.zadd(own_index.keys.recordings("cam1"), {str(ms): ms})
        assert frame_at(own_index, root, "cam1", start + 1) is None
    # a file in the segment's place under root that is not a video: None and one warning
    junk = fake_segment(root, own_index, "cam2", seg.start)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="pipeline.record.still"):
        assert frame_at(own_index, root, "cam2", seg.start + 1) is None
    lines = [r.getMessage() for r in caplog.records if r.name == "pipeline.record.still"]
    assert len(lines) == 1 and str(junk.path) in lines[0], lines
