"""The clip settings of an alert's camera, resolved in one place for the console and
``vigil clips``: :func:`clip_settings` (issue 24: the per-camera ``record:`` settings move into
the camera definitions; this function is where they will be read)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pipeline.record.clips import ClipRange, clip_range
from pipeline.record.config import RecordConfig

if TYPE_CHECKING:  # the root config imports the console's config section
    from pipeline.config import VigilConfig


def clip_settings(cfg: VigilConfig, camera_id: str) -> RecordConfig:
    """The ``record:`` settings (``pre_s``, ``post_s``) of ``camera_id``'s clips: the defaults
    until cameras carry their own."""
    return RecordConfig()


def alert_clip_range(
    cfg: VigilConfig, alert: Mapping[str, Any], alert_id: str, now: float | None = None
) -> ClipRange:
    """The range of the clip of ``alert`` (as the alert store reads it)."""
    camera = alert.get("camera_id")
    rc = clip_settings(cfg, camera if isinstance(camera, str) else "")
    return clip_range(
        alert, rc.pre_s, rc.post_s, time.time() if now is None else now, alert_id=alert_id
    )
