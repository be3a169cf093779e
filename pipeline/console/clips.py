"""The clip settings of an alert's camera, resolved in one place for the console and
``vigil clips``: :func:`clip_settings` (the camera's ``record:`` settings from its definition),
why an alert has no clip (:func:`why_no_clip`, for the console's alert detail), and how the
console serves a cut of a recording (:func:`serve_cut`) or answers why it cannot
(:func:`cut_or_refuse`: the one mapping of a cut's errors to HTTP answers)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from fastapi import HTTPException
from fastapi.responses import FileResponse, JSONResponse

from pipeline.cameras.settings import RecordConfig
from pipeline.cameras.spec import CameraSpec
from pipeline.common.errors import InputError
from pipeline.record.clips import CachedCut, ClipRange, ClipUnavailable, UnusableAlert, clip_range
from pipeline.record.export import iso
from pipeline.record.index import SegmentIndex

log = logging.getLogger(__name__)


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


#: The header of a served cut: the wall time (seconds since 1970, the ``capture_ts`` clock) of the
#: video's time 0; the frame a player shows at time ``v`` is the camera's at ``origin + v``.
ORIGIN_HEADER = "X-Video-Origin"
GAPS_HEADER = "X-Vigil-Clip-Gaps"


def serve_cut(got: CachedCut, filename: str) -> FileResponse:
    """A cut of a recording (an alert's clip, a stretch of the timeline), with HTTP Range (206;
    416 for a range outside the file), its origin in :data:`ORIGIN_HEADER` and the stretches of
    its range not recorded (or in segments found damaged) in :data:`GAPS_HEADER`: ISO 8601
    intervals ``FROM/TO``, comma-separated (no header: no gap)."""
    headers = {ORIGIN_HEADER: f"{got.origin:.6f}"}
    if got.gaps:
        headers[GAPS_HEADER] = ", ".join(f"{iso(a)}/{iso(b)}" for a, b in got.gaps)
    return FileResponse(
        got.path,
        media_type="video/mp4",
        filename=filename,
        content_disposition_type="inline",
        headers=headers,
    )


class NoClip(Exception):
    """The alert has no clip: the 404's body says why (``detail``, and ``reason``:
    recording_off | expired | not_recorded, so the alert detail can say it plainly)."""

    def __init__(self, body: dict[str, Any]) -> None:
        super().__init__(body["detail"])
        self.body = body

    def response(self) -> JSONResponse:
        return JSONResponse(self.body, status_code=404)


def cut_or_refuse(
    cut: Callable[[], CachedCut],
    what: str,
    about: str,
    why: Callable[[], dict[str, Any]] | None = None,
) -> CachedCut:
    """``cut()`` (an alert's clip, a stretch of a timeline), or the console's answer when there
    is none: 404 with the :class:`ClipUnavailable`'s words when its range has no footage (a
    :class:`NoClip` whose body adds ``why()``'s fields, when given); 503 when the cut cannot be
    cached (the recordings folder not writable: the operator's to fix; logged as ``about``,
    the answer names no path). Range requests outside the served file are :func:`serve_cut`'s
    416."""
    try:
        return cut()
    except ClipUnavailable as e:
        if why is None:
            raise HTTPException(404, str(e)) from None
        raise NoClip({"detail": str(e), **why()}) from None
    except InputError as e:
        log.warning("%s: %s", about, e)
        raise HTTPException(
            503, f"{what} cannot be cut now (the recordings folder is not writable; see the log)"
        ) from None


def why_no_clip(cameras: Mapping[str, CameraSpec], index: SegmentIndex, rng: ClipRange) -> str:
    """Why the clip of ``rng`` has no footage: ``recording_off`` (its camera's definition has
    recording off), ``expired`` (the camera's recordings kept start after the clip: retention
    deleted it), or ``not_recorded`` (the camera was not recording then: down, paused, or in
    mode events around other alerts)."""
    spec = cameras.get(rng.camera_id)
    if spec is not None and not (spec.enabled and spec.record.enabled):
        return "recording_off"
    if index.segments(rng.camera_id, 0.0, rng.start):  # footage before it: a gap, not expiry
        return "not_recorded"
    return "expired" if index.segments(rng.camera_id, rng.end, float(2**33)) else "not_recorded"


def clip_state(
    index: SegmentIndex,
    cameras: Mapping[str, CameraSpec],
    alert: Mapping[str, Any],
    alert_id: str,
) -> tuple[bool, str | None, str | None]:
    """Whether ``alert``'s clip has footage in the index (index reads only, nothing cut), and
    if not, why: a detail and a reason (:func:`why_no_clip`'s, or ``unusable`` for an alert
    that cannot place a clip). The alert detail shows that instead of a player that would only
    meet a 404 (issue 25: an expected state is no failed request in the browser's console)."""
    try:
        rng = alert_clip_range(cameras, alert, alert_id)
    except UnusableAlert as e:
        return False, str(e), "unusable"
    if index.segments(rng.camera_id, rng.start, rng.end):
        return True, None, None
    return False, "footage expired or not recorded", why_no_clip(cameras, index, rng)
