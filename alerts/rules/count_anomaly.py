"""Statistical anomaly: a class's count per minute far from its learned baseline.

No hand-written threshold: for each class and local hour of day the rule keeps an exponentially
weighted mean and variance of the per-minute count, and flags a minute whose z-score passes
``z_threshold`` once that hour has ``min_samples`` minutes of history. A minute is closed by the
first frame of a later minute; minutes with no frames (camera offline) are skipped rather than
read as zero, and minutes covered less than ``min_coverage`` are neither judged nor learned.

``measure: tracks`` counts distinct tracks seen in the minute (activity);
``measure: mean`` is the mean number of objects per frame (occupancy).
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any, Literal

from pydantic import Field, field_validator

from alerts.events import AlertEvent, FrameEvent
from alerts.rules.base import Rule, register_rule
from alerts.rules.config import ZoneRuleConfig
from alerts.schedule import load_zone


class CountAnomalyConfig(ZoneRuleConfig):
    type: Literal["count_anomaly"]
    measure: Literal["tracks", "mean"] = "tracks"
    z_threshold: float = Field(3.0, gt=0.0)
    alpha: float = Field(0.05, gt=0.0, le=1.0)
    min_samples: int = Field(30, ge=2)
    min_std: float = Field(1.0, gt=0.0)
    direction: Literal["above", "below", "both"] = "above"
    timezone: str = "UTC"
    min_coverage: float = Field(0.5, ge=0.0, le=1.0)

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        load_zone(v)
        return v


@register_rule
class CountAnomalyRule(Rule):
    type = "count_anomaly"
    config_model = CountAnomalyConfig

    def __init__(self, cfg: Any, camera_id: str):
        super().__init__(cfg, camera_id)
        self._tz = load_zone(cfg.timezone)
        self._tracks_mode = cfg.measure == "tracks"
        # "label|hour" -> [mean, var, n]
        self.baseline: dict[str, list[float]] = {}
        self._known: dict[str, None] = dict.fromkeys(cfg.classes or ())  # ordered set
        self._reset_bucket(None)

    def _reset_bucket(self, minute: int | None) -> None:
        self._minute = minute
        self._first_ts = self._last_ts = 0.0
        self._frames = 0
        self._seen: dict[str, set[int]] = {}  # label -> track ids (tracks mode)
        self._sum: dict[str, int] = {}  # label -> detections summed over frames

    def process(self, frame: FrameEvent) -> list[AlertEvent]:
        ts = frame.ts
        minute = int(ts // 60)
        out: list[AlertEvent] = []
        if minute != self._minute:
            if self._minute is not None:
                self._close(out, frame)
            self._reset_bucket(minute)
            self._first_ts = ts
        self._last_ts = ts
        self._frames += 1
        dets = self.select(frame)
        if self._tracks_mode:
            seen = self._seen
            for d in dets:
                s = seen.get(d.label)
                if s is None:
                    s = seen[d.label] = set()
                s.add(d.track_id if d.track_id is not None else -len(s) - 1)
        else:
            sums = self._sum
            for d in dets:
                sums[d.label] = sums.get(d.label, 0) + 1
        return out

    def _close(self, out: list[AlertEvent], frame: FrameEvent) -> None:
        """Judge the finished minute against its hour's baseline, then learn from it."""
        cfg = self.cfg
        if self._last_ts - self._first_ts < cfg.min_coverage * 60 - 1e-9 and cfg.min_coverage > 0:
            return
        start = self._minute * 60
        hour = datetime.fromtimestamp(start, self._tz).hour
        labels = self._seen if self._tracks_mode else self._sum
        if cfg.classes is None:
            for lb in labels:
                self._known.setdefault(lb, None)
        for label in self._known:
            if self._tracks_mode:
                x = float(len(self._seen.get(label, ())))
            else:
                x = self._sum.get(label, 0) / self._frames
            key = f"{label}|{hour}"
            b = self.baseline.get(key)
            z = None
            if b is not None and b[2] >= cfg.min_samples:
                z = (x - b[0]) / max(math.sqrt(b[1]), cfg.min_std)
            anomalous = z is not None and (
                (z >= cfg.z_threshold and cfg.direction != "below")
                or (z <= -cfg.z_threshold and cfg.direction != "above")
            )
            subject = f"label:{label}"
            if anomalous:
                if not self.is_open(subject):
                    self._start(
                        out,
                        frame,
                        subject,
                        float(start),
                        label=label,
                        count=round(x) if self._tracks_mode else None,
                        details={
                            "value": round(x, 4),
                            "expected": round(b[0], 4),
                            "std": round(math.sqrt(b[1]), 4),
                            "z": round(z, 3),
                            "hour": hour,
                            "samples": int(b[2]),
                            "measure": cfg.measure,
                        },
                    )
            elif self.is_open(subject):
                self._end(
                    out, frame, subject, ended_at=float(start), details={"value_after": round(x, 4)}
                )
            self._learn(key, x, b)

    def _learn(self, key: str, x: float, b: list[float] | None) -> None:
        """EWMA mean/variance; early samples are weighted 1/n so the warm-up is a plain average."""
        if b is None:
            self.baseline[key] = [x, 0.0, 1]
            return
        n = b[2] + 1
        a = max(self.cfg.alpha, 1.0 / n)
        diff = x - b[0]
        incr = a * diff
        b[0] += incr
        b[1] = (1.0 - a) * (b[1] + diff * incr)
        b[2] = n

    def reset(self) -> None:
        self._reset_bucket(None)

    def _state(self) -> dict[str, Any]:
        return {
            "baseline": [[k, v] for k, v in self.baseline.items()],
            "known": list(self._known),
            "bucket": [
                self._minute,
                self._first_ts,
                self._last_ts,
                self._frames,
                [[lb, sorted(s)] for lb, s in self._seen.items()],
                [[lb, n] for lb, n in self._sum.items()],
            ],
        }

    def _load_state(self, state: dict[str, Any]) -> None:
        self.baseline = {k: list(v) for k, v in state.get("baseline", [])}
        self._known = dict.fromkeys(state.get("known", []))
        bucket = state.get("bucket")
        if bucket:
            minute, first, last, frames, seen, sums = bucket
            self._minute, self._first_ts, self._last_ts, self._frames = minute, first, last, frames
            self._seen = {lb: set(ids) for lb, ids in seen}
            self._sum = {lb: n for lb, n in sums}
