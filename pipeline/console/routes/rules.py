"""Rules: the live rules of the ``vigil.rules`` topic (validated exactly like the YAML, same error
texts), and the preview of a candidate rule on the detections Kafka recorded."""

from __future__ import annotations

import math
import secrets
import time
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Body, Depends, HTTPException, Request, Response
from pydantic import BaseModel, Field, model_validator

from alerts.errors import RulesError
from alerts.preview import preview_rule
from alerts.rules.config import RuleConfig
from alerts.rules_topic import delete_rule, put_rule, validate_rule
from pipeline.console import audit
from pipeline.console.auth import Principal
from pipeline.console.state import ConsoleState, as_operator, jsonable_rule, principal, state
from pipeline.record.still import frame_in, segment_at

router = APIRouter(prefix="/api/rules", tags=["rules"])
PREVIEW_TTL_S = 600


class PreviewRequest(BaseModel):
    model_config = {"extra": "forbid", "allow_inf_nan": False}  # NaN / inf: 422, not 500
    rule: dict[str, Any]
    since_s: float | None = Field(None, gt=0, description="the last N seconds (default 3600)")
    start: float | None = Field(None, description="range start, seconds since 1970")
    end: float | None = Field(None, description="range end, seconds since 1970 (default now)")
    cameras: list[str] | None = None

    @model_validator(mode="after")
    def _range(self) -> PreviewRequest:
        if self.since_s is not None and self.start is not None:
            raise ValueError("give since_s or start/end, not both")
        return self


def rule_errors(e: RulesError) -> list[dict[str, Any]]:
    """422 detail: one entry per problem; ``msg`` is the line the YAML check prints."""
    out = []
    for (rule_id, key, msg), line in zip(e.errors, str(e).splitlines(), strict=False):
        loc = ["body", *(p for p in key.split(".") if p)] if key else ["body"]
        out.append({"loc": loc, "msg": line, "rule": rule_id, "key": key, "problem": msg})
    return out


def _non_finite(value: Any, path: tuple[str | int, ...] = ()) -> tuple[str | int, ...] | None:
    """Where ``value`` holds a NaN or an infinity (JSON bodies may: Python reads ``NaN``)."""
    if isinstance(value, float) and not math.isfinite(value):
        return path
    items = (
        value.items()
        if isinstance(value, dict)
        else (enumerate(value) if isinstance(value, list) else ())
    )
    for key, item in items:
        found = _non_finite(item, (*path, key))
        if found is not None:
            return found
    return None


def _validated(raw: dict[str, Any], rule_id: str | None = None) -> RuleConfig:
    # a rule with cooldown_s: Infinity would validate, be stored, and make every rule list a 500
    bad = _non_finite(raw)
    if bad is not None:
        where = ".".join(str(p) for p in bad)
        raise HTTPException(
            422, [{"loc": ["body", *bad], "msg": f"{where}: must be a finite number"}]
        )
    if rule_id is not None:
        raw = {"id": rule_id, **raw}
        if raw["id"] != rule_id:
            raise HTTPException(
                422,
                [
                    {
                        "loc": ["body", "id"],
                        "msg": f"id {raw['id']!r} differs from the URL's {rule_id!r}",
                    }
                ],
            )
    try:
        return validate_rule(raw)
    except RulesError as e:
        raise HTTPException(422, rule_errors(e)) from None


@router.get("")
def list_rules(_: Principal = Depends(principal), st: ConsoleState = Depends(state)):
    rules = st.rules.snapshot()
    return [jsonable_rule(r) for _, r in sorted(rules.items())]


@router.get("/{rule_id}")
def get_rule(rule_id: str, _: Principal = Depends(principal), st: ConsoleState = Depends(state)):
    rule = st.rules.snapshot().get(rule_id)
    if rule is None:
        raise HTTPException(404, f"no rule {rule_id!r}")
    return jsonable_rule(rule)


@router.put("/{rule_id}")
def save_rule(
    rule_id: str,
    request: Request,
    raw: dict[str, Any] = Body(...),
    _: Principal = Depends(as_operator),
    st: ConsoleState = Depends(state),
):
    """Create or replace a rule; the alert services apply it within seconds."""
    rule = _validated(raw, rule_id)
    st.rules.require_connected()
    put_rule(st.cfg.kafka, rule)
    audit.record(request, "rule.save", rule_id, jsonable_rule(rule))
    st.rules.wait(lambda items: items.get(rule_id) == rule)
    return jsonable_rule(rule)


@router.delete("/{rule_id}", status_code=204)
def remove_rule(
    rule_id: str,
    request: Request,
    _: Principal = Depends(as_operator),
    st: ConsoleState = Depends(state),
):
    if rule_id not in st.rules.snapshot():
        raise HTTPException(404, f"no rule {rule_id!r}")
    st.rules.require_connected()
    delete_rule(st.cfg.kafka, rule_id)
    audit.record(request, "rule.delete", rule_id)
    st.rules.wait(lambda items: rule_id not in items)
    return Response(status_code=204)


@router.post("/preview")
def preview(
    body: PreviewRequest,
    _: Principal = Depends(as_operator),
    st: ConsoleState = Depends(state),
):
    """What the candidate rule would have raised over the range, replayed from vigil.detections."""
    rule = _validated(body.rule)
    cc = st.cfg.console
    end = body.end if body.end is not None else time.time()
    start = body.start if body.start is not None else end - (body.since_s or 3600.0)
    if end <= start:
        raise HTTPException(422, [{"loc": ["body", "end"], "msg": "end must be after start"}])
    if end - start > cc.preview_max_range_s:
        raise HTTPException(
            422,
            [
                {
                    "loc": ["body", "since_s"],
                    "msg": f"range of {end - start:.0f} s is longer than "
                    f"console.preview_max_range_s ({cc.preview_max_range_s:.0f} s)",
                }
            ],
        )
    try:
        result = preview_rule(
            st.cfg,
            rule,
            start,
            end,
            body.cameras,
            timeout_s=cc.preview_timeout_s,
            frames_from=_recorded_frames(st),
            max_recorded=cc.preview_recording_frames,
        )
    except TimeoutError as e:
        raise HTTPException(504, str(e)) from None
    pid = secrets.token_hex(8)
    pipe = st.redis.pipeline(transaction=False)
    alerts = []
    for alert in result.alerts:
        jpeg = alert.get("snapshot")
        item = {k: v for k, v in alert.items() if k != "snapshot"}
        item["snapshot_url"] = None
        if jpeg:
            pipe.set(st.keys.console(f"preview:{pid}:{alert['id']}"), jpeg, ex=PREVIEW_TTL_S)
            item["snapshot_url"] = f"/api/rules/preview/{pid}/{alert['id']}.jpg"
        alerts.append(item)
    pipe.execute()
    return {
        "rule": jsonable_rule(rule),
        "start": start,
        "end": end,
        "alerts": alerts,
        "messages": result.messages,
        "frames": result.frames,
        "seconds": round(result.seconds, 3),
        "truncated": getattr(result, "truncated", False),
    }


def _recorded_frames(st: ConsoleState):
    """The preview's pictures once the live frames expired: the cameras' recordings
    (docs/recordings.md, "Rule preview"); the index is looked up for every alert, a frame is
    decoded only when the preview asks for it (at most console.preview_recording_frames)."""
    root = Path(st.cfg.recordings.dir)

    def frames_from(camera_id: str, t: float):
        seg = segment_at(st.segments, camera_id, t)
        return None if seg is None else (lambda: frame_in(root, seg, t))

    return frames_from


@router.get("/preview/{pid}/{alert_id}.jpg")
def preview_snapshot(
    pid: str, alert_id: str, _: Principal = Depends(principal), st: ConsoleState = Depends(state)
):
    jpeg = st.redis.get(st.keys.console(f"preview:{pid}:{alert_id}"))
    if jpeg is None:
        raise HTTPException(404, "no such preview snapshot (previews are kept 10 minutes)")
    return Response(jpeg, media_type="image/jpeg")
