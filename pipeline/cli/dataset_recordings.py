"""``vigil dataset collect --recordings CAMERA[,CAMERA] --since 24h [--around-alerts]``: sample
frames for retraining from what the cameras recorded (docs/retraining.md, "Collecting from
recordings").

Composition: the recording stage decodes its footage (:mod:`pipeline.record.frames`, segments
from the index) and the retraining stage's live policies decide which frames to keep
(:func:`detectors.retrain.offline_collection.collect_frames`); neither stage imports the other.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import redis

from alerts.store import AlertStore, parse_entry
from detectors.retrain.offline_collection import VideoCollectReport, collect_frames
from detectors.retrain.sampling import Collector
from pipeline.cameras.spec import CameraSpec
from pipeline.cli.support import comma_list
from pipeline.common.contracts import validate_camera_id
from pipeline.common.errors import InputNotFound, UsageError, UserError
from pipeline.config import VigilConfig
from pipeline.console.clips import clip_settings
from pipeline.record.clips import MAX_CLIP_S, UnusableAlert, clip_range
from pipeline.record.export import iso
from pipeline.record.frames import FrameReadStats, iter_frames, merge_ranges
from pipeline.record.index import SegmentIndex

log = logging.getLogger(__name__)

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNIT_S = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
MAX_SINCE_S = 366 * 86400.0


def parse_since(text: str) -> float:
    """``30m``, ``24h``, ``7d``, ``90s`` as seconds; :class:`UsageError` naming the text for
    anything else (no bare numbers, no negative or zero spans, at most a year)."""
    m = _DURATION.match(text.strip()) if isinstance(text, str) else None
    seconds = float(m.group(1)) * _UNIT_S[m.group(2)] if m else math.nan
    if not (0 < seconds <= MAX_SINCE_S):
        raise UsageError(
            f"--since {text!r}: expected a duration up to a year, a number and a unit "
            "(s, m, h or d), e.g. 30m, 24h or 7d"
        )
    return seconds


def parse_cameras(text: str) -> list[str]:
    cams = comma_list(text or "")
    if not cams:
        raise UsageError("--recordings: expected camera ids, comma-separated (e.g. door,yard)")
    for cam in cams:
        try:
            validate_camera_id(cam)
        except ValueError:
            raise UsageError(f"--recordings: {cam!r} is not a camera id") from None
    return list(dict.fromkeys(cams))


def _float(value: Any) -> float | None:
    try:
        t = float(value)
    except (TypeError, ValueError):
        return None
    return t if math.isfinite(t) and t >= 0 else None


def alert_range(
    alert: Mapping[str, Any], aid: str, cameras: Mapping[str, CameraSpec], now: float
) -> tuple[float, float] | None:
    """The range of an alert's clip: its hash's ``clip_from``/``clip_to`` (the recorder wrote
    them), else ``[started_at - pre_s, (ended_at or now) + post_s]`` with its camera's
    ``record:`` settings; None when the hash cannot place it (a damaged or forged alert)."""
    t0, t1 = _float(alert.get("clip_from")), _float(alert.get("clip_to"))
    if t0 is not None and t1 is not None and t0 < t1 <= t0 + MAX_CLIP_S:
        return t0, t1
    rc = clip_settings(cameras, str(alert.get("camera_id") or ""))
    try:
        rng = clip_range(alert, rc.pre_s, rc.post_s, now, alert_id=aid)
    except UnusableAlert as e:
        log.warning("--around-alerts: %s; skipped", e)
        return None
    return rng.start, rng.end


def alert_ranges(
    cfg: VigilConfig, camera: str, t0: float, now: float, cameras: Mapping[str, CameraSpec]
) -> list[tuple[float, float]]:
    """The clip ranges of ``camera``'s alerts that overlap ``[t0, now]``, from the camera's
    alert stream in Redis (events written since an hour before ``t0``: the longest clip)."""
    store = AlertStore(cfg.redis)
    min_id = f"{max(0, int((t0 - MAX_CLIP_S) * 1000))}-0"
    ids: list[str] = []
    for _, fields in store.client.xrange(store.stream_key(camera), min=min_id, max="+"):
        aid = parse_entry(fields).get("id")
        if isinstance(aid, str) and aid not in ids:
            ids.append(aid)
    out = []
    for aid in ids:
        alert = store.get_alert(aid)
        if alert is None or alert.get("camera_id") != camera:
            continue
        rng = alert_range(alert, aid, cameras, now)
        if rng is not None and rng[1] > t0 and rng[0] < now:
            out.append((max(rng[0], t0), min(rng[1], now)))
    return merge_ranges(out)


def _cameras(cfg: VigilConfig) -> Mapping[str, CameraSpec]:
    """The camera definitions (for ``pre_s``/``post_s``): the registry, else the config's."""
    from pipeline.cameras.registry import read_registry  # noqa: PLC0415 (Kafka client)

    try:
        return read_registry(cfg.kafka, timeout_s=10)
    except Exception as e:  # Kafka away: the config's definitions, then the defaults
        log.warning(
            "camera registry unreadable (%s): pre_s/post_s from the config or the defaults",
            type(e).__name__,
        )
        return {c.id: c for c in cfg.cameras}


def collect_recordings(
    cfg: VigilConfig,
    collector: Collector,
    cameras: list[str],
    since_s: float,
    *,
    around_alerts: bool = False,
    detector=None,
    analyze_fps: float = 2.0,
    now: float | None = None,
) -> list[tuple[VideoCollectReport, FrameReadStats]]:
    """Sample the recordings of ``cameras`` over the last ``since_s`` (only their alerts' clip
    ranges with ``around_alerts``) into ``collector``; :class:`InputError` naming a camera that
    has no recordings indexed, or none in the range."""
    now = time.time() if now is None else now
    t0 = now - since_s
    root = Path(cfg.recordings.dir)
    try:
        index = SegmentIndex.from_config(cfg.redis)
        indexed = set(index.cameras())
        plan: list[tuple[str, list[tuple[float, float]]]] = []
        defs: Mapping[str, CameraSpec] | None = None
        for cam in cameras:
            if cam not in indexed:
                known = ", ".join(sorted(indexed)[:20]) or "none"
                raise InputNotFound(
                    f"camera {cam!r}: no recordings indexed (cameras with recordings: {known})"
                )
            if not index.segments(cam, t0, now):
                raise InputNotFound(
                    f"camera {cam!r}: nothing recorded from {iso(t0)} to {iso(now)}"
                )
            ranges = [(t0, now)]
            if around_alerts:
                defs = _cameras(cfg) if defs is None else defs
                ranges = alert_ranges(cfg, cam, t0, now, defs)
                if not ranges:
                    raise InputNotFound(
                        f"camera {cam!r}: no alerts from {iso(t0)} to {iso(now)} (--around-alerts)"
                    )
            plan.append((cam, ranges))
        out = []
        every_s = 1.0 / analyze_fps if analyze_fps > 0 else 0.0
        for cam, ranges in plan:
            stats = FrameReadStats()

            def frames(cam=cam, ranges=ranges, stats=stats) -> Iterator[tuple]:
                for f in iter_frames(index, root, cam, ranges, every_s=every_s, stats=stats):
                    yield f.image, f.ts, {"recording": {"segment": round(f.segment_start, 3)}}

            rep = collect_frames(collector, cam, frames(), detector=detector)
            rep.frames_read = stats.decoded
            out.append((rep, stats))
        return out
    except redis.RedisError as e:
        raise UserError(f"Redis error ({type(e).__name__}): {e}") from None


def report_line(rep: VideoCollectReport, stats: FrameReadStats, analyze_fps: float) -> str:
    reasons = ", ".join(f"{k} {v}" for k, v in sorted(rep.by_reason.items())) or "none"
    skipped = f", {stats.skipped} unreadable skipped" if stats.skipped else ""
    return (
        f"{rep.camera}: {rep.frames_read} frame(s) read from {stats.segments} segment(s)"
        f"{skipped}, {rep.frames_analyzed} analysed ({analyze_fps:g} per s), {rep.saved} kept "
        f"({reasons}); dropped: {rep.dropped()}"
    )


def check_args(args: Any) -> None:
    """``--recordings`` or videos, not both; the options that only make sense with one."""
    if args.recordings is not None and args.videos:
        raise UsageError("give either videos or --recordings CAMERA[,CAMERA], not both")
    if args.recordings is None:
        if not args.videos:
            raise UsageError("nothing to collect from: give videos or --recordings CAMERA")
        for opt, name in ((args.since, "--since"), (args.around_alerts, "--around-alerts")):
            if opt:
                raise UsageError(f"{name} goes with --recordings")
    elif args.start is not None or args.camera:
        raise UsageError("--start and --camera go with videos, not --recordings")
