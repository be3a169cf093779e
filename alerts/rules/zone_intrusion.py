"""Zone intrusion: an object of a watched class inside a zone for at least N frames or seconds.

One alert per track; it ends once the track has not been seen inside the zone for
``clear_after_s`` (short gaps from missed detections do not end it).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from alerts.events import AlertEvent, FrameEvent
from alerts.rules.base import Rule, register_rule
from alerts.rules.config import ZoneRuleConfig

# Per-track presence: [first_ts, last_ts, frames_seen, label, alerted]
_FIRST, _LAST, _FRAMES, _LABEL, _ALERTED = range(5)


class ZoneIntrusionConfig(ZoneRuleConfig):
    type: Literal["zone_intrusion"]
    min_frames: int | None = Field(None, ge=1)
    min_seconds: float | None = Field(None, ge=0.0)
    clear_after_s: float = Field(2.0, ge=0.0)

    @model_validator(mode="after")
    def _one_threshold(self) -> ZoneIntrusionConfig:
        if self.min_frames is not None and self.min_seconds is not None:
            raise ValueError("min_frames: give min_frames or min_seconds, not both")
        if self.min_frames is None and self.min_seconds is None:
            self.min_frames = 1
        return self


@register_rule
class ZoneIntrusionRule(Rule):
    type = "zone_intrusion"
    config_model = ZoneIntrusionConfig

    def __init__(self, cfg: Any, camera_id: str):
        super().__init__(cfg, camera_id)
        self._clear_after = cfg.clear_after_s
        self._tracks: dict[int, list[Any]] = {}

    def confirmed(self, st: list[Any], ts: float) -> bool:
        """Has this track been inside long enough to alert?"""
        cfg = self.cfg
        if cfg.min_frames is not None:
            return st[_FRAMES] >= cfg.min_frames
        return ts - st[_FIRST] >= cfg.min_seconds

    def process(self, frame: FrameEvent) -> list[AlertEvent]:
        ts = frame.ts
        tracks = self._tracks
        out: list[AlertEvent] = []
        for d in self.select(frame):
            tid = d.track_id
            if tid is None:
                continue  # per-track rule: needs ids (ingest's ByteTrack or the engine's tracker)
            st = tracks.get(tid)
            if st is None:
                st = tracks[tid] = [ts, ts, 0, d.label, False]
            st[_LAST] = ts
            st[_FRAMES] += 1
            if not st[_ALERTED] and self.confirmed(st, ts):
                st[_ALERTED] = True
                self._start(
                    out,
                    frame,
                    f"track:{tid}",
                    st[_FIRST],
                    label=d.label,
                    track_id=tid,
                    box=d.box,
                    confidence=d.confidence,
                    details={"dwell_s": round(ts - st[_FIRST], 3), "frames": st[_FRAMES]},
                )
        if tracks:
            gone = [tid for tid, st in tracks.items() if ts - st[_LAST] > self._clear_after]
            for tid in gone:
                st = tracks.pop(tid)
                if st[_ALERTED]:
                    self._end(
                        out,
                        frame,
                        f"track:{tid}",
                        ended_at=st[_LAST],
                        details={
                            "dwell_s": round(st[_LAST] - st[_FIRST], 3),
                            "frames": st[_FRAMES],
                        },
                    )
        return out

    def reset(self) -> None:
        self._tracks.clear()

    def _state(self) -> dict[str, Any]:
        return {"tracks": [[tid, st] for tid, st in self._tracks.items()]}

    def _load_state(self, state: dict[str, Any]) -> None:
        self._tracks = {int(tid): list(st) for tid, st in state.get("tracks", [])}
