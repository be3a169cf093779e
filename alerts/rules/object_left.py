"""Object left behind / object removed: stationary objects that appear, or disappear.

Stationary objects are followed by position (IoU with where they were first seen), not by track
id: trackers lose and renumber objects that stand still, while a bag's box barely moves.

- ``object_left``: a new object stays put for ``min_seconds`` (objects already there during the
  first ``warmup_s`` are the scene, not left behind). Ends when the object is gone.
- ``object_removed``: an object that had been in place for ``present_s`` is missing for
  ``min_seconds``. Instantaneous: its "started" and "ended" come together.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from alerts.events import AlertEvent, FrameEvent
from alerts.rules.base import Rule, register_rule
from alerts.rules.config import ZoneRuleConfig
from pipeline.common.geometry import box_iou

# Per object: [oid, label, box, first_ts, last_ts, hits, confidence, flag, frame_mark]
# flag: object_left -> "baseline" / "alerted" state; object_removed -> "established".
_OID, _LABEL, _BOX, _FIRST, _LAST, _HITS, _CONF, _FLAG, _MARK = range(9)
_MAX_OBJECTS = 256  # bound on candidates per rule and camera (people walking past create many)


class _StationaryRule(Rule):
    def __init__(self, cfg: Any, camera_id: str):
        super().__init__(cfg, camera_id)
        self._objs: list[list[Any]] = []
        self._next_id = 1
        self._frame_no = 0
        self._t0: float | None = None

    def _observe(self, frame: FrameEvent, new_flag: Any) -> int:
        """Match this frame's detections to known positions; returns this frame's mark."""
        ts = frame.ts
        if self._t0 is None:
            self._t0 = ts
        self._frame_no += 1
        mark = self._frame_no
        thr = self.cfg.iou_threshold
        objs = self._objs
        for d in self.select(frame):
            best, best_v = None, 0.0
            for o in objs:
                if o[_MARK] == mark or o[_LABEL] != d.label:
                    continue
                v = box_iou(o[_BOX], d.box)
                if v >= thr and v > best_v:
                    best, best_v = o, v
            if best is not None:
                best[_LAST], best[_CONF], best[_MARK] = ts, d.confidence, mark
                best[_HITS] += 1
            else:
                flag = new_flag(ts) if callable(new_flag) else new_flag
                objs.append([self._next_id, d.label, d.box, ts, ts, 1, d.confidence, flag, mark])
                self._next_id += 1
        if len(objs) > _MAX_OBJECTS:
            keep = sorted(objs, key=lambda o: (o[_FLAG] is True, o[_LAST]), reverse=True)
            ids = {o[_OID] for o in keep[:_MAX_OBJECTS]}
            self._objs = [o for o in objs if o[_OID] in ids]
        return mark

    def _subject(self, o: list[Any]) -> str:
        return f"object:{o[_OID]}"

    def reset(self) -> None:
        self._objs = []
        self._t0 = None

    def _state(self) -> dict[str, Any]:
        return {
            "objs": self._objs,
            "next_id": self._next_id,
            "frame_no": self._frame_no,
            "t0": self._t0,
        }

    def _load_state(self, state: dict[str, Any]) -> None:
        self._objs = [list(o[:2]) + [tuple(o[2])] + list(o[3:]) for o in state.get("objs", [])]
        self._next_id = int(state.get("next_id", 1))
        self._frame_no = int(state.get("frame_no", 0))
        self._t0 = state.get("t0")


class ObjectLeftConfig(ZoneRuleConfig):
    type: Literal["object_left"]
    min_seconds: float = Field(30.0, gt=0.0)
    iou_threshold: float = Field(0.5, gt=0.0, le=1.0)
    clear_after_s: float = Field(5.0, ge=0.0)
    warmup_s: float = Field(10.0, ge=0.0)


class ObjectRemovedConfig(ZoneRuleConfig):
    type: Literal["object_removed"]
    present_s: float = Field(60.0, gt=0.0)
    min_seconds: float = Field(10.0, gt=0.0)
    iou_threshold: float = Field(0.5, gt=0.0, le=1.0)
    clear_after_s: float = Field(5.0, ge=0.0)


@register_rule
class ObjectLeftRule(_StationaryRule):
    type = "object_left"
    config_model = ObjectLeftConfig

    def process(self, frame: FrameEvent) -> list[AlertEvent]:
        cfg = self.cfg
        t0 = self._t0 if self._t0 is not None else frame.ts
        # flag: "baseline" (part of the scene), "watch", or True once alerted
        mark = self._observe(frame, lambda ts: "baseline" if ts - t0 <= cfg.warmup_s else "watch")
        ts = frame.ts
        out: list[AlertEvent] = []
        gone = False
        for o in self._objs:
            if o[_MARK] == mark:
                if o[_FLAG] == "watch" and ts - o[_FIRST] >= cfg.min_seconds:
                    o[_FLAG] = True
                    self._start(
                        out,
                        frame,
                        self._subject(o),
                        o[_FIRST],
                        label=o[_LABEL],
                        box=o[_BOX],
                        confidence=o[_CONF],
                        details={"stationary_s": round(ts - o[_FIRST], 3)},
                    )
            elif ts - o[_LAST] > cfg.clear_after_s:
                gone = True
                if o[_FLAG] is True:
                    self._end(
                        out,
                        frame,
                        self._subject(o),
                        ended_at=o[_LAST],
                        details={"stationary_s": round(o[_LAST] - o[_FIRST], 3)},
                    )
        if gone:
            self._objs = [
                o for o in self._objs if o[_MARK] == mark or ts - o[_LAST] <= cfg.clear_after_s
            ]
        return out


@register_rule
class ObjectRemovedRule(_StationaryRule):
    type = "object_removed"
    config_model = ObjectRemovedConfig

    def process(self, frame: FrameEvent) -> list[AlertEvent]:
        cfg = self.cfg
        mark = self._observe(frame, False)  # flag: established in place for present_s
        ts = frame.ts
        out: list[AlertEvent] = []
        keep = []
        for o in self._objs:
            if o[_MARK] == mark:
                if not o[_FLAG] and ts - o[_FIRST] >= cfg.present_s:
                    o[_FLAG] = True
                keep.append(o)
                continue
            missing = ts - o[_LAST]
            if o[_FLAG]:
                if missing < cfg.min_seconds:
                    keep.append(o)
                    continue
                subject = self._subject(o)
                alert = self._start(
                    out,
                    frame,
                    subject,
                    o[_LAST],
                    label=o[_LABEL],
                    box=o[_BOX],
                    confidence=o[_CONF],
                    details={
                        "present_s": round(o[_LAST] - o[_FIRST], 3),
                        "missing_s": round(missing, 3),
                    },
                )
                if alert is not None:
                    self._end(out, frame, subject, reason="removed")
            elif missing <= cfg.clear_after_s:
                keep.append(o)
        self._objs = keep
        return out
