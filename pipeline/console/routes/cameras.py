"""Cameras: list with live status, add / edit / remove through the registry topic (the same
validation and topic as ``vigil cameras add``), the newest frame and an MJPEG live view."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from pydantic import BaseModel, Field, ValidationError, field_validator

from pipeline.cameras.registry import put_cameras, remove_cameras
from pipeline.cameras.settings import MotionOverride, RecordConfig
from pipeline.cameras.spec import URL_FIELDS, CameraSpec
from pipeline.common.config import validation_messages
from pipeline.common.endpoints import service_endpoints
from pipeline.common.urls import hide_credentials
from pipeline.console import audit
from pipeline.console.auth import Principal
from pipeline.console.drawing import draw_live
from pipeline.console.state import ConsoleState, as_operator, principal, state
from pipeline.console.streams import GuardedStream, open_stream
from pipeline.ingest.capture import CameraUnavailable, probe_camera

router = APIRouter(prefix="/api/cameras", tags=["cameras"])
LIVE_BOUNDARY = "vigilframe"
_NUMBERS = ("offered_fps", "processed_fps", "frame_ts", "updated_at")


class CameraIn(CameraSpec):
    """The body of ``POST /api/cameras``: a camera whose URL the handler checks, with the
    console's policy (no local files unless ``console.allow_file_cameras``; never Vigil's own
    services) applied before anything looks at the path, so a refusal tells nothing of it."""

    @field_validator(*URL_FIELDS)
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        return v


def _unprocessable(e: ValidationError) -> HTTPException:
    """422 with one ``{loc, msg}`` per error, like FastAPI's own body errors."""
    return HTTPException(
        422, [{"loc": ["body", loc], "msg": msg} for loc, msg in validation_messages(e)]
    )


class CameraPatch(BaseModel):
    model_config = {"extra": "forbid"}
    fps: float | None = Field(None, gt=0, le=120)
    enabled: bool | None = None
    motion: MotionOverride | None = None
    record: RecordConfig | None = None


def public(spec: CameraSpec, status: dict[str, Any] | None = None) -> dict[str, Any]:
    """What the API shows of a camera: never its credentials (the URL is masked)."""
    return {
        "id": spec.id,
        "url": hide_credentials(spec.url),
        "fps": spec.fps,
        "enabled": spec.enabled,
        "labels": spec.labels,
        "motion": spec.motion.model_dump(exclude_none=True) if spec.motion else None,
        "record_url": hide_credentials(spec.record_url) if spec.record_url else None,
        "record": spec.record.model_dump(mode="json"),
        "status": status,
    }


def _status(raw: dict[bytes, bytes], now: float) -> dict[str, Any] | None:
    if not raw:
        return None
    s = {k.decode(): v.decode(errors="replace") for k, v in raw.items()}
    out: dict[str, Any] = {
        "state": s.get("state", "unknown"),
        "last_error": s.get("last_error") or None,
        "worker": s.get("worker"),
    }
    for key in _NUMBERS:
        try:
            out[key] = float(s.get(key, ""))
        except ValueError:
            out[key] = None
    for key in ("dropped", "reconnects"):
        try:
            out[key] = int(float(s.get(key, "")))
        except ValueError:
            out[key] = None
    ts = out.pop("frame_ts")
    out["frame_age_s"] = round(now - ts, 2) if ts else None
    return out


def _known(st: ConsoleState, camera_id: str) -> CameraSpec:
    spec = st.cameras.snapshot().get(camera_id)
    if spec is None:
        raise HTTPException(404, f"no camera {camera_id!r}")
    return spec


@router.get("")
def list_cameras(_: Principal = Depends(principal), st: ConsoleState = Depends(state)):
    specs = sorted(st.cameras.snapshot().values(), key=lambda s: s.id)
    pipe = st.redis.pipeline(transaction=False)
    for spec in specs:
        pipe.hgetall(st.keys.camera_status(spec.id))
    now = time.time()
    return [public(s, _status(raw, now)) for s, raw in zip(specs, pipe.execute(), strict=True)]


@router.get("/{camera_id}")
def get_camera(
    camera_id: str, _: Principal = Depends(principal), st: ConsoleState = Depends(state)
):
    spec = _known(st, camera_id)
    return public(spec, _status(st.redis.hgetall(st.keys.camera_status(camera_id)), time.time()))


@router.post("", status_code=201)
def add_camera(
    body: CameraIn,
    request: Request,
    check: bool = False,
    _: Principal = Depends(as_operator),
    st: ConsoleState = Depends(state),
):
    """Add or update a camera. ``?check=true`` opens the stream once first (10 s at most) and
    refuses it with the reason when it cannot be read. The URL is checked before anything opens
    it: no control characters or whitespace, no link-local host, none of Vigil's services."""
    try:
        spec = CameraSpec.checked(
            body.model_dump(),
            allow_files=st.cfg.console.allow_file_cameras,
            forbidden=service_endpoints(st.cfg),
        )
    except ValidationError as e:
        raise _unprocessable(e) from None
    probe = None
    if check:
        try:
            w, h, fps = probe_camera(spec.url, 10.0, 10.0)
        except CameraUnavailable as e:
            raise HTTPException(422, f"camera {spec.id}: {e}; not added") from None
        probe = {"width": w, "height": h, "fps": fps}
    st.cameras.require_connected()
    put_cameras(st.cfg.kafka, [spec])
    audit.record(request, "camera.add", spec.id, spec.model_dump(mode="json"))
    st.cameras.wait(lambda items: spec.id in items and items[spec.id] == spec)
    return {**public(spec), "probe": probe}


@router.patch("/{camera_id}")
def edit_camera(
    camera_id: str,
    patch: CameraPatch,
    request: Request,
    _: Principal = Depends(as_operator),
    st: ConsoleState = Depends(state),
):
    spec = _known(st, camera_id)
    data = spec.model_dump()
    data.update(patch.model_dump(exclude_unset=True))
    try:
        new = CameraSpec.model_validate(data)
    except ValidationError as e:
        raise _unprocessable(e) from None
    st.cameras.require_connected()
    put_cameras(st.cfg.kafka, [new])
    audit.record(
        request, "camera.update", camera_id, patch.model_dump(mode="json", exclude_unset=True)
    )
    st.cameras.wait(lambda items: items.get(camera_id) == new)
    return public(new)


@router.delete("/{camera_id}", status_code=204)
def delete_camera(
    camera_id: str,
    request: Request,
    _: Principal = Depends(as_operator),
    st: ConsoleState = Depends(state),
):
    _known(st, camera_id)
    st.cameras.require_connected()
    remove_cameras(st.cfg.kafka, [camera_id])
    audit.record(request, "camera.delete", camera_id)
    st.cameras.wait(lambda items: camera_id not in items)
    return Response(status_code=204)


async def _latest(st: ConsoleState, camera_id: str) -> tuple[bytes, int] | None:
    """The newest frame drawn (boxes, zones, lines) and its seq; None when there is none."""
    jpeg, dets, seq = await st.aredis.hmget(st.keys.live(camera_id), "jpeg", "detections", "seq")
    if not jpeg:
        return None
    try:
        detections = json.loads(dets) if dets else []
    except ValueError:
        detections = []
    drawn = await asyncio.to_thread(draw_live, jpeg, detections, st.rules_for(camera_id))
    return (drawn or jpeg), int(seq or 0)


@router.get("/{camera_id}/latest.jpg")
async def latest_jpg(
    camera_id: str, _: Principal = Depends(principal), st: ConsoleState = Depends(state)
):
    await asyncio.to_thread(_known, st, camera_id)
    got = await _latest(st, camera_id)
    if got is None:
        raise HTTPException(
            503, f"no frame of camera {camera_id!r} yet (is an ingest worker streaming it?)"
        )
    return Response(got[0], media_type="image/jpeg", headers={"Cache-Control": "no-store"})


@router.get("/{camera_id}/live")
async def live(
    camera_id: str,
    request: Request,
    who: Principal = Depends(principal),
    st: ConsoleState = Depends(state),
):
    """MJPEG: a new part whenever the worker stored a newer frame, at most the camera's fps;
    ends once the session or token no longer allows it (docs/console.md)."""
    spec = await asyncio.to_thread(_known, st, camera_id)
    fps = min(spec.fps or st.cfg.ingest.default_fps, max(st.cfg.ingest.live_jpeg_fps, 0.5))
    period = 1.0 / fps
    slot, guard = open_stream(st, request, who)

    async def parts():
        last_seq = None
        try:
            while await guard.ok():
                started = time.monotonic()
                got = await _latest(st, camera_id)
                if got is not None and got[1] != last_seq:
                    last_seq = got[1]
                    yield (
                        (
                            f"--{LIVE_BOUNDARY}\r\nContent-Type: image/jpeg\r\n"
                            f"Content-Length: {len(got[0])}\r\n\r\n"
                        ).encode()
                        + got[0]
                        + b"\r\n"
                    )
                await asyncio.sleep(max(0.05, period - (time.monotonic() - started)))
        finally:
            slot.release()

    return GuardedStream(
        parts(),
        slot,
        media_type=f"multipart/x-mixed-replace; boundary={LIVE_BOUNDARY}",
        headers={"Cache-Control": "no-store"},
    )
