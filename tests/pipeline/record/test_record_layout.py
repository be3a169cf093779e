"""Segment files are laid out by camera, UTC date and UTC hour, named by their start in epoch ms;
anything else under the folder is not taken for a segment."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from pipeline.record.layout import parse_segment, relative_path, segment_files

# 2026-03-29 00:59:59.999 UTC: 01:59 in Paris, the night the clocks go forward there
T = 1774745999.999


@pytest.fixture
def paris(monkeypatch):
    """The process in a time zone an hour off UTC (and back to its own afterwards)."""
    monkeypatch.setenv("TZ", "Europe/Paris")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_folders_are_the_utc_date_and_hour_and_the_name_the_start_in_ms(paris):
    assert relative_path("cam1", T) == Path("cam1/2026-03-29/00/1774745999999.mp4")
    assert relative_path("cam1", T + 0.001) == Path("cam1/2026-03-29/01/1774746000000.mp4")


def test_parse_reads_back_what_the_layout_writes_and_nothing_else(tmp_path):
    good = tmp_path / relative_path("cam1", T)
    assert parse_segment(tmp_path, good) == ("cam1", 1774745999.999)
    for bad in (
        "cam1/2026-03-29/00/notes.mp4",  # not a start time
        "cam1/2026-03-29/01/1774745999999.mp4",  # the start is not in that hour
        "cam1/2026-03-30/00/1774745999999.mp4",  # nor on that day
        "-cam/2026-03-29/00/1774745999999.mp4",  # not a camera id
        "cam1/2026-03-29/1774745999999.mp4",  # not four levels down
    ):
        assert parse_segment(tmp_path, tmp_path / bad) is None, bad
    assert parse_segment(tmp_path / "sub", good) is None  # not under the root


def test_segment_files_are_listed_by_camera_then_time(tmp_path):
    names = [relative_path(c, t) for c in ("b", "a") for t in (T + 20, T, T + 3600)]
    for n in names:
        (tmp_path / n).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / n).write_bytes(b"")
    got = [p.relative_to(tmp_path) for p in segment_files(tmp_path)]
    assert got == sorted(names, key=lambda p: (p.parts[0], int(p.stem)))
