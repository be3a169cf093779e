"""Line crossing with a direction, and running counts per direction.

A track's side of the line is only updated when its anchor is at least ``min_distance`` from the
line, and a crossing needs the move between two such positions to cut the (finite) segment: a box
jittering on the line is not counted back and forth, and walking around the end of the line is
not a crossing. Each crossing is instantaneous, so its "started" and "ended" come together.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from alerts.events import AlertEvent, FrameEvent
from alerts.geometry import cross, segments_intersect
from alerts.rules.base import Rule, register_rule
from alerts.rules.config import Anchor, RuleConfig, _check_point

# Per-track: [side (+1/-1), x, y, last_ts]
_SIDE, _X, _Y, _TS = range(4)


class LineCrossingConfig(RuleConfig):
    type: Literal["line_crossing"]
    line: tuple[tuple[float, float], tuple[float, float]]
    inside: tuple[float, float] | None = None
    direction: Literal["in", "out", "both"] = "both"
    anchor: Anchor = "bottom_center"
    min_distance: float = Field(0.01, ge=0.0, le=0.5)
    max_age_s: float = Field(5.0, gt=0.0)

    @field_validator("line")
    @classmethod
    def _line(cls, v: tuple[tuple[float, float], tuple[float, float]]):
        _check_point(v[0], "point 0")
        _check_point(v[1], "point 1")
        if abs(v[0][0] - v[1][0]) + abs(v[0][1] - v[1][1]) < 1e-6:
            raise ValueError("the two points of the line are the same")
        return v

    @model_validator(mode="after")
    def _inside_off_line(self) -> LineCrossingConfig:
        if self.inside is not None:
            _check_point(self.inside, "inside:")
            if abs(cross(self.line[0], self.line[1], self.inside)) < 1e-9:
                raise ValueError(
                    "inside: the point lies on the line; pick a point on the 'in' side"
                )
        return self


@register_rule
class LineCrossingRule(Rule):
    type = "line_crossing"
    config_model = LineCrossingConfig

    def __init__(self, cfg: Any, camera_id: str):
        super().__init__(cfg, camera_id)
        (ax, ay), (bx, by) = cfg.line
        self._a, self._b = (ax, ay), (bx, by)
        self._len = math.hypot(bx - ax, by - ay)
        # "in" is the side of ``inside``; by default the right-hand side walking from a to b.
        self._in_side = 1 if cfg.inside is None or cross(self._a, self._b, cfg.inside) > 0 else -1
        self._line_list = [[ax, ay], [bx, by]]
        self._tracks: dict[int, list[float]] = {}
        self.counts = {"in": 0, "out": 0}

    def process(self, frame: FrameEvent) -> list[AlertEvent]:
        ts = frame.ts
        out: list[AlertEvent] = []
        (ax, ay), (bx, by) = self._a, self._b
        dx, dy, length = bx - ax, by - ay, self._len
        margin = self.cfg.min_distance
        tracks = self._tracks
        for d in self.select(frame, zone=False):
            tid = d.track_id
            if tid is None:
                continue
            x, y = self.anchor(d)
            dist = (dx * (y - ay) - dy * (x - ax)) / length
            st = tracks.get(tid)
            if -margin < dist < margin or dist == 0:
                if st is not None:
                    st[_TS] = ts  # still here, but too close to the line to say which side
                continue
            side = 1 if dist > 0 else -1
            if st is None:
                tracks[tid] = [side, x, y, ts]
                continue
            if side != st[_SIDE] and segments_intersect((st[_X], st[_Y]), (x, y), self._a, self._b):
                self._crossed(out, frame, d, side)
            st[_SIDE], st[_X], st[_Y], st[_TS] = side, x, y, ts
        if tracks:
            max_age = self.cfg.max_age_s
            for tid in [t for t, st in tracks.items() if ts - st[_TS] > max_age]:
                del tracks[tid]
        return out

    def _crossed(self, out: list[AlertEvent], frame: FrameEvent, d: Any, side: int) -> None:
        direction = "in" if side == self._in_side else "out"
        self.counts[direction] += 1
        if self.cfg.direction not in ("both", direction):
            return
        subject = f"track:{d.track_id}"
        details = {"direction": direction, "counts": dict(self.counts), "line": self._line_list}
        alert = self._start(
            out,
            frame,
            subject,
            frame.ts,
            label=d.label,
            track_id=d.track_id,
            box=d.box,
            confidence=d.confidence,
            count=self.counts[direction],
            details=details,
        )
        if alert is not None:
            self._end(out, frame, subject, reason="crossed")

    def reset(self) -> None:
        self._tracks.clear()

    def _state(self) -> dict[str, Any]:
        return {"tracks": [[t, st] for t, st in self._tracks.items()], "counts": dict(self.counts)}

    def _load_state(self, state: dict[str, Any]) -> None:
        self._tracks = {int(t): list(st) for t, st in state.get("tracks", [])}
        self.counts = {"in": 0, "out": 0, **state.get("counts", {})}
