"""Retention: which segments go, and deleting them safely (docs/recordings.md, "Retention").

A pass looks at the segment files under ``recordings.dir`` (the files are the truth, as for the
rebuild of the index; the index adds each segment's end) and deletes, oldest first:

1. ``days``: segments that ended more than ``retain.continuous_days`` ago (per camera), unless
   they overlap an active hold (an alert's clip range, kept until ``retain.event_days`` after the
   alert: :class:`~pipeline.record.holds.HoldStore`);
2. ``disk_budget``: while the recordings' total bytes exceed ``recordings.max_disk_gb``, the
   oldest segments not held, then, if held segments alone exceed the budget, the oldest held ones
   (a full disk would stop every camera's recording: the budget wins over holds);
3. ``free_space``: the same, while the file system's free space is below ``recordings.min_free_gb``.

Each deletion removes the file and then its index entry. Paths are never taken from Redis: a
segment's file is found by walking ``recordings.dir`` without following symlinks, must be laid
out as a segment (:func:`~pipeline.record.layout.parse_segment`), and is unlinked relative to
directory descriptors opened with ``O_NOFOLLOW``, so neither a forged index entry nor a symlink
placed in the folder makes retention delete anything outside it. One log line per pass says how
much went and why.

A pass also prunes the clip cache ``.clips/`` (``clip_cache.py``): clips not asked for in
``recordings.clip_cache_days``, and, under space pressure, cached clips before any segment.
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.cameras.settings import RetainConfig
from pipeline.common.contracts import validate_camera_id
from pipeline.common.redis import RedisConfig, RedisKeys, redis_client
from pipeline.record.clip_cache import clip_cache_bytes, prune_clip_cache
from pipeline.record.config import RecordingsConfig
from pipeline.record.holds import Hold, HoldStore
from pipeline.record.index import SegmentIndex
from pipeline.record.layout import parse_segment, start_ms
from pipeline.record.metrics import (
    RECORDINGS_BYTES,
    RECORDINGS_DELETED,
    RECORDINGS_DELETED_BYTES,
    RECORDINGS_FREE_BYTES,
)
from pipeline.record.stream import error_text

log = logging.getLogger(__name__)

GB = 1024**3
DAY_S = 86400.0
#: The longest a segment can be (``segment_s`` is at most 600 s, plus a long keyframe interval):
#: a segment ends at most this long after its start, whatever the index says. One whose end the
#: index does not give (not indexed yet, Redis lost it) ends where the next one starts, or this
#: long after its start.
MAX_SEGMENT_S = 900.0
#: Hour and date folders emptied by retention are removed once they are this old (never the
#: folder a recorder may be about to write in).
TIDY_AFTER_S = 7200.0
REASONS = ("days", "disk_budget", "free_space")
_WHY = {
    "days": "past retain.continuous_days",
    "disk_budget": "over recordings.max_disk_gb",
    "free_space": "below recordings.min_free_gb free",
}

#: ``shutil.disk_usage``: a named tuple with ``total``, ``used`` and ``free`` bytes
DiskUsage = Callable[[str], Any]


@dataclass(frozen=True)
class SegmentFile:
    """A segment file found on disk (its path relative to ``recordings.dir``)."""

    camera: str
    rel: Path
    start: float
    end: float
    bytes: int
    indexed: bool
    held: bool = False


@dataclass(frozen=True)
class Deletion:
    segment: SegmentFile
    reason: str  # days | disk_budget | free_space


@dataclass
class RetentionReport:
    now: float
    dry_run: bool = False
    deleted: list[Deletion] = field(default_factory=list)  # oldest first (planned, in a dry run)
    failed: list[tuple[Path, str]] = field(default_factory=list)  # file, why it stayed
    kept_by_holds: int = 0  # segments past their days kept for an alert's clip
    bytes_before: int = 0
    free_before: int | None = None
    stale_entries: int = 0  # index entries whose file was already gone, forgotten
    clips_deleted: int = 0  # cached clips (.clips/) deleted
    clips_bytes: int = 0

    @property
    def deleted_bytes(self) -> int:
        return sum(d.segment.bytes for d in self.deleted)

    @property
    def bytes_after(self) -> int:
        return self.bytes_before - self.deleted_bytes

    def by_reason(self) -> dict[str, tuple[int, int]]:
        """reason -> (segments, bytes)."""
        out = {}
        for reason in REASONS:
            ds = [d for d in self.deleted if d.reason == reason]
            if ds:
                out[reason] = (len(ds), sum(d.segment.bytes for d in ds))
        return out

    def summary(self) -> str:
        verb = "would delete" if self.dry_run else "deleted"
        if not self.deleted:
            text = f"retention: {verb} nothing"
        else:
            held = sum(d.segment.held for d in self.deleted)
            why = "; ".join(f"{n} {_WHY[r]} ({mb(b)})" for r, (n, b) in self.by_reason().items())
            text = (
                f"retention: {verb} {len(self.deleted)} segments ({mb(self.deleted_bytes)}), "
                f"oldest first: {why}" + (f"; {held} of them held by alerts" if held else "")
            )
        text += f"; {mb(self.bytes_after)} recorded"
        if self.kept_by_holds:
            text += f"; {self.kept_by_holds} segments past their days kept for alerts' clips"
        if self.clips_deleted:
            text += (
                f"; {self.clips_deleted} cached clips deleted ({mb(self.clips_bytes)}: not asked "
                "for in recordings.clip_cache_days, or making room before segments)"
            )
        if self.failed:
            text += f"; {len(self.failed)} could not be deleted ({self.failed[0][1]})"
        return text


def mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def _dirs(path: str) -> Iterator[os.DirEntry]:
    """The real folders (never a symlink) in ``path``, sorted by name."""
    try:
        with os.scandir(path) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError:
        return
    for e in entries:
        if e.is_dir(follow_symlinks=False):
            yield e


def segment_files(root: Path) -> Iterator[tuple[str, Path, float, int]]:
    """``(camera, relative path, start s, bytes)`` of every regular file under ``root`` laid out as
    a segment; symlinks (to folders or files) are never followed nor listed."""
    root = Path(root)
    for cam in _dirs(str(root)):
        try:
            validate_camera_id(cam.name)
        except ValueError:
            continue
        for day in _dirs(cam.path):
            for hour in _dirs(day.path):
                try:
                    with os.scandir(hour.path) as it:
                        files = sorted(it, key=lambda e: e.name)
                except OSError:
                    continue
                for f in files:
                    if not f.is_file(follow_symlinks=False):
                        continue
                    rel = Path(cam.name, day.name, hour.name, f.name)
                    parsed = parse_segment(root, root / rel)
                    if parsed is None:
                        continue
                    try:
                        size = f.stat(follow_symlinks=False).st_size
                    except OSError:
                        continue
                    yield parsed[0], rel, parsed[1], size


class RefusedPath(Exception):
    """A path retention will not delete (not a segment's regular file inside the folder)."""


def unlink_segment(root: Path, rel: Path, tidy: bool = False) -> None:
    """Delete the segment ``root/rel``: each folder on the way opened with ``O_NOFOLLOW`` (a
    symlink anywhere below ``root`` is refused), the file unlinked only if it is a regular file.
    ``tidy`` removes its hour and date folders when they are left empty."""
    if parse_segment(Path(root), Path(root) / rel) is None:
        raise RefusedPath(f"{rel}: not laid out as a segment")
    *folders, name = Path(rel).parts
    fds = [os.open(root, os.O_RDONLY | os.O_DIRECTORY)]
    try:
        for part in folders:
            try:
                fds.append(
                    os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fds[-1])
                )
            except FileNotFoundError:
                raise  # gone already (another recorder's pass deleted and tidied it)
            except OSError as e:
                raise RefusedPath(f"{rel}: {part} is not a folder ({error_text(e)})") from None
        st = os.stat(name, dir_fd=fds[-1], follow_symlinks=False)
        if not stat.S_ISREG(st.st_mode):
            raise RefusedPath(f"{rel}: not a regular file")
        os.unlink(name, dir_fd=fds[-1])
        if tidy:  # hour folder in the date folder, then the date folder in the camera's
            for i in (2, 1):
                try:
                    os.rmdir(folders[i], dir_fd=fds[i])
                except OSError:
                    break  # not empty (or gone): fine
    finally:
        for fd in fds:
            os.close(fd)


def _covered(holds: list[Hold], start: float, end: float) -> bool:
    return any(h.covers(start, end) for h in holds)


class Retention:
    """One retention pass at a time over ``root`` (``recordings.dir``).

    ``retain_of(camera)`` gives a camera's :class:`RetainConfig` (a camera on disk that is no
    longer configured gets what it answers for an unknown id). ``disk_usage`` is
    :func:`shutil.disk_usage` (tests inject their own).
    """

    def __init__(
        self,
        root: Path | str,
        index: SegmentIndex,
        holds: HoldStore,
        retain_of: Callable[[str], RetainConfig],
        *,
        max_disk_gb: float | None = None,
        min_free_gb: float = 0.0,
        disk_usage: DiskUsage = shutil.disk_usage,
        clip_cache_days: float = 1.0,
    ) -> None:
        self.root = Path(root)
        self.index = index
        self.holds = holds
        self.retain_of = retain_of
        self.max_bytes = None if max_disk_gb is None else int(max_disk_gb * GB)
        self.min_free = int(min_free_gb * GB)
        self.disk_usage = disk_usage
        self.clip_max_age_s = clip_cache_days * DAY_S

    @classmethod
    def from_config(
        cls,
        recordings: RecordingsConfig,
        redis_cfg: RedisConfig,
        retain_of: Callable[[str], RetainConfig],
        **kw: Any,
    ) -> Retention:
        client, keys = redis_client(redis_cfg), RedisKeys(redis_cfg.key_prefix)
        return cls(
            recordings.dir,
            SegmentIndex(client, keys),
            HoldStore(client, keys),
            retain_of,
            max_disk_gb=recordings.max_disk_gb,
            min_free_gb=recordings.min_free_gb,
            clip_cache_days=recordings.clip_cache_days,
            **kw,
        )

    # -- what is there -----------------------------------------------------------------------
    def inventory(self, now: float) -> dict[str, list[SegmentFile]]:
        """The segment files per camera, oldest first, each with its end and whether an active
        hold covers it."""
        found: dict[str, list[tuple[Path, float, int]]] = {}
        for camera, rel, start, size in segment_files(self.root):
            found.setdefault(camera, []).append((rel, start, size))
        out: dict[str, list[SegmentFile]] = {}
        for camera, files in found.items():
            files.sort(key=lambda f: f[1])
            ends = self.index.ends(camera)
            holds = self.holds.active(camera, now)
            segs = []
            for i, (rel, start, size) in enumerate(files):
                latest = start + MAX_SEGMENT_S
                if i + 1 < len(files):
                    latest = min(latest, files[i + 1][1])
                ms = start_ms(start)
                end = ends.get(ms)
                # the index's end is hostile data: it may only place the end between the start
                # and the next segment's start (or the longest a segment can be)
                end = latest if end is None else min(max(end, start), latest)
                segs.append(
                    SegmentFile(
                        camera, rel, start, end, size, ms in ends, _covered(holds, start, end)
                    )
                )
            out[camera] = segs
        return out

    # -- what goes --------------------------------------------------------------------------
    def plan(self, now: float) -> tuple[RetentionReport, dict[str, list[SegmentFile]]]:
        report = RetentionReport(now)
        inventory = self.inventory(now)
        every = sorted(
            (s for segs in inventory.values() for s in segs), key=lambda s: (s.start, s.camera)
        )
        report.bytes_before = sum(s.bytes for s in every)
        going: dict[Path, str] = {}
        for s in every:
            cutoff = now - self.retain_of(s.camera).continuous_days * DAY_S
            if s.end <= cutoff:
                if s.held:
                    report.kept_by_holds += 1
                else:
                    going[s.rel] = "days"
        # the newest file of a camera that is not indexed yet may be the one being written
        writing = {segs[-1].rel for segs in inventory.values() if not segs[-1].indexed}
        rest = [s for s in every if s.rel not in going and s.rel not in writing]
        rest.sort(key=lambda s: (s.held, s.start, s.camera))  # held ones last
        total = report.bytes_before - sum(s.bytes for s in every if s.rel in going)
        if self.max_bytes is not None:
            while total > self.max_bytes and rest:
                s = rest.pop(0)
                going[s.rel] = "disk_budget"
                total -= s.bytes
        if self.min_free > 0:
            free = self.disk_usage(str(self.root)).free
            report.free_before = free
            free += report.bytes_before - total  # what this pass frees
            while free < self.min_free and rest:
                s = rest.pop(0)
                going[s.rel] = "free_space"
                free += s.bytes
        report.deleted = [Deletion(s, going[s.rel]) for s in every if s.rel in going]
        return report, inventory

    # -- a pass -----------------------------------------------------------------------------
    def run_once(self, now: float | None = None, dry_run: bool = False) -> RetentionReport:
        """One pass: plan, then delete oldest first (a dry run deletes nothing); logs one line
        when something went (or would go)."""
        now = time.time() if now is None else now
        if not self.root.is_dir():  # nothing recorded yet: made with the first camera recorded
            return RetentionReport(now, dry_run=dry_run)
        report, inventory = self.plan(now)
        report.dry_run = dry_run
        if not dry_run:
            clips = self._prune_clips(now, report)
            if clips and any(d.reason != "days" for d in report.deleted):
                report, inventory = self.plan(now)  # the clips made room: fewer segments go
            report.clips_deleted, report.clips_bytes = clips.deleted, clips.deleted_bytes
            done = []
            for d in report.deleted:  # oldest first
                s = d.segment
                try:
                    unlink_segment(self.root, s.rel, tidy=s.start < now - TIDY_AFTER_S)
                except FileNotFoundError:
                    pass  # gone already: its index entry goes too
                except (RefusedPath, OSError) as e:
                    report.failed.append(
                        (s.rel, str(e) if isinstance(e, RefusedPath) else error_text(e))
                    )
                    continue
                self.index.remove(s.camera, start_ms(s.start))
                RECORDINGS_DELETED.labels(d.reason).inc()
                RECORDINGS_DELETED_BYTES.labels(d.reason).inc(s.bytes)
                done.append(d)
            report.deleted = done
            report.stale_entries = self._forget_stale(inventory, now)
            for camera in inventory:
                self.holds.expire(camera, now)
            for camera, segs in inventory.items():
                gone = {d.segment.rel for d in done}
                RECORDINGS_BYTES.labels(camera).set(sum(s.bytes for s in segs if s.rel not in gone))
            if self.min_free > 0:
                RECORDINGS_FREE_BYTES.set(self.disk_usage(str(self.root)).free)
        if report.deleted or report.failed or report.clips_deleted:
            log.info("%s", report.summary())
        else:
            log.debug("%s", report.summary())
        return report

    def _prune_clips(self, now: float, report: RetentionReport):
        """The clip cache's old clips, then as many as the space the plan lacks (cached clips
        go before segments)."""
        days = sum(d.segment.bytes for d in report.deleted if d.reason == "days")
        need = 0
        if self.max_bytes is not None:
            segments = report.bytes_before - days
            need = segments + clip_cache_bytes(self.root) - self.max_bytes
        if self.min_free > 0 and report.free_before is not None:
            need = max(need, self.min_free - (report.free_before + days))
        return prune_clip_cache(self.root, now, self.clip_max_age_s, max(0, need))

    def _forget_stale(self, inventory: dict[str, list[SegmentFile]], now: float) -> int:
        """Drop index entries past their camera's days whose file is gone (deleted by hand)."""
        n = 0
        for camera in set(self.index.cameras()) | set(inventory):
            on_disk = {start_ms(s.start) for s in inventory.get(camera, [])}
            cutoff = now - self.retain_of(camera).continuous_days * DAY_S
            for ms, end in self.index.ends(camera).items():
                if ms not in on_disk and (end if end is not None else ms / 1000) <= cutoff:
                    self.index.remove(camera, ms)
                    n += 1
        return n


class RetentionLoop:
    """Runs :meth:`Retention.run_once` every ``interval_s`` on a thread of its own; a failing pass
    (Redis away, an unreadable folder) is logged once per failing spell and tried again at the
    next interval."""

    def __init__(
        self, retention: Retention, interval_s: float, clock: Callable[[], float] = time.time
    ) -> None:
        self.retention = retention
        self.interval_s = interval_s
        self.clock = clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failing = False
        self.passes = 0

    def run_once(self, now: float | None = None) -> RetentionReport | None:
        try:
            report = self.retention.run_once(self.clock() if now is None else now)
        except Exception as e:  # noqa: BLE001 - the loop must outlive any one pass
            if not self._failing:
                self._failing = True
                log.warning(
                    "retention pass failed (%s); trying again every %g s",
                    error_text(e),
                    self.interval_s,
                )
            return None
        if self._failing:
            self._failing = False
            log.info("retention passes work again")
        self.passes += 1
        return report

    def run(self) -> None:
        while not self._stop.is_set():
            self.run_once()
            self._stop.wait(self.interval_s)

    def start(self) -> RetentionLoop:
        self._thread = threading.Thread(target=self.run, name="retention", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 30.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
