"""The rule preview's pictures: each would-be alert's triggering frame with the alert drawn on it
(the snapshot drawing of :mod:`alerts.snapshots`), from one of two places:

- ``live``: the frame the ingest worker keeps in Redis (``redis.frame_ttl_s``, 120 s by default:
  recent alerts only);
- ``recording``: once that frame has expired, the frame of the camera's recording at the alert's
  start, from a frame source the caller gives (the console wires the recording stage's
  ``pipeline.record.still``: the alerts package never reads recordings itself). Looking a moment
  up in the recordings' index is cheap; decoding its frame is not: at most ``max_recorded``
  frames are decoded per preview (the rest say so).

An alert without a picture says why in ``snapshot_note``. Best effort: Redis down, a recording
that cannot be read, or the preview's deadline reached leave pictures out, never the preview.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import cv2
import numpy as np
import redis

from alerts.config import AlertsSettings
from alerts.events import AlertEvent
from alerts.snapshots import render_image, render_snapshot
from pipeline.common.redis import RedisKeys, redis_client

__all__ = ["FrameSource", "add_snapshots"]

log = logging.getLogger(__name__)

#: ``(camera_id, t) -> decode | None``: where the camera's recording holds the moment ``t``
#: (seconds since 1970, the ``capture_ts`` clock), a function that decodes the frame shown then
#: (BGR pixels; None when its file cannot be read); None when that moment is not recorded.
FrameSource = Callable[[str, float], "Callable[[], np.ndarray | None] | None"]

#: Pictures from recordings are scaled down to this width at most (a 4K main stream would make
#: megabyte JPEGs for a list of thumbnails).
MAX_WIDTH = 1280

NOTE_EXPIRED = "frame expired"  # no frame source: the live frame is all there is
NOTE_NOT_RECORDED = "not recorded"  # neither a live frame nor a recording of that moment
NOTE_NO_TIME = "time was up"
NOTE_UNAVAILABLE = "recording unavailable"  # the recordings' index cannot be read
NOTE_UNREADABLE = "recording unreadable"  # its file cannot be decoded (logged)


class _Pair(Protocol):
    started: AlertEvent


def add_snapshots(
    cfg: AlertsSettings,
    pairs: Sequence[_Pair],
    alerts: list[dict[str, Any]],
    quality: int,
    deadline: float,
    frames_from: FrameSource | None = None,
    max_recorded: int = 50,
) -> None:
    """Set ``snapshot`` (JPEG bytes or None), ``snapshot_source`` (``"live"``,
    ``"recording"`` or None) and ``snapshot_note`` (why there is none) of each alert of
    ``alerts`` (one per pair of ``pairs``, same order)."""
    for alert in alerts:
        alert.update(snapshot=None, snapshot_source=None, snapshot_note=NOTE_EXPIRED)
    if not pairs:
        return
    live = _live_frames(cfg, pairs)
    recorded = 0
    out_of_time = False
    source_failed = False
    for p, alert, frame in zip(pairs, alerts, live, strict=True):
        if out_of_time or time.monotonic() > deadline:
            if not out_of_time:
                log.warning("rule preview: time is up, the remaining pictures are left out")
                out_of_time = True
            alert["snapshot_note"] = NOTE_NO_TIME
            continue
        drawn = p.started.to_dict()
        if frame is not None:
            try:
                jpeg = render_snapshot(frame, drawn, quality)
            except Exception as e:  # a bad JPEG must not fail the preview
                log.warning("rule preview: snapshot of alert %s failed: %s", p.started.id, e)
                jpeg = None
            if jpeg is not None:
                alert.update(snapshot=jpeg, snapshot_source="live", snapshot_note=None)
                continue
        if frames_from is None:
            continue
        if source_failed:
            alert["snapshot_note"] = NOTE_UNAVAILABLE
            continue
        try:
            decode = frames_from(p.started.camera_id, p.started.started_at)
        except Exception as e:  # Redis away (the index), a bug: the preview stands
            log.warning("rule preview: no pictures from recordings (%s: %s)", type(e).__name__, e)
            source_failed = True
            alert["snapshot_note"] = NOTE_UNAVAILABLE
            continue
        if decode is None:
            alert["snapshot_note"] = NOTE_NOT_RECORDED
            continue
        if recorded >= max_recorded:
            alert["snapshot_note"] = (
                f"not loaded: pictures from recordings are limited to {max_recorded} per preview"
            )
            continue
        recorded += 1
        image = decode()
        if image is None:
            alert["snapshot_note"] = NOTE_UNREADABLE
            continue
        jpeg = render_image(_fit(image), drawn, quality)
        if jpeg is not None:
            alert.update(snapshot=jpeg, snapshot_source="recording", snapshot_note=None)


def _live_frames(cfg: AlertsSettings, pairs: Sequence[_Pair]) -> list[bytes | None]:
    """The triggering frames still in Redis (None where expired, or all None when Redis is
    away)."""
    none: list[bytes | None] = [None] * len(pairs)
    keys = RedisKeys(cfg.redis.key_prefix)
    try:
        client = redis_client(cfg.redis)
    except Exception as e:  # a bad URL is the config's problem, not the preview's
        log.warning("rule preview: no live frames: %s", e)
        return none
    try:
        pipe = client.pipeline(transaction=False)
        for p in pairs:
            s = p.started
            pipe.get(keys.frame(s.camera_id, s.epoch, s.frame_seq))
        return list(pipe.execute())
    except (redis.RedisError, OSError) as e:
        log.warning("rule preview: no live frames, Redis unavailable (%s)", type(e).__name__)
        return none
    finally:
        client.close()


def _fit(image: np.ndarray) -> np.ndarray:
    """``image`` scaled down to :data:`MAX_WIDTH` pixels wide at most."""
    h, w = image.shape[:2]
    if w <= MAX_WIDTH:
        return image
    return cv2.resize(image, (MAX_WIDTH, round(h * MAX_WIDTH / w)), interpolation=cv2.INTER_AREA)
