"""Exports: a time range cut from the segments by remuxing, playable in FFmpeg's player with the
expected duration, starting on the keyframe at or before the range, saying where the gaps are."""

from __future__ import annotations

import logging
import os
import shutil

import pytest

from pipeline.common.errors import InputError, InputNotFound, UsageError
from pipeline.record.export import NothingRecorded, cut, export
from tests.support.recordings import (
    CLIP_GOP_S,
    decode_errors,
    ffprobe_duration,
    ffprobe_packets,
)

pytestmark = pytest.mark.integration


def test_export_across_a_segment_boundary_plays_with_the_expected_duration(
    camera_recording, tmp_path
):
    rec = camera_recording
    t0 = rec.segments[0].start + 4.05  # between keyframes
    t1 = t0 + 12.0  # across the boundary at 10 s
    out = tmp_path / "out.mp4"
    result = export(rec.index, rec.root, rec.camera, t0, t1, out)
    assert result.segments == 2 and result.gaps == []
    assert t0 - CLIP_GOP_S < result.start <= t0  # the keyframe at or before t0
    packets = ffprobe_packets(out)
    assert packets[0][1]
    assert decode_errors(out) == ""
    assert ffprobe_duration(out) == pytest.approx(12.0, abs=CLIP_GOP_S)
    assert ffprobe_duration(out) == pytest.approx(result.duration, abs=0.15)
    assert len(packets) == result.frames


def test_export_says_where_the_recording_has_gaps(camera_recording, tmp_path):
    rec = camera_recording
    last = rec.segments[-1]
    out = tmp_path / "tail.mp4"
    result = export(rec.index, rec.root, rec.camera, last.end - 3, last.end + 4, out)
    assert len(result.gaps) == 1
    (a, b) = result.gaps[0]
    assert a == pytest.approx(last.end, abs=0.001) and b == pytest.approx(last.end + 4)
    assert decode_errors(out) == ""
    assert ffprobe_duration(out) == pytest.approx(3.0, abs=CLIP_GOP_S)


def test_export_of_an_unrecorded_range_or_to_a_missing_folder_is_a_clear_error(
    camera_recording, tmp_path
):
    rec = camera_recording
    first = rec.segments[0]
    with pytest.raises(NothingRecorded, match="camera cam1: nothing recorded between"):
        export(
            rec.index, rec.root, rec.camera, first.start - 60, first.start - 30, tmp_path / "x.mp4"
        )
    assert not (tmp_path / "x.mp4").exists()
    with pytest.raises(InputNotFound, match=f"folder {tmp_path / 'nope'} does not exist"):
        export(rec.index, rec.root, rec.camera, first.start, first.end, tmp_path / "nope" / "x.mp4")
    with pytest.raises(UsageError, match="must be after --from"):
        export(rec.index, rec.root, rec.camera, first.end, first.start, tmp_path / "x.mp4")


def test_a_write_error_during_the_cut_is_named_as_such(camera_recording, tmp_path, monkeypatch):
    """Not taken for a truncated segment (which would leave a silently short file)."""
    rec = camera_recording
    first = rec.segments[0]
    full = tmp_path / "full"
    full.mkdir()
    out = full / "x.mp4"
    monkeypatch.setattr("pipeline.record.export.check_output", lambda p: p)
    full.rmdir()  # gone after the check: the first write fails
    with pytest.raises(InputError, match=f"{out}: cannot write"):
        export(rec.index, rec.root, rec.camera, first.start, first.start + 3, out)


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_a_damaged_segment_is_skipped_with_one_line_and_the_export_says_where_the_gap_is(
    damage, camera_recording, tmp_path, caplog
):
    rec = camera_recording
    first, middle, last = rec.segments[:3]
    root = tmp_path / "rec"
    shutil.copytree(rec.root / rec.camera, root / rec.camera)
    path = root / middle.path
    data = path.read_bytes()
    # cut off in the middle of a fragment (a full disk, a copy cut off), or overwritten
    path.write_bytes(data[: len(data) * 2 // 5] if damage == "truncated" else os.urandom(len(data)))
    caplog.set_level(logging.WARNING, logger="pipeline.record")
    out = tmp_path / "out.mp4"
    result = cut(root, rec.segments[:3], first.start + 1, last.start + 2, out)
    (gap,) = result.gaps
    if damage == "truncated":  # what the file still holds plays; the rest is the gap
        assert middle.start + 2 < gap[0] < middle.start + 6, (gap, middle)
    else:
        assert gap[0] == pytest.approx(first.end, abs=0.3)
    assert gap[1] == pytest.approx(last.start, abs=0.001)
    lines = [r.getMessage() for r in caplog.records if str(path) in r.getMessage()]
    assert len(lines) == 1 and "gap" in lines[0], lines
    assert decode_errors(out) == ""
    assert result.segments == (3 if damage == "truncated" else 2)
