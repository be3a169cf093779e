"""A reviewed alert's clip frames for the dataset (``review.frames`` above 1): the recording stage
decodes the frames (:func:`pipeline.record.frames.frames_at`), the retraining stage adds them
(:func:`detectors.retrain.review_frames.add_review_clip_frames`); the console composes the two.

The alert is Redis data: its camera and times are checked (:func:`alert_clip_range`) before they
choose any footage, and the frames are never taken from outside the alert's clip range.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import redis

from detectors.retrain.dataset import DatasetError
from detectors.retrain.review_frames import add_review_clip_frames, spread_times
from pipeline.cameras.spec import CameraSpec
from pipeline.console.clips import alert_clip_range
from pipeline.record.clips import UnusableAlert
from pipeline.record.frames import frames_at
from pipeline.record.index import SegmentIndex

if TYPE_CHECKING:
    from pipeline.config import VigilConfig

log = logging.getLogger(__name__)

#: How far from a chosen time the nearest recorded frame may be.
TOLERANCE_S = 0.5


def trigger_time(alert: Mapping[str, Any]) -> float:
    """When the alert's triggering frame was captured: ``updated_at`` while the alert is
    ``started`` (the started message's frame), else ``started_at`` (a later message replaced
    ``updated_at``)."""
    t = alert.get("updated_at") if alert.get("status") == "started" else None
    return float(t if isinstance(t, int | float) else alert["started_at"])


def add_clip_frames(
    cfg: VigilConfig,
    index: SegmentIndex,
    cameras: Mapping[str, CameraSpec],
    alert: Mapping[str, Any],
    alert_id: str,
    verdict: str,
    reviewer: str,
    now: float | None = None,
) -> tuple[list[str], str | None]:
    """Add ``review.frames - 1`` frames of the alert's clip to ``collection.dir``: the images
    added, and a sentence for the review's answer (None when ``review.frames`` is 1)."""
    n = cfg.review.frames
    if n <= 1:
        return [], None
    now = time.time() if now is None else now
    try:
        rng = alert_clip_range(cameras, alert, alert_id, now)
        trigger = trigger_time(alert)
        started = float(alert["started_at"])
        ended = alert.get("ended_at")
        end = float(ended) if isinstance(ended, int | float) else now
        times = spread_times(started, end, trigger, n, cfg.review.min_span_s)
        times = [min(max(t, rng.start), rng.end) for t in times]
        found = frames_at(index, Path(cfg.recordings.dir), rng.camera_id, times, TOLERANCE_S)
        frames = [(f.image, f.ts) for f in found if f is not None]
        res = add_review_clip_frames(
            cfg.collection.dir,
            frames,
            camera_id=rng.camera_id,
            alert_id=alert_id,
            verdict=verdict,
            reviewer=reviewer,
            trigger_ts=trigger,
            policy=cfg.collection.policy_for(rng.camera_id),
            disk_budget_mb=cfg.collection.disk_budget_mb,
            jpeg_quality=cfg.collection.jpeg_quality,
        )
    except (UnusableAlert, DatasetError, KeyError, TypeError, ValueError) as e:
        note = f"no frames of its clip added: {e}"
        log.warning("review of alert %s: %s", alert_id, note)
        return [], note
    except (redis.RedisError, OSError) as e:
        note = f"no frames of its clip added ({type(e).__name__}; see the log)"
        log.warning("review of alert %s: clip frames not added: %s", alert_id, e)
        return [], note
    missing = len(times) - len(frames)
    note = f"{len(res.added)} frame(s) of its clip added, unlabelled"
    if res.duplicates:
        note += f"; {res.duplicates} near-duplicate(s) skipped"
    if missing:
        note += f"; {missing} not recorded"
    return res.added, note
