"""The clip of an alert: ``[started_at - pre_s, (ended_at, or now while active) + post_s]`` of its
camera's recording, cut by :mod:`pipeline.record.export` (remuxed from the keyframe at or before
the start, never decoded) and cached under ``recordings.dir/.clips``.

The alert is Redis data, read as hostile input: its id must be an id before it names a file, its
camera a camera id, its times finite and in order. A clip covers at most :data:`MAX_CLIP_S` from
its start (``vigil recordings export`` cuts any range).

The cache: ``<recordings.dir>/.clips/<alert id>.<digest>.<origin>.mp4``, the digest taken over
what the clip is cut from (its range, clipped to the footage indexed, and the segments' starts, ends and
sizes). A clip is cut again when that changes: an active alert's range grew into new segments, it
ended, a segment was added, rebuilt or deleted; the older file of the alert is then removed. A
file of the cache can be deleted at any time: it is cut again when asked for. ``<origin>`` is the
wall time (in microseconds since 1970) of the file's time 0 (:attr:`ExportResult.origin`), so
that a player's time in a cached clip maps to the ``capture_ts`` clock without cutting it again.

Beside each cut, ``<name>.<digest>.<origin>.gaps.json`` keeps the gaps of its range
(:attr:`CachedCut.gaps`): stretches not recorded, and those of segments found damaged while
cutting; a cut without its list is cut again.

A range of a camera's recording (the console's timeline) is cached the same way by
:func:`cached_range`, under ``range-<camera digest>-<from ms>-<to ms>``; at most
:data:`RANGE_CACHE_FILES` such files are kept (the least recently cut go first).

Retention deletes the cuts not asked for in ``recordings.clip_cache_days`` (serving a cached
cut sets its access time; its modification time stays when it was cut), and cached cuts first
when space is short (``clip_cache.py``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import re
import stat
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.common.contracts import validate_camera_id
from pipeline.common.errors import InputError, InputNotFound
from pipeline.record.export import ExportResult, NothingRecorded, cut, iso
from pipeline.record.index import DEFAULT_GAP_TOLERANCE_S, SegmentIndex
from pipeline.record.segmenter import Segment

log = logging.getLogger(__name__)

#: Alert ids that may name a clip file: the alert service's are 20 hex digits.
ALERT_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
#: The longest clip (s): an alert that never ended (or a forged one) cannot cut hours of footage.
MAX_CLIP_S = 3600.0
CACHE_DIR = ".clips"
#: Cuts of ranges kept in the cache (each a few minutes of a camera's footage).
RANGE_CACHE_FILES = 16


class ClipUnavailable(InputNotFound):
    """The alert's footage is not (or no longer) recorded."""


class UnusableAlert(InputError):
    """An alert whose fields cannot place a clip (a forged or damaged hash)."""


@dataclass(frozen=True, slots=True)
class ClipRange:
    """What to cut for one alert: ``[start, end]`` of ``camera_id`` (seconds since 1970)."""

    alert_id: str
    camera_id: str
    start: float
    end: float
    active: bool  # the alert has not ended: the clip grows with the recording


def validate_alert_id(alert_id: Any) -> str:
    if not isinstance(alert_id, str) or not ALERT_ID.match(alert_id):
        raise UnusableAlert(f"{alert_id!r} is not an alert id")
    return alert_id


def _time(alert: Mapping[str, Any], name: str) -> float | None:
    v = alert.get(name)
    if v is None or v == "":
        return None
    try:
        t = float(v)
    except (TypeError, ValueError):
        raise UnusableAlert(f"alert {alert.get('id')!r}: {name} is not a time") from None
    if not math.isfinite(t) or t < 0:
        raise UnusableAlert(f"alert {alert.get('id')!r}: {name} is not a time")
    return t


def clip_range(
    alert: Mapping[str, Any], pre_s: float, post_s: float, now: float, alert_id: str | None = None
) -> ClipRange:
    """The range of ``alert``'s clip (its stored fields: ``id``, ``camera_id``, ``started_at``,
    ``ended_at``); ``now`` ends it while the alert is active. :class:`UnusableAlert` when the
    fields cannot place it."""
    aid = validate_alert_id(alert_id if alert_id is not None else alert.get("id"))
    try:
        camera = validate_camera_id(alert.get("camera_id"))  # type: ignore[arg-type]
    except ValueError:
        raise UnusableAlert(f"alert {aid}: camera_id is not a camera id") from None
    started = _time(alert, "started_at")
    if started is None:
        raise UnusableAlert(f"alert {aid}: no started_at")
    ended = _time(alert, "ended_at")
    if ended is not None and ended < started:
        raise UnusableAlert(f"alert {aid}: ended_at is before started_at")
    t0 = started - pre_s
    t1 = (ended if ended is not None else max(now, started)) + post_s
    return ClipRange(aid, camera, t0, min(t1, t0 + MAX_CLIP_S), ended is None)


def _unavailable(rng: ClipRange) -> ClipUnavailable:
    return ClipUnavailable(
        f"alert {rng.alert_id}: footage expired or not recorded (camera {rng.camera_id}, "
        f"{iso(rng.start)} to {iso(rng.end)})"
    )


def _digest(rng: ClipRange, segments: list[Segment]) -> str:
    """What the clip is cut from: its range (its end clipped to the footage indexed, so an
    active alert's clip stays cached until a segment is added) and the segments."""
    end = min(rng.end, max(s.end for s in segments))
    parts = [rng.camera_id, repr(rng.start), repr(end)]
    parts += [f"{s.start!r}/{s.end!r}/{s.bytes}" for s in segments]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:20]


def write_clip(
    index: SegmentIndex,
    root: Path,
    rng: ClipRange,
    out: Path,
    tolerance_s: float = DEFAULT_GAP_TOLERANCE_S,
) -> ExportResult:
    """Cut the clip of ``rng`` into ``out``; :class:`ClipUnavailable` when none of its footage
    is recorded (any more)."""
    segments = index.segments(rng.camera_id, rng.start, rng.end)
    if not segments:
        raise _unavailable(rng)
    try:
        return cut(root, segments, rng.start, rng.end, out, tolerance_s)
    except NothingRecorded:
        raise _unavailable(rng) from None


@dataclass(frozen=True, slots=True)
class CachedCut:
    """A cut in the cache: the file, and the wall time of its time 0 (a player at time ``v``
    shows the frame of ``origin + v`` on the ``capture_ts`` clock)."""

    path: Path
    origin: float
    gaps: tuple[tuple[float, float], ...] = ()  # stretches of the range not in the file


def gaps_file(cut_file: Path) -> Path:
    """The file beside a cached cut that lists its gaps."""
    return cut_file.with_name(f"{cut_file.stem}.gaps.json")


def cached_gaps(cut_file: Path) -> tuple[tuple[float, float], ...] | None:
    """The gaps a cached cut's list holds; None when the list is missing or unreadable (the
    cache is Vigil's own, but a file there may be deleted or damaged any time: cut again)."""
    try:
        raw = json.loads(gaps_file(cut_file).read_text(encoding="utf-8"))
        gaps = [(float(a), float(b)) for a, b in raw["gaps"]]
    except (OSError, ValueError, TypeError, KeyError):
        return None
    return tuple((a, b) for a, b in gaps if math.isfinite(a) and math.isfinite(b) and a < b)


def _drop_cached(cache: Path, alert_id: str, keep: Path | None = None) -> None:
    # ids have no '.', digests are hex: "<id>.*.mp4" names this alert's files only
    for old in cache.glob(f"{alert_id}.*.mp4"):
        if old != keep:
            old.unlink(missing_ok=True)
            gaps_file(old).unlink(missing_ok=True)


def cached_clip(
    index: SegmentIndex,
    root: Path,
    rng: ClipRange,
    tolerance_s: float = DEFAULT_GAP_TOLERANCE_S,
) -> Path:
    """The clip of ``rng`` as a file of the cache, cut (again) when what it is cut from changed;
    :class:`ClipUnavailable` (and the alert's cached files removed) when its footage is not
    recorded, :class:`InputError` when the cache cannot be written."""
    return cached_alert_clip(index, root, rng, tolerance_s).path


def cached_alert_clip(
    index: SegmentIndex,
    root: Path,
    rng: ClipRange,
    tolerance_s: float = DEFAULT_GAP_TOLERANCE_S,
) -> CachedCut:
    """:func:`cached_clip`, with the clip's origin."""
    validate_alert_id(rng.alert_id)
    return _cached(index, root, rng, rng.alert_id, lambda: _unavailable(rng), tolerance_s)


def range_name(camera_id: str, t0: float, t1: float) -> str:
    """The cache name of ``[t0, t1]`` of a camera's recording (a camera id may hold '.',
    which the cache's names keep for the digest)."""
    cam = hashlib.sha256(camera_id.encode()).hexdigest()[:12]
    return f"range-{cam}-{int(t0 * 1000)}-{int(t1 * 1000)}"


def cached_range(
    index: SegmentIndex,
    root: Path,
    camera_id: str,
    t0: float,
    t1: float,
    tolerance_s: float = DEFAULT_GAP_TOLERANCE_S,
) -> CachedCut:
    """``[t0, t1]`` of ``camera_id``'s recording (at most :data:`MAX_CLIP_S`) as a file of the
    cache; :class:`ClipUnavailable` when none of it is recorded."""
    camera_id = validate_camera_id(camera_id)
    if not (math.isfinite(t0) and math.isfinite(t1) and 0 <= t0 < t1 <= t0 + MAX_CLIP_S):
        raise InputError(f"[{t0}, {t1}] is not a range of at most {MAX_CLIP_S:g} s")
    rng = ClipRange(range_name(camera_id, t0, t1), camera_id, t0, t1, False)

    def missing() -> ClipUnavailable:
        return ClipUnavailable(
            f"camera {camera_id}: nothing recorded between {iso(t0)} and {iso(t1)} "
            "(expired or not recorded)"
        )

    got = _cached(index, root, rng, rng.alert_id, missing, tolerance_s)
    _trim_ranges(got.path.parent, got.path)
    return got


def _trim_ranges(cache: Path, keep: Path) -> None:
    """Only the :data:`RANGE_CACHE_FILES` most recently cut ranges stay."""
    found = []
    for p in cache.glob("range-*.mp4"):
        try:
            found.append((p.stat().st_mtime_ns, p))
        except OSError:
            continue
    found.sort(reverse=True)
    for _, p in found[RANGE_CACHE_FILES:]:
        if p != keep:
            p.unlink(missing_ok=True)
            gaps_file(p).unlink(missing_ok=True)


def _regular(path: Path) -> bool:
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def _origin(path: Path) -> float | None:
    """The origin a cached file's name holds (its last part before ``.mp4``)."""
    tail = path.name[: -len(".mp4")].rpartition(".")[2]
    return int(tail) / 1e6 if tail.isdigit() and len(tail) <= 20 else None


def _cached(
    index: SegmentIndex,
    root: Path,
    rng: ClipRange,
    name: str,
    unavailable,
    tolerance_s: float,
) -> CachedCut:
    cache = Path(root) / CACHE_DIR
    segments = index.segments(rng.camera_id, rng.start, rng.end)
    if not segments:
        if cache.is_dir():
            _drop_cached(cache, name)
        raise unavailable()
    if cache.is_symlink():  # what is served comes from recordings.dir only
        raise InputError(f"clip cache {cache}: a symbolic link, not used")
    digest = _digest(rng, segments)
    for path in sorted(cache.glob(f"{name}.{digest}.*.mp4")) if cache.is_dir() else []:
        origin = _origin(path)
        gaps = cached_gaps(path)
        # a regular file, never a link planted in the cache (it would be served as the clip)
        if origin is not None and gaps is not None and _regular(path):
            with contextlib.suppress(OSError):  # asked for now: retention keeps it clip_cache_days
                os.utime(path, ns=(time.time_ns(), path.stat().st_mtime_ns))  # its access time
            return CachedCut(path, origin, gaps)
    try:
        cache.mkdir(mode=0o750, exist_ok=True)
    except OSError as e:
        raise InputError(
            f"clip cache {cache}: cannot create it ({e.strerror or type(e).__name__})"
        ) from None
    part = cache / f".{name}.{uuid.uuid4().hex}.part"
    part_gaps = part.with_suffix(".gaps")
    try:
        result = cut(root, segments, rng.start, rng.end, part, tolerance_s)
        origin = result.origin if result.origin is not None else result.start
        path = cache / f"{name}.{digest}.{round(origin * 1e6)}.mp4"
        part_gaps.write_text(json.dumps({"gaps": result.gaps}), encoding="utf-8")
        os.replace(part_gaps, gaps_file(path))  # first: a cut without its list is cut again
        os.replace(part, path)
    except NothingRecorded:
        _drop_cached(cache, name)
        raise unavailable() from None
    except OSError as e:
        raise InputError(
            f"clip cache {cache}: cannot write there ({e.strerror or type(e).__name__})"
        ) from None
    finally:
        part.unlink(missing_ok=True)
        part_gaps.unlink(missing_ok=True)
    _drop_cached(cache, name, keep=path)
    log.debug("%s cut into %s", name, path)
    gaps = tuple((float(a), float(b)) for a, b in result.gaps)
    return CachedCut(path, round(origin * 1e6) / 1e6, gaps)
