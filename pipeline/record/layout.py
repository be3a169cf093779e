"""Where a segment lives: ``<dir>/<camera>/<YYYY-MM-DD>/<HH>/<start>.mp4`` (UTC).

``<start>`` is the segment's start on the wall clock of the detection messages' ``capture_ts``,
in whole milliseconds since 1970 (13 digits until the year 2286, so names sort by time). The date
and hour folders are that start in UTC, never local time: a DST change never repeats or skips
an hour folder.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from pipeline.common.contracts import validate_camera_id

SUFFIX = ".mp4"
_NAME = re.compile(r"^(\d{10,16})\.mp4$")


def start_ms(start_s: float) -> int:
    """The segment's name: its start in whole milliseconds (rounded down)."""
    return int(start_s * 1000)


def relative_path(camera_id: str, start_s: float) -> Path:
    """``<camera>/<YYYY-MM-DD>/<HH>/<start ms>.mp4`` for a segment starting at ``start_s``."""
    ms = start_ms(start_s)
    t = datetime.fromtimestamp(ms / 1000, UTC)
    return Path(camera_id, t.strftime("%Y-%m-%d"), t.strftime("%H"), f"{ms}{SUFFIX}")


def segment_path(root: Path, camera_id: str, start_s: float) -> Path:
    return Path(root) / relative_path(camera_id, start_s)


def parse_segment(root: Path, path: Path) -> tuple[str, float] | None:
    """``(camera, start s)`` of a file laid out as above under ``root``, or None for any other
    file (a stray file, a camera folder that is not a valid camera id, a name that is not a
    start time, or a start that does not match its date and hour folders)."""
    try:
        rel = Path(path).relative_to(root)
    except ValueError:
        return None
    if len(rel.parts) != 4:
        return None
    camera, day, hour, name = rel.parts
    m = _NAME.match(name)
    if m is None:
        return None
    try:
        validate_camera_id(camera)
    except ValueError:
        return None
    start = int(m.group(1)) / 1000
    if relative_path(camera, start) != rel:
        return None
    return camera, start


def segment_files(root: Path) -> Iterator[Path]:
    """Every ``*.mp4`` four levels under ``root``, sorted (by camera, then time)."""
    yield from sorted(Path(root).glob(f"*/*/*/*{SUFFIX}"))
