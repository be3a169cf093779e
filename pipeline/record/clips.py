"""The clip of an alert: ``[started_at - pre_s, (ended_at, or now while active) + post_s]`` of its
camera's recording, cut by :mod:`pipeline.record.export` (remuxed from the keyframe at or before
the start, never decoded) and cached under ``recordings.dir/.clips``.

The alert is Redis data, read as hostile input: its id must be an id before it names a file, its
camera a camera id, its times finite and in order. A clip covers at most :data:`MAX_CLIP_S` from
its start (``vigil recordings export`` cuts any range).

The cache: ``<recordings.dir>/.clips/<alert id>.<digest>.mp4``, the digest taken over what the
clip is cut from (its range, clipped to the footage indexed, and the segments' starts, ends and
sizes). A clip is cut again when that changes: an active alert's range grew into new segments, it
ended, a segment was added, rebuilt or deleted; the older file of the alert is then removed. A
file of the cache can be deleted at any time: it is cut again when asked for. Retention deletes
the clips not asked for in ``recordings.clip_cache_days`` (serving a cached clip sets its access
time; its modification time stays when it was cut), and cached
clips first when space is short (``clip_cache.py``).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import os
import re
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


def _drop_cached(cache: Path, alert_id: str, keep: Path | None = None) -> None:
    # ids have no '.', digests are hex: "<id>.*.mp4" names this alert's files only
    for old in cache.glob(f"{alert_id}.*.mp4"):
        if old != keep:
            old.unlink(missing_ok=True)


def cached_clip(
    index: SegmentIndex,
    root: Path,
    rng: ClipRange,
    tolerance_s: float = DEFAULT_GAP_TOLERANCE_S,
) -> Path:
    """The clip of ``rng`` as a file of the cache, cut (again) when what it is cut from changed;
    :class:`ClipUnavailable` (and the alert's cached files removed) when its footage is not
    recorded, :class:`InputError` when the cache cannot be written."""
    validate_alert_id(rng.alert_id)
    cache = Path(root) / CACHE_DIR
    segments = index.segments(rng.camera_id, rng.start, rng.end)
    if not segments:
        if cache.is_dir():
            _drop_cached(cache, rng.alert_id)
        raise _unavailable(rng)
    path = cache / f"{rng.alert_id}.{_digest(rng, segments)}.mp4"
    if path.is_file():
        with contextlib.suppress(OSError):  # asked for now: retention keeps it clip_cache_days
            os.utime(path, ns=(time.time_ns(), path.stat().st_mtime_ns))  # its access time
        return path
    try:
        cache.mkdir(mode=0o750, exist_ok=True)
    except OSError as e:
        raise InputError(
            f"clip cache {cache}: cannot create it ({e.strerror or type(e).__name__})"
        ) from None
    part = cache / f".{rng.alert_id}.{uuid.uuid4().hex}.part"
    try:
        cut(root, segments, rng.start, rng.end, part, tolerance_s)
        os.replace(part, path)
    except NothingRecorded:
        _drop_cached(cache, rng.alert_id)
        raise _unavailable(rng) from None
    finally:
        part.unlink(missing_ok=True)
    _drop_cached(cache, rng.alert_id, keep=path)
    log.debug("clip of alert %s cut into %s", rng.alert_id, path)
    return path
