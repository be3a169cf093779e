"""Retention of the clip cache ``<recordings.dir>/.clips/`` (docs/recordings.md, "Retention").

Cached clips are derived data: any of them is cut again from the segments when asked for. A
retention pass deletes, oldest first (by the time each was last cut or served):

- ``age``: the clips not asked for in ``recordings.clip_cache_days``, and the parts of a cut
  that never finished (a console killed while cutting) older than an hour;
- space: when the recordings are over ``recordings.max_disk_gb`` or the free space is below
  ``recordings.min_free_gb``, cached clips go before any segment, as many as that takes.

As for segments, only regular files directly inside the real ``.clips`` folder are deleted: the
folder is opened with ``O_NOFOLLOW`` relative to ``recordings.dir`` (a symlinked ``.clips`` is
left alone), symlinks and folders inside it are never followed nor deleted, and each file is
unlinked relative to the folder's descriptor after checking it is a regular file.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

from pipeline.record.clips import CACHE_DIR

#: A cut of the cache (``<alert id or range name>.<digest>.<origin>.mp4``), the list of its gaps
#: beside it (``... .gaps.json``, deleted with it) and a cut in progress (``.<name>.<hex>.part``
#: and its ``.gaps``).
CLIP_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}\.[0-9a-f]{1,64}\.[0-9]{1,20}\.mp4$")
GAPS_NAME = re.compile(r"^([A-Za-z0-9_-]{1,64}\.[0-9a-f]{1,64}\.[0-9]{1,20})\.gaps\.json$")
PART_NAME = re.compile(r"^\.[A-Za-z0-9_-]{1,64}\.[0-9a-f]{1,64}\.(part|gaps)$")
#: A part older than this is a cut that never finished.
PART_MAX_AGE_S = 3600.0


@dataclass(frozen=True)
class CachedClip:
    name: str
    used_at: float  # when it was last cut or served (the later of its modified and access times)
    bytes: int
    part: bool


@dataclass
class ClipCacheReport:
    deleted: int = 0
    deleted_bytes: int = 0
    bytes_after: int = 0  # what the cache still holds

    def __bool__(self) -> bool:
        return self.deleted > 0


def _open_cache(root: Path) -> int | None:
    """A descriptor of the real ``root/.clips`` folder, or None (none there, or a symlink)."""
    try:
        rfd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return None
    try:
        return os.open(CACHE_DIR, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=rfd)
    except OSError:
        return None
    finally:
        os.close(rfd)


def _listing(fd: int) -> list[CachedClip]:
    out = []
    for name in os.listdir(fd):
        part = PART_NAME.match(name) is not None
        if not part and CLIP_NAME.match(name) is None:
            continue
        try:
            st = os.stat(name, dir_fd=fd, follow_symlinks=False)
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode):
            # last cut (modified) or served (its access time, set by cached_clip)
            out.append(CachedClip(name, max(st.st_mtime, st.st_atime), st.st_size, part))
    return sorted(out, key=lambda c: (c.used_at, c.name))


def _drop_orphan_gaps(fd: int) -> None:
    """The gap lists whose cut is gone (deleted here, by hand, or replaced by a newer cut)."""
    names = set(os.listdir(fd))
    for name in names:
        m = GAPS_NAME.match(name)
        if m and f"{m[1]}.mp4" not in names:
            with contextlib.suppress(OSError):
                os.unlink(name, dir_fd=fd)  # a symlink is unlinked itself, never followed


def prune_clip_cache(
    root: Path | str, now: float, max_age_s: float, free_bytes: int = 0
) -> ClipCacheReport:
    """Delete the cached clips older than ``max_age_s`` (unfinished parts: older than
    :data:`PART_MAX_AGE_S`), then the oldest others until ``free_bytes`` more went."""
    report = ClipCacheReport()
    fd = _open_cache(Path(root))
    if fd is None:
        return report
    try:
        files = _listing(fd)
        going = []
        for c in files:
            if now - c.used_at > (PART_MAX_AGE_S if c.part else max_age_s):
                going.append(c)
        freed = sum(c.bytes for c in going)
        for c in files:
            if freed >= free_bytes:
                break
            if c not in going and not c.part:  # a part may be a cut in progress
                going.append(c)
                freed += c.bytes
        for c in going:
            try:
                st = os.stat(c.name, dir_fd=fd, follow_symlinks=False)
                if not stat.S_ISREG(st.st_mode):
                    continue  # swapped for something else since it was listed
                os.unlink(c.name, dir_fd=fd)
            except OSError:
                continue  # gone already (cut again, or another pass)
            report.deleted += 1
            report.deleted_bytes += c.bytes
        _drop_orphan_gaps(fd)
        report.bytes_after = sum(c.bytes for c in files) - report.deleted_bytes
    finally:
        os.close(fd)
    return report


def clip_cache_bytes(root: Path | str) -> int:
    """What the clip cache holds (bytes)."""
    fd = _open_cache(Path(root))
    if fd is None:
        return 0
    try:
        return sum(c.bytes for c in _listing(fd))
    finally:
        os.close(fd)
