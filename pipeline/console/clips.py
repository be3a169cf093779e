"""The clip settings of an alert's camera, resolved in one place for the console and
``vigil clips``: :func:`clip_settings` (the camera's ``record:`` settings from its definition)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from pipeline.cameras.settings import RecordConfig
from pipeline.cameras.spec import CameraSpec
from pipeline.record.clips import ClipRange, UnusableAlert, clip_range
from pipeline.record.index import SegmentIndex


def clip_settings(cameras: Mapping[str, CameraSpec], camera_id: str) -> RecordConfig:
    """The ``record:`` settings (``pre_s``, ``post_s``) of ``camera_id``'s clips, from its
    definition in the camera registry; the defaults for a camera no longer defined."""
    spec = cameras.get(camera_id)
    return spec.record if spec is not None else RecordConfig()


def alert_clip_range(
    cameras: Mapping[str, CameraSpec],
    alert: Mapping[str, Any],
    alert_id: str,
    now: float | None = None,
) -> ClipRange:
    """The range of the clip of ``alert`` (as the alert store reads it); ``cameras``: the camera
    registry (id -> definition)."""
    camera = alert.get("camera_id")
    rc = clip_settings(cameras, camera if isinstance(camera, str) else "")
    return clip_range(
        alert, rc.pre_s, rc.post_s, time.time() if now is None else now, alert_id=alert_id
    )


def clip_state(
    index: SegmentIndex,
    cameras: Mapping[str, CameraSpec],
    alert: Mapping[str, Any],
    alert_id: str,
) -> tuple[bool, str | None]:
    """Whether ``alert``'s clip has footage in the index (one index read, nothing cut), and why
    not: the alert detail shows that instead of a player that would only meet a 404 (issue 25:
    an expected state is no failed request in the browser's console)."""
    try:
        rng = alert_clip_range(cameras, alert, alert_id)
    except UnusableAlert as e:
        return False, str(e)
    if index.segments(rng.camera_id, rng.start, rng.end):
        return True, None
    return False, "footage expired or not recorded"
