"""The gaps of a time range: what no segment covers, beyond the tolerance."""

from __future__ import annotations

from pathlib import Path

from pipeline.record.index import find_gaps
from pipeline.record.segmenter import Segment


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
