"""Alerts: filtered list with stable pagination (Redis stream ids), one alert, its snapshot, its
clip (the recording around it, with HTTP Range) and the boxes detected over the clip, the live Server-Sent Events stream, and the
operator's review (true / false positive)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path
from typing import Any, Literal

import redis
from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from kafka.errors import KafkaError
from pydantic import BaseModel, Field

from alerts.review import review_message, store_review
from alerts.store import parse_entry
from detectors.retrain.dataset.layout import DatasetError
from detectors.retrain.dataset.reviewed import add_reviewed_example
from pipeline.common.contracts import CAMERA_ID
from pipeline.common.kafka import KafkaUnavailable
from pipeline.console import audit
from pipeline.console.auth import Principal
from pipeline.console.clip_detections import read_detections
from pipeline.console.clips import (
    NoClip,
    alert_clip_range,
    clip_state,
    cut_or_refuse,
    serve_cut,
    why_no_clip,
)
from pipeline.console.review_frames import add_clip_frames
from pipeline.console.state import ConsoleState, as_operator, principal, state
from pipeline.console.streams import GuardedStream, open_stream
from pipeline.record.clips import (
    CachedCut,
    UnusableAlert,
    cached_alert_clip,
    validate_alert_id,
)

log = logging.getLogger(__name__)
router = APIRouter(prefix="/api/alerts", tags=["alerts"])
SCAN_CAP = 5000  # entries one list request reads at most; then it returns a cursor
SSE_BLOCK_S = 15.0  # at most; always under the Redis socket timeout (else the read times out)
_REVIEW_FIELDS = ("review", "review_note", "reviewed_by", "reviewed_at", "review_image")
_MAX_ID = 18446744073709551615
_MAX_TS = 1e11  # seconds since 1970 (year 5138): its milliseconds still make a stream id


class Filters(BaseModel):
    camera: str | None = None
    rule: str | None = None
    severity: str | None = None
    status: str | None = None

    def match(self, fields: dict[bytes, bytes]) -> bool:
        for name, key in (
            ("rule", b"rule_id"),
            ("severity", b"severity"),
            ("status", b"status"),
            ("camera", b"camera_id"),
        ):
            want = getattr(self, name)
            if want is not None and fields.get(key, b"").decode() != want:
                return False
        return True


class Review(BaseModel):
    model_config = {"extra": "forbid"}
    verdict: Literal["true_positive", "false_positive"]
    note: str = Field("", max_length=2000)


def _filters(
    camera: str | None = None,
    rule: str | None = None,
    severity: str | None = None,
    status: str | None = None,
) -> Filters:
    if camera is not None and not CAMERA_ID.match(camera):
        raise HTTPException(
            422, [{"loc": ["query", "camera"], "msg": f"{camera!r} is not a camera id"}]
        )
    return Filters(camera=camera, rule=rule, severity=severity, status=status)


def _stream_id(text: str, what: str) -> str:
    ms, _, seq = text.partition("-")
    if not ms.isdigit() or (seq and not seq.isdigit()):
        raise HTTPException(422, [{"loc": ["query", what], "msg": f"{text!r} is not a stream id"}])
    return text


def _item(stream_id: bytes, fields: dict[bytes, bytes]) -> dict[str, Any]:
    msg = parse_entry(fields)
    msg["stream_id"] = stream_id.decode()
    return msg


@router.get("")
def list_alerts(
    f: Filters = Depends(_filters),
    since: float | None = Query(None, ge=0, le=_MAX_TS, allow_inf_nan=False),
    until: float | None = Query(None, ge=0, le=_MAX_TS, allow_inf_nan=False),
    before: str | None = None,
    limit: int = Query(50, ge=1, le=500),
    _: Principal = Depends(principal),
    st: ConsoleState = Depends(state),
):
    """Newest first. ``next`` is the ``before`` of the next page (None at the end); a page may
    hold fewer than ``limit`` items when the filters are sparse (at most SCAN_CAP entries read)."""
    key = st.keys.alerts_stream(f.camera)
    hi = f"({_stream_id(before, 'before')}" if before else "+"
    if until is not None and not before:
        hi = f"{int(until * 1000)}-{_MAX_ID}"
    lo = f"{int(since * 1000)}-0" if since is not None else "-"
    items: list[dict[str, Any]] = []
    scanned, cursor, exhausted = 0, hi, False
    while len(items) < limit and scanned < SCAN_CAP:
        batch = st.redis.xrevrange(key, cursor, lo, count=min(limit * 4, 1000))
        if not batch:
            exhausted = True
            break
        for sid, fields in batch:
            scanned += 1
            cursor = f"({sid.decode()}"
            if f.match(fields):
                items.append(_item(sid, fields))
                if len(items) >= limit:
                    break
        if len(batch) < min(limit * 4, 1000) and len(items) < limit:
            exhausted = True
            break
    if items:
        pipe = st.redis.pipeline(transaction=False)
        for it in items:
            pipe.hmget(st.keys.alert(it["id"]), "review", "snapshot")
        for it, (review, snap) in zip(items, pipe.execute(), strict=True):
            it["review"] = review.decode() if review else None
            it["snapshot"] = snap == b"1"
    nxt = None if exhausted else cursor.lstrip("(")
    return {"items": items, "next": nxt, "scanned": scanned}


@router.get("/events")
async def events(
    request: Request,
    f: Filters = Depends(_filters),
    last_event_id: str | None = Query(None, description="resume after this stream id"),
    who: Principal = Depends(principal),
    st: ConsoleState = Depends(state),
):
    """Server-Sent Events: one ``alert`` event per alert event written to Redis, ``id`` = its
    stream id; a reconnecting EventSource resumes after ``Last-Event-ID``. Ends (after an
    ``end`` event) once the session or token no longer allows it (docs/console.md)."""
    key = st.keys.alerts_stream(f.camera)
    after = request.headers.get("last-event-id") or last_event_id
    if after:
        after = _stream_id(after, "Last-Event-ID")
    else:
        newest = await st.aredis.xrevrange(key, "+", "-", count=1)
        after = newest[0][0].decode() if newest else "0-0"

    # XREAD returns at least this often, so the loop re-checks the session in time
    block_s = min(SSE_BLOCK_S, st.cfg.redis.socket_timeout_s * 0.6, st.cfg.console.stream_recheck_s)
    block_ms = max(1, int(block_s * 1000))
    slot, guard = open_stream(st, request, who)

    async def stream():
        nonlocal after
        try:
            yield b"retry: 2000\n\n"
            while await guard.ok():
                try:
                    got = await st.aredis.xread({key: after}, count=100, block=block_ms)
                except redis.RedisError as e:
                    yield f"event: error\ndata: {json.dumps({'detail': f'Redis: {type(e).__name__}'})}\n\n".encode()
                    await asyncio.sleep(2)
                    continue
                if not got:
                    yield b": keepalive\n\n"
                    continue
                for sid, fields in got[0][1]:
                    after = sid.decode()
                    if f.match(fields):
                        data = json.dumps(_item(sid, fields), separators=(",", ":"))
                        yield f"id: {after}\nevent: alert\ndata: {data}\n\n".encode()
            yield b'event: end\ndata: {"detail":"session ended or changed"}\n\n'
        finally:
            slot.release()

    return GuardedStream(
        stream(),
        slot,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


def _alert(st: ConsoleState, alert_id: str) -> dict[str, Any]:
    alert = st.store.get_alert(alert_id) if len(alert_id) <= 64 else None
    if alert is None:
        raise HTTPException(404, f"no alert {alert_id!r}")
    return alert


@router.get("/{alert_id}")
def get_alert(alert_id: str, _: Principal = Depends(principal), st: ConsoleState = Depends(state)):
    alert = _alert(st, alert_id)
    out = {k: v for k, v in alert.items() if not k.startswith(("written_", "published_"))}
    out["clip_available"], out["clip_detail"], out["clip_reason"] = clip_state(
        st.segments, st.cameras.items, alert, alert_id
    )
    return out


@router.get("/{alert_id}/snapshot.jpg")
def snapshot(alert_id: str, _: Principal = Depends(principal), st: ConsoleState = Depends(state)):
    jpeg = st.store.get_snapshot(alert_id) if len(alert_id) <= 64 else None
    if jpeg is None:
        raise HTTPException(404, f"no snapshot of alert {alert_id!r} (none taken, or expired)")
    return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "no-store"})


def _clip(st: ConsoleState, alert_id: str) -> tuple[dict[str, Any], CachedCut]:
    """The alert and its clip (cut and cached); 404 saying why there is none (:class:`NoClip`
    when the alert is fine but its footage is not there)."""
    try:
        validate_alert_id(alert_id)
    except UnusableAlert:
        raise HTTPException(404, f"no alert {alert_id[:80]!r}") from None
    alert = _alert(st, alert_id)
    try:
        rng = alert_clip_range(st.cameras.items, alert, alert_id)
    except UnusableAlert as e:
        raise HTTPException(404, str(e)) from None
    got = cut_or_refuse(
        lambda: cached_alert_clip(
            st.segments, Path(st.cfg.recordings.dir), rng, st.cfg.recordings.gap_tolerance_s
        ),
        "the clip",
        f"clip of alert {alert_id}",
        # ``reason`` (recording_off | expired | not_recorded) lets the alert detail say it plainly
        lambda: {
            "reason": why_no_clip(st.cameras.items, st.segments, rng),
            "camera_id": rng.camera_id,
        },
    )
    return alert, got


@router.get("/{alert_id}/clip.mp4")
def clip(alert_id: str, _: Principal = Depends(principal), st: ConsoleState = Depends(state)):
    """The alert's clip: its camera's recording from ``pre_s`` before it started to ``post_s``
    after it ended (or now, while it is active), remuxed from the segments and cached. HTTP Range
    is served (206; 416 for a range outside the file), so a ``<video>`` seeks in it; 404 saying
    so when the alert is unknown or its footage expired or was never recorded. The
    ``X-Video-Origin`` header: the wall time of the video's time 0; ``X-Vigil-Clip-Gaps``: the
    stretches of its range not recorded (or in segments found damaged), ISO 8601 intervals
    ``FROM/TO``, comma-separated (no header: no gap)."""
    try:
        _, got = _clip(st, alert_id)
    except NoClip as e:
        return e.response()
    return serve_cut(got, f"alert-{alert_id}.mp4")


@router.get("/{alert_id}/detections")
def clip_detections(
    alert_id: str, _: Principal = Depends(principal), st: ConsoleState = Depends(state)
):
    """The boxes over the alert's clip: every frame the detector processed in the clip's range,
    read back from the detections topic, ``t`` in seconds of the clip's video (its time 0 is
    ``origin``). Empty, with a ``note``, once the topic's retention removed them."""
    try:
        alert, got = _clip(st, alert_id)
    except NoClip as e:
        return e.response()
    camera = alert["camera_id"]
    rng = alert_clip_range(st.cameras.items, alert, alert_id)
    try:
        found = read_detections(st.cfg.kafka, camera, got.origin, rng.end)
    except (KafkaUnavailable, KafkaError) as e:
        log.warning("boxes of alert %s: Kafka: %s", alert_id, type(e).__name__)
        raise HTTPException(
            503, f"Kafka at {st.cfg.kafka.bootstrap_servers} is unavailable ({type(e).__name__})"
        ) from None
    frames = [{"t": round(ts - got.origin, 3), "boxes": boxes} for ts, boxes in found.frames]
    note = found.truncated
    if not frames:
        note = (
            f"no detections of camera {camera} are kept for this clip's time "
            f"({st.cfg.kafka.topics.detections} keeps them for its retention, 24 h by default): "
            "the clip plays without boxes"
        )
    return {
        "camera": camera,
        "alert_at": float(alert["started_at"]),
        "origin": got.origin,
        "frames": frames,
        "note": note,
    }


@router.post("/{alert_id}/review")
def review(
    alert_id: str,
    body: Review,
    request: Request,
    who: Principal = Depends(as_operator),
    st: ConsoleState = Depends(state),
):
    """Store the verdict on the alert, add its frame to the retraining dataset (a false positive
    as a hard negative), then tell subscribers on vigil.alerts. Redis and the dataset first: a
    Kafka outage answers 503 with the review already kept, and a retry publishes it."""
    alert = _alert(st, alert_id)
    at = time.time()
    image, dataset_note = None, None
    frame = st.redis.get(st.keys.source_frame(alert_id))
    if frame is None:
        dataset_note = "the alert's frame has expired; the review is kept, the dataset unchanged"
    else:
        dets = alert.get("frame_detections")
        if isinstance(dets, str):
            dets = json.loads(dets or "[]")
        try:
            rec = add_reviewed_example(
                st.cfg.collection.dir,
                image_jpeg=frame,
                detections=dets or [],
                alert_box=alert.get("box"),
                alert_label=alert.get("label"),
                verdict=body.verdict,
                camera_id=alert["camera_id"],
                capture_ts=float(alert.get("updated_at") or alert.get("started_at") or at),
                alert_id=alert_id,
                reviewer=who.user,
                note=body.note,
            )
            image = rec.get("image")
        except DatasetError as e:
            dataset_note = f"not added to the dataset: {e}"
            log.warning("review of alert %s: %s", alert_id, dataset_note)
    clip_images, clip_note = add_clip_frames(
        st.cfg, st.segments, st.cameras.items, alert, alert_id, body.verdict, who.user, at
    )
    store_review(st.store, alert_id, body.verdict, body.note, who.user, at, image)
    audit.record(request, "alert.review", alert_id, {"verdict": body.verdict})
    msg = review_message(alert, body.verdict, body.note, who.user, at)
    try:
        st.cameras.require_connected()
        st.producer().send(st.cfg.kafka.topics.reviews, key=alert["camera_id"], value=msg).get(
            timeout=15
        )
    except (KafkaUnavailable, KafkaError) as e:
        # steps 1-2 stand: the generic Kafka answers ("nothing was changed") would be wrong here
        log.warning("review of alert %s kept, not published: %s", alert_id, type(e).__name__)
        raise HTTPException(
            503,
            f"Kafka at {st.cfg.kafka.bootstrap_servers} is unavailable ({type(e).__name__}): "
            "the review is kept, but subscribers were not told; send it again to publish it",
        ) from None
    return {
        "id": alert_id,
        "review": body.verdict,
        "reviewed_by": who.user,
        "reviewed_at": at,
        "review_image": image,
        "dataset": dataset_note or f"added to {st.cfg.collection.dir} as {image}",
        "clip_images": clip_images,
        "clip_frames": clip_note,
    }
