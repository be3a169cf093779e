"""The clip of an alert: ``[started_at - pre_s, (ended_at, or now while active) + post_s]`` of its
camera's recording, playable in FFmpeg's player with the expected duration, cached and cut again
when what it is cut from changes, and a clear error when its footage expired; the alert's fields
are hostile input."""

from __future__ import annotations

import dataclasses
import math
import os
import uuid

import pytest
import redis

from pipeline.common.redis import RedisKeys
from pipeline.record.clips import (
    CACHE_DIR,
    MAX_CLIP_S,
    ClipUnavailable,
    UnusableAlert,
    cached_clip,
    cached_gaps,
    clip_range,
    gaps_file,
    write_clip,
)
from pipeline.record.index import SegmentIndex
from pipeline.record.layout import segment_path
from tests.support.recordings import (
    CLIP_GOP_S,
    copy_recording,
    decode_errors,
    ffprobe_duration,
    ffprobe_packets,
)
from tests.support.redis import cleanup

AID = "0123456789abcdef0123"


def alert(started: float, ended: float | None, **fields) -> dict:
    return {"id": AID, "camera_id": "cam1", "started_at": started, "ended_at": ended, **fields}


@pytest.fixture
def footage(camera_recording, tmp_path):
    """The shared recording copied, indexed under keys of this test's own: (recording, root,
    index)."""
    client = redis.Redis.from_url(camera_recording.redis_url)
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    index = SegmentIndex(client, RedisKeys(prefix))
    root = tmp_path / "recordings"
    try:
        yield camera_recording, root, copy_recording(camera_recording, root, index)
    finally:
        cleanup(client, prefix)


# -- the range: pure ---------------------------------------------------------------------------


def test_the_range_is_pre_before_the_start_to_post_after_the_end_or_now():
    r = clip_range(alert(1000.0, 1004.0), 3.0, 2.0, now=5000.0)
    assert (r.alert_id, r.camera_id, r.start, r.end, r.active) == (
        AID,
        "cam1",
        997.0,
        1006.0,
        False,
    )
    r = clip_range(alert(1000.0, None), 3.0, 2.0, now=1010.0)  # active: until now
    assert (r.start, r.end, r.active) == (997.0, 1012.0, True)
    r = clip_range(alert(1000.0, None), 0, 0, now=0)  # a clock behind: never before the start
    assert (r.start, r.end) == (1000.0, 1000.0)
    r = clip_range(alert(1000.0, 1000.0 + 86400), 5, 5, now=0)  # a day long (or forged)
    assert r.end - r.start == MAX_CLIP_S


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        ({"id": "../../etc/passwd"}, "not an alert id"),
        ({"id": "a/b"}, "not an alert id"),
        ({"id": "a.b"}, "not an alert id"),  # '.' separates the id from the digest in the cache
        ({"id": ""}, "not an alert id"),
        ({"id": "x" * 65}, "not an alert id"),
        ({"camera_id": "../cam1"}, "camera_id is not a camera id"),
        ({"camera_id": None}, "camera_id is not a camera id"),
        ({"started_at": math.nan}, "started_at is not a time"),
        ({"started_at": "soon"}, "started_at is not a time"),
        ({"started_at": None}, "no started_at"),
        ({"ended_at": math.inf}, "ended_at is not a time"),
        ({"ended_at": 999.0}, "ended_at is before started_at"),
    ],
)
def test_a_forged_or_damaged_alert_is_refused(fields, says):
    with pytest.raises(UnusableAlert, match=says):
        clip_range(alert(1000.0, 1004.0) | fields, 5, 5, now=2000.0)


# -- clips cut from a recording ----------------------------------------------------------------


@pytest.mark.integration
def test_the_clip_of_an_alert_plays_with_its_pre_and_post_seconds(footage, tmp_path):
    rec, root, index = footage
    started = rec.segments[0].start + 8.05  # between keyframes, across the boundary at 10 s
    rng = clip_range(alert(started, started + 4.0), 3.0, 2.0, now=started + 60)
    out = tmp_path / "clip.mp4"
    result = write_clip(index, root, rng, out)
    assert result.gaps == []
    assert started - 3.0 - CLIP_GOP_S < result.start <= started - 3.0  # keyframe at or before
    packets = ffprobe_packets(out)
    assert packets[0][1], "the clip does not start on a keyframe"
    assert decode_errors(out) == ""
    assert ffprobe_duration(out) == pytest.approx(9.0, abs=CLIP_GOP_S)


@pytest.mark.integration
def test_a_clip_is_cached_and_cut_again_when_the_alert_ends_or_the_segments_change(footage):
    rec, root, index = footage
    first, last = rec.segments[0], rec.segments[-1]
    started = first.start + 2.0
    # active, "now" past the last segment: the clip ends with the footage indexed ...
    active = clip_range(alert(started, None), 1.0, 1.0, now=last.end + 5)
    p1 = cached_clip(index, root, active)
    assert p1.parent == root / CACHE_DIR and p1.name.startswith(f"{AID}.")
    assert decode_errors(p1) == ""
    assert ffprobe_duration(p1) == pytest.approx(last.end - (started - 1.0), abs=CLIP_GOP_S)
    stamp = p1.stat().st_mtime_ns
    os.utime(p1, ns=(stamp - 10**12, stamp))  # last asked for long ago
    # ... and is the same file a moment later (no new segment): not cut again, but asked for
    # now (its access time: what retention of the clip cache goes by)
    later = clip_range(alert(started, None), 1.0, 1.0, now=last.end + 9)
    assert cached_clip(index, root, later) == p1 and p1.stat().st_mtime_ns == stamp
    assert p1.stat().st_atime_ns >= stamp
    # the alert ends: its clip is cut again, shorter; the old file is gone
    ended = clip_range(alert(started, started + 3.0), 1.0, 1.0, now=last.end + 9)
    p2 = cached_clip(index, root, ended)
    assert p2 != p1 and not p1.exists()
    assert ffprobe_duration(p2) == pytest.approx(5.0, abs=CLIP_GOP_S)
    # a segment it uses is re-indexed (rebuilt, a different size): cut again
    index.add(dataclasses.replace(first, bytes=first.bytes + 1))
    p3 = cached_clip(index, root, ended)
    assert p3 != p2 and not p2.exists()
    # no stray part files: the clip and its list of gaps
    assert sorted((root / CACHE_DIR).iterdir()) == sorted([p3, gaps_file(p3)])


@pytest.mark.integration
def test_a_damaged_segment_is_a_gap_the_cached_clip_lists(footage):
    rec, root, index = footage
    first, middle, last = rec.segments[:3]
    (root / middle.path).write_bytes(b"\0" * 4096)  # overwritten on disk
    rng = clip_range(alert(first.end - 2, last.start + 1), 1.0, 1.0, now=last.end + 60)
    clip = cached_clip(index, root, rng)
    assert decode_errors(clip) == ""
    (gap,) = cached_gaps(clip)
    assert gap == (pytest.approx(first.end, abs=0.3), pytest.approx(last.start, abs=0.001))
    gaps_file(clip).unlink()  # the list gone (the cache may be cleaned any time): cut again
    assert cached_gaps(cached_clip(index, root, rng)) == (gap,)


@pytest.mark.integration
def test_expired_footage_is_a_clear_error_and_its_cached_clip_goes(footage, tmp_path):
    rec, root, index = footage
    first = rec.segments[0]
    before = clip_range(alert(first.start - 600, first.start - 590), 5, 5, now=first.start)
    with pytest.raises(ClipUnavailable, match=f"alert {AID}: footage expired or not recorded"):
        write_clip(index, root, before, tmp_path / "x.mp4")
    assert not (tmp_path / "x.mp4").exists()

    inside = clip_range(alert(first.start + 2, first.start + 4), 1, 1, now=first.start + 60)
    cached = cached_clip(index, root, inside)
    # retention deleted the segment's file (the index not yet updated): expired
    segment_path(root, "cam1", first.start).unlink()
    with pytest.raises(ClipUnavailable, match="footage expired or not recorded"):
        write_clip(index, root, inside, tmp_path / "y.mp4")
    # ... and its index entry: the cached clip goes too
    index.replace("cam1", rec.segments[1:])
    with pytest.raises(ClipUnavailable, match="camera cam1"):
        cached_clip(index, root, inside)
    assert not cached.exists()
