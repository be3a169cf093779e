"""The gaps of a time range: what no segment covers, beyond the tolerance; the index rebuilt
from files that were cut short."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.record.export import cut
from pipeline.record.index import find_gaps, scan
from pipeline.record.segmenter import Segment
from tests.support.recordings import decode_errors, ffprobe_duration


def _seg(start: float, end: float) -> Segment:
    return Segment("cam1", Path("x.mp4"), start, end, 1, 1)


def test_gaps_are_the_uncovered_stretches_of_the_range():
    segs = [_seg(100, 110), _seg(110.05, 120), _seg(130, 140)]
    assert find_gaps(segs, 100, 140) == [(120, 130)]
    assert find_gaps(segs, 90, 150) == [(90, 100), (120, 130), (140, 150)]
    assert find_gaps(segs, 105, 115) == []  # 50 ms between segments: within the tolerance
    assert find_gaps(segs, 105, 115, tolerance_s=0.01) == [(110, 110.05)]
    assert find_gaps([], 0, 10) == [(0, 10)]
    assert find_gaps(segs, 121, 125) == [(121, 125)]


@pytest.mark.integration
def test_a_segment_cut_off_mid_fragment_is_indexed_up_to_its_last_whole_frame(
    camera_recording, tmp_path
):
    """A file cut short (a killed writer, a full disk, a copy cut off): the rebuilt index ends
    where its whole frames end, and what is cut from it plays without a decoding error."""
    rec = camera_recording
    seg = rec.segments[1]
    path = tmp_path / seg.path
    path.parent.mkdir(parents=True)
    data = (rec.root / seg.path).read_bytes()
    path.write_bytes(data[: len(data) * 2 // 5])  # in the middle of a frame's bytes
    found, skipped = scan(tmp_path)
    assert skipped == []
    (short,) = found[rec.camera]
    assert short.start == pytest.approx(seg.start, abs=0.001)
    assert seg.start + 2 < short.end < seg.end - 2
    out = tmp_path / "out.mp4"
    result = cut(tmp_path, [short], short.start, short.end + 5, out)
    assert decode_errors(out) == ""
    assert result.frames == short.frames  # the index counts whole frames only
    assert result.gaps == [(pytest.approx(short.end, abs=0.001), short.end + 5)]
    assert ffprobe_duration(out) == pytest.approx(short.duration, abs=0.15)
