"""Loitering / dwell: the same track inside a zone for longer than ``dwell_s`` seconds.

Zone intrusion with a time threshold and a longer gap tolerance (people standing still are
missed by the detector more often), so it reuses that rule's per-track presence bookkeeping.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from alerts.rules.base import register_rule
from alerts.rules.config import ZoneRuleConfig
from alerts.rules.zone_intrusion import ZoneIntrusionRule


class LoiteringConfig(ZoneRuleConfig):
    type: Literal["loitering"]
    dwell_s: float = Field(gt=0.0)
    clear_after_s: float = Field(5.0, ge=0.0)


@register_rule
class LoiteringRule(ZoneIntrusionRule):
    type = "loitering"
    config_model = LoiteringConfig

    def confirmed(self, st: list[Any], ts: float) -> bool:
        return ts - st[0] >= self.cfg.dwell_s
