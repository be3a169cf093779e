"""Crowding: at least ``min_count`` objects of a class inside a zone for ``min_seconds``.

Counted per class. Dips below the threshold shorter than ``clear_after_s`` (a person missed for a
frame) neither restart the timer nor end the alert. The "started" alert lists the counted boxes
(``details.boxes``), so its snapshot can show who was counted.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from alerts.events import AlertEvent, FrameEvent
from alerts.rules.base import Rule, register_rule
from alerts.rules.config import ZoneRuleConfig

# Per-label: [onset_ts, last_above_ts, peak, alerted]
_ONSET, _LAST, _PEAK, _ALERTED = range(4)


class CrowdingConfig(ZoneRuleConfig):
    type: Literal["crowding"]
    min_count: int = Field(ge=1)
    min_seconds: float = Field(0.0, ge=0.0)
    clear_after_s: float = Field(2.0, ge=0.0)


@register_rule
class CrowdingRule(Rule):
    type = "crowding"
    config_model = CrowdingConfig

    def __init__(self, cfg: Any, camera_id: str):
        super().__init__(cfg, camera_id)
        self._state_by_label: dict[str, list[Any]] = {}

    def process(self, frame: FrameEvent) -> list[AlertEvent]:
        ts = frame.ts
        cfg = self.cfg
        counts: dict[str, int] = {}
        boxes: dict[str, list] = {}
        for d in self.select(frame):
            counts[d.label] = counts.get(d.label, 0) + 1
            boxes.setdefault(d.label, []).append(d.box)
        states = self._state_by_label
        if not counts and not states:
            return []
        out: list[AlertEvent] = []
        for label, n in counts.items():
            if n < cfg.min_count:
                continue
            st = states.get(label)
            if st is None:
                st = states[label] = [ts, ts, n, False]
            st[_LAST] = ts
            if n > st[_PEAK]:
                st[_PEAK] = n
            if not st[_ALERTED] and ts - st[_ONSET] >= cfg.min_seconds:
                st[_ALERTED] = True
                self._start(
                    out,
                    frame,
                    f"label:{label}",
                    st[_ONSET],
                    label=label,
                    count=n,
                    details={
                        "min_count": cfg.min_count,
                        "boxes": [[round(v, 4) for v in b] for b in boxes[label]],
                    },
                )
        for label in [lb for lb, st in states.items() if ts - st[_LAST] > cfg.clear_after_s]:
            st = states.pop(label)
            if st[_ALERTED]:
                self._end(
                    out,
                    frame,
                    f"label:{label}",
                    ended_at=st[_LAST],
                    count=st[_PEAK],
                    details={"peak": st[_PEAK]},
                )
        return out

    def reset(self) -> None:
        self._state_by_label.clear()

    def _state(self) -> dict[str, Any]:
        return {"labels": [[lb, st] for lb, st in self._state_by_label.items()]}

    def _load_state(self, state: dict[str, Any]) -> None:
        self._state_by_label = {lb: list(st) for lb, st in state.get("labels", [])}
