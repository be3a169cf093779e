"""A camera's timeline: what was recorded over a day (or any range up to a day), the gaps, and the
alerts of that camera as markers; and any stretch of its recording as one MP4 (HTTP Range), so the
console plays from any moment (docs/console.md, "Timeline")."""

from __future__ import annotations

import json
import logging
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Query

from pipeline.common.contracts import CAMERA_ID
from pipeline.console.auth import Principal
from pipeline.console.clips import cut_or_refuse, serve_cut
from pipeline.console.state import ConsoleState, principal, state
from pipeline.record.clips import MAX_CLIP_S, cached_range
from pipeline.record.index import find_gaps

log = logging.getLogger(__name__)
router = APIRouter(prefix="/api/cameras", tags=["timeline"])

DAY_S = 86400.0
MAX_MARKERS = 2000  # alert markers one timeline answers at most (then: truncated)
_SCAN_CAP = 20000  # alert stream entries one timeline reads at most
_MAX_TS = 1e11  # seconds since 1970, as the alerts' list takes them


def _bad(where: str, msg: str) -> HTTPException:
    return HTTPException(422, [{"loc": ["query", where], "msg": msg}])


def _camera(st: ConsoleState, camera_id: str) -> str:
    """A camera id of the registry, or one with recordings (a camera removed keeps its footage
    until retention deletes it); 404 otherwise."""
    if not CAMERA_ID.match(camera_id):
        raise HTTPException(404, f"no camera {camera_id[:80]!r}")
    if camera_id in st.cameras.snapshot():
        return camera_id
    if st.redis.exists(st.keys.recordings(camera_id)):
        return camera_id
    raise HTTPException(404, f"no camera {camera_id!r} (not defined, nothing recorded)")


def _range(day: str | None, t0: float | None, t1: float | None) -> tuple[float, float]:
    """``[from, to]`` of a timeline: a UTC day, or ``from``/``to`` at most a day apart."""
    if day is not None:
        if t0 is not None or t1 is not None:
            raise _bad("day", "give either day or from/to, not both")
        try:
            d = date.fromisoformat(day) if len(day) == 10 else None
        except ValueError:
            d = None
        if d is None:
            raise _bad("day", f"{day[:40]!r} is not a day (YYYY-MM-DD)")
        start = datetime(d.year, d.month, d.day, tzinfo=UTC).timestamp()
        return start, start + DAY_S
    if t0 is None or t1 is None:
        raise _bad("day", "give a day (YYYY-MM-DD, UTC) or both from and to")
    if not t1 > t0:
        raise _bad("to", f"to ({t1}) must be after from ({t0})")
    if t1 - t0 > DAY_S:
        raise _bad("to", f"a timeline covers at most a day ({DAY_S:.0f} s); asked {t1 - t0:.0f} s")
    return t0, t1


def _stretches(segments, t0: float, t1: float, tolerance_s: float) -> list[dict[str, float]]:
    """The recorded stretches of ``[t0, t1]``: segments closer than ``tolerance_s`` merged."""
    out: list[list[float]] = []
    for seg in segments:
        a, b = max(seg.start, t0), min(seg.end, t1)
        if b <= a:
            continue
        if out and a - out[-1][1] <= tolerance_s:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return [{"start": round(a, 3), "end": round(b, 3)} for a, b in out]


def _number(v: Any) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


def _markers(st: ConsoleState, camera_id: str, t0: float, t1: float) -> tuple[list[dict], bool]:
    """The alerts of the camera that started in ``[t0, t1]``, oldest first, from its alert
    stream (Redis data: an entry that is not an alert message is skipped)."""
    key = st.keys.alerts_stream(camera_id)
    lo, hi = f"{int(t0 * 1000)}-0", f"{int(t1 * 1000)}-18446744073709551615"
    found: dict[str, dict[str, Any]] = {}
    scanned, truncated = 0, False
    while scanned < _SCAN_CAP:
        batch = st.redis.xrange(key, lo, hi, count=1000)
        for sid, fields in batch:
            scanned += 1
            lo = f"({sid.decode()}"
            try:
                raw = fields.get(b"alert")
                msg = json.loads(raw) if raw else None
            except (ValueError, UnicodeDecodeError):
                continue
            if not isinstance(msg, dict) or not isinstance(msg.get("id"), str):
                continue
            started = _number(msg.get("started_at"))
            if started is None or not t0 <= started <= t1:
                continue
            aid = msg["id"][:64]
            if aid not in found and len(found) >= MAX_MARKERS:
                truncated = True
                continue
            found[aid] = {
                "id": aid,
                "started_at": started,
                "ended_at": _number(msg.get("ended_at")),
                "status": str(msg.get("status", ""))[:20],
                "rule_id": str(msg.get("rule_id", ""))[:80],
                "severity": str(msg.get("severity", ""))[:20],
                "label": str(msg.get("label") or "")[:40] or None,
            }
        if len(batch) < 1000:
            break
    else:
        truncated = True
    return sorted(found.values(), key=lambda m: m["started_at"]), truncated


@router.get("/{camera_id}/timeline")
def timeline(
    camera_id: str,
    day: str | None = Query(None, description="a UTC day, YYYY-MM-DD"),
    t0: float | None = Query(None, alias="from", ge=0, le=_MAX_TS, allow_inf_nan=False),
    t1: float | None = Query(None, alias="to", ge=0, le=_MAX_TS, allow_inf_nan=False),
    _: Principal = Depends(principal),
    st: ConsoleState = Depends(state),
):
    """The camera's recorded stretches, the gaps between them and its alerts (markers at their
    start) over a UTC ``day`` or ``from``..``to`` (seconds since 1970, at most a day)."""
    camera_id = _camera(st, camera_id)
    start, end = _range(day, t0, t1)
    tolerance = st.cfg.recordings.gap_tolerance_s
    segments = st.segments.segments(camera_id, start, end)
    markers, truncated = _markers(st, camera_id, start, end)
    return {
        "camera": camera_id,
        "from": start,
        "to": end,
        "recorded": _stretches(segments, start, end, tolerance),
        "gaps": [
            {"start": round(a, 3), "end": round(b, 3)}
            for a, b in find_gaps(segments, start, end, tolerance)
        ],
        "alerts": markers,
        "alerts_truncated": truncated,
        "max_video_s": MAX_CLIP_S,
    }


@router.get("/{camera_id}/recording.mp4")
def recording(
    camera_id: str,
    t0: float = Query(..., alias="from", ge=0, le=_MAX_TS, allow_inf_nan=False),
    t1: float = Query(..., alias="to", ge=0, le=_MAX_TS, allow_inf_nan=False),
    _: Principal = Depends(principal),
    st: ConsoleState = Depends(state),
):
    """``from``..``to`` of the camera's recording (at most an hour), remuxed from its segments
    (starting at the keyframe at or before ``from``) and cached; HTTP Range like the alerts'
    clips. The ``X-Video-Origin`` header is the wall time of the video's time 0: the frame
    shown at time ``v`` is the camera's at ``origin + v``. 404 when nothing of it is recorded."""
    camera_id = _camera(st, camera_id)
    if not t1 > t0:
        raise _bad("to", f"to ({t1}) must be after from ({t0})")
    if t1 - t0 > MAX_CLIP_S:
        raise _bad("to", f"a video covers at most {MAX_CLIP_S:.0f} s; asked {t1 - t0:.0f} s")
    got = cut_or_refuse(
        lambda: cached_range(
            st.segments,
            Path(st.cfg.recordings.dir),
            camera_id,
            t0,
            t1,
            st.cfg.recordings.gap_tolerance_s,
        ),
        "the video",
        f"recording of camera {camera_id}",
    )
    return serve_cut(got, f"{camera_id}-{int(t0)}.mp4")
