"""Alert rule types: one module per type, each holding its config model and its logic.

``base`` has the :class:`Rule` interface and ``register_rule``; ``config`` the keys every rule
accepts and ``parse_rule``. Importing this package registers the built-in types.
"""

from __future__ import annotations

from alerts.rules import (
    count_anomaly,
    crowding,
    line_crossing,
    loitering,
    object_left,
    zone_intrusion,
)
from alerts.rules.base import RULE_TYPES, Rule, register_rule
from alerts.rules.config import RULE_CONFIGS, RuleConfig, ZoneRuleConfig, parse_rule

__all__ = [
    "RULE_CONFIGS",
    "RULE_TYPES",
    "Rule",
    "RuleConfig",
    "ZoneRuleConfig",
    "count_anomaly",
    "crowding",
    "line_crossing",
    "loitering",
    "object_left",
    "parse_rule",
    "register_rule",
    "zone_intrusion",
]
