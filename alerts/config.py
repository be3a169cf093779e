"""The ``alerts:`` section of the YAML: the alert service, its tracker, and the list of rules.

Strict like the rest of the config (unknown keys are errors), and every error names the rule id
and the key, because a deployment has dozens of rules and "field required" alone is useless.
Each rule type's model lives with its logic in ``alerts/rules/<type>.py`` and is chosen by
``type`` through ``RULE_CONFIGS``. The root config (``pipeline.config``) composes this section.
"""

from __future__ import annotations

from typing import Any, Literal, Protocol

from pydantic import Field, PrivateAttr, SerializeAsAny, ValidationError, field_validator

from alerts.errors import RulesError
from alerts.rules import RULE_CONFIGS, RuleConfig, parse_rule
from alerts.rules.config import _pydantic_errors
from pipeline.common.config import StrictModel
from pipeline.common.contracts import Connections

__all__ = [
    "RULE_CONFIGS",
    "AlertServiceConfig",
    "AlertsConfig",
    "RuleConfig",
    "RulesError",
    "TrackerConfig",
    "parse_alerts_config",
]


class TrackerConfig(StrictModel):
    """The alert service's own IoU tracker, used for detections that arrive without a track id."""

    enabled: bool = True
    iou_threshold: float = Field(0.3, gt=0.0, le=1.0)
    max_age_s: float = Field(5.0, gt=0.0)


class AlertServiceConfig(StrictModel):
    """``alerts.service``: the alert service (``vigil alerts serve``); see docs/redis.md."""

    group_id: str = "vigil-alerts"
    # Static group membership (KIP-345): an instance restarted with the same id gets its
    # partitions back at once instead of after session_timeout_ms. Unique per instance.
    instance_id: str | None = None
    # Detection messages per batch, at most (a poll returns what is there, so this only bounds
    # a backlog). Each batch pays fixed costs (checkpoint, Kafka commit, 4 Redis round trips, one
    # wait for Kafka acknowledgements): on a backlog 2000 gave 15-40% more msgs/s than 500 (the
    # alert service bench, docs/redis.md), for ~0.2 s per batch at 10k msgs/s. Lower it for less
    # replay work per crash.
    max_batch: int = Field(2000, ge=1, le=10_000)
    poll_timeout_ms: int = Field(500, ge=10, le=60_000)
    # Where a new group starts. "earliest": nothing produced before the first start is missed.
    auto_offset_reset: Literal["earliest", "latest"] = "earliest"
    session_timeout_ms: int = Field(10_000, ge=6000)
    max_poll_interval_ms: int = Field(300_000, ge=10_000)
    # 0 = checkpoint the rule state after every batch (the least replay after a crash).
    checkpoint_interval_s: float = Field(0.0, ge=0.0, le=3600.0)
    retry_initial_s: float = Field(0.2, gt=0.0)
    retry_max_s: float = Field(10.0, gt=0.0)
    alert_ttl_s: int | None = Field(
        30 * 24 * 3600, ge=3600, description="alert hashes; null = keep"
    )
    snapshot_quality: int = Field(85, ge=10, le=100)
    # The ingest worker stores frames from a background thread, so a fresh detection can arrive
    # here before its frame: wait this long once per batch and look again (fresh alerts only).
    snapshot_wait_s: float = Field(0.3, ge=0, le=5)
    dlq_max_value_bytes: int = Field(65_536, ge=256)
    # A detection message whose capture_ts lies further ahead of (or behind) both the Kafka
    # record's timestamp and this service's clock is dead-lettered: one message from a broken
    # clock (or a forged one) must not move a camera's time far away for good. null: no bound.
    max_future_s: float | None = Field(300.0, gt=0)
    max_age_s: float | None = Field(24 * 3600.0, gt=0)
    # A detection message whose reader epoch lies further ahead of this service's clock or of
    # its own capture_ts is dead-lettered: the newest epoch owns a camera, so one forged message
    # with a future epoch would otherwise mute the camera's real reader. null: no bound.
    max_clock_skew_s: float | None = Field(60.0, gt=0)
    # Rules from the compacted topic kafka.topics.rules (seeded with the YAML's rules it does not
    # have yet), changes applied within seconds without a restart (docs/rules.md, "Live rules").
    # false: the YAML's rules only, read once at start.
    live_rules: bool = True


class AlertsConfig(StrictModel):
    tracker: TrackerConfig = TrackerConfig()
    service: AlertServiceConfig = AlertServiceConfig()
    rules: list[SerializeAsAny[RuleConfig]] = []

    @field_validator("rules", mode="before")
    @classmethod
    def _dispatch(cls, v: Any) -> Any:
        if not isinstance(v, list):
            return v
        return [r if isinstance(r, RuleConfig) else parse_rule(r, i) for i, r in enumerate(v)]

    _configured: bool = PrivateAttr(default=False)

    @property
    def configured(self) -> bool:
        """True when the YAML had a non-empty ``alerts:`` section (``vigil run`` then starts the
        alert service in-process)."""
        return self._configured

    def rules_for(self, camera_id: str) -> list[RuleConfig]:
        return [r for r in self.rules if r.enabled and r.applies_to(camera_id)]

    def with_rules(self, rules: list[RuleConfig]) -> AlertsConfig:
        """This config with another rule list (tracker and service settings kept): the live
        rules replace the YAML's. ``RulesError`` on a duplicate id, like the YAML."""
        seen: set[str] = set()
        dup: list[str] = []
        for r in rules:
            if r.id in seen:
                dup.append(r.id)
            seen.add(r.id)
        if dup:
            raise RulesError(
                [
                    (
                        rid,
                        "id",
                        "duplicate rule id; ids must be unique (alert ids derive from them)",
                    )
                    for rid in dup
                ]
            )
        cfg = self.model_copy(update={"rules": list(rules)})
        cfg._configured = self._configured
        return cfg


def parse_alerts_config(data: Any) -> AlertsConfig:
    """Validate the ``alerts:`` mapping; ``RulesError`` lists every problem, each naming its rule
    and key (e.g. ``rule 'lobby-intrusion': zone: polygon needs at least 3 points``)."""
    if data is None:
        data = {}
    if isinstance(data, AlertsConfig):
        return data
    if not isinstance(data, dict):
        raise RulesError([(None, "", f"must be a mapping, got {type(data).__name__}")])
    errors: list[tuple[str | None, str, str]] = []
    raw_rules = data.get("rules") or []
    rules: list[RuleConfig] = []
    if not isinstance(raw_rules, list):
        errors.append((None, "rules", "must be a list of rules"))
        raw_rules = []
    for i, raw in enumerate(raw_rules):
        try:
            rules.append(parse_rule(raw, i))
        except RulesError as e:
            errors.extend(e.errors)
    seen: set[Any] = set()
    for raw in raw_rules:
        rid = raw.get("id") if isinstance(raw, dict) else None
        if isinstance(rid, str) and rid in seen:
            errors.append(
                (rid, "id", "duplicate rule id; ids must be unique (alert ids derive from them)")
            )
        seen.add(rid)
    try:
        cfg = AlertsConfig.model_validate({k: v for k, v in data.items() if k != "rules"})
    except ValidationError as e:
        errors.extend(_pydantic_errors(e, None))
        cfg = None
    if errors:
        raise RulesError(errors)
    assert cfg is not None
    cfg.rules = rules
    cfg._configured = bool(data)
    return cfg


class AlertsSettings(Connections, Protocol):
    """What the alert service needs of the root config: Kafka, Redis and this section."""

    alerts: AlertsConfig
