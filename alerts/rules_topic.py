"""Live rules: the compacted Kafka topic ``kafka.topics.rules`` (docs/console.md, docs/rules.md).

Key = rule id; value = the rule's mapping as in the YAML's ``alerts.rules`` list (JSON, only the
keys that were given, so a default keeps following the code like in the YAML); a tombstone
deletes the rule. One partition, so every reader sees the changes in the order they were made.

* management (``vigil rules``, the console): :func:`put_rule`, :func:`delete_rule`,
  :func:`read_rules` (the topic read to its end offsets), :func:`seed_rules` (the YAML's rules
  the topic does not have yet), :func:`validate_rule` (the YAML's checks and error texts);
* the alert service: :class:`RulesWatcher` keeps reading the topic (no consumer group: every
  service instance reads every rule) and reports the full rule set after each change.

The topic is the table :data:`RULES` (``pipeline/common/compacted_table.py``, like the camera
registry): validation and the handling of unusable records are the table's; every call has a
timeout.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from alerts.rules import RuleConfig, parse_rule
from pipeline.common.compacted_table import CompactedTable, TableFollower, TableRecordError
from pipeline.common.contracts import CAMERA_ID
from pipeline.common.kafka import KafkaConfig, ensure_topics

log = logging.getLogger(__name__)

__all__ = [
    "RULES",
    "RuleRecordError",
    "RulesWatcher",
    "delete_rule",
    "put_rule",
    "read_rules",
    "rule_from_record",
    "rule_value",
    "seed_rules",
    "validate_rule",
]


class RuleRecordError(TableRecordError):
    """A record of the rules topic that is not a usable rule (logged and skipped by readers)."""


def validate_rule(raw: dict[str, Any]) -> RuleConfig:
    """Validate one rule mapping exactly like the YAML's ``alerts.rules`` (same checks, same
    ``RulesError`` texts, e.g. ``rule 'door': zone: polygon needs at least 3 points``). The only
    check across rules in the YAML, unique ids, holds by construction: the topic is keyed by id."""
    return parse_rule(raw, 0)


def rule_value(rule: RuleConfig) -> dict[str, Any]:
    """The record value of ``rule``: the keys that were given, as JSON types. ``parse_rule`` of it
    gives the same rule (same ``model_dump()``, same ``fingerprint()``)."""
    return rule.model_dump(mode="json", exclude_unset=True)


def _check_rule_id(rule_id: str) -> None:
    if not isinstance(rule_id, str) or not CAMERA_ID.match(rule_id):
        raise ValueError(f"invalid rule id {rule_id!r}")


# The rules topic as a table: a rule is validated like the YAML's, and a change of a rule is a
# change of its fingerprint (what the alert service's state is keyed by).
RULES: CompactedTable[RuleConfig] = CompactedTable(
    topic_of=lambda cfg: cfg.topics.rules,
    parse=validate_rule,
    key_of=lambda rule: rule.id,
    encode=rule_value,
    check_key=_check_rule_id,
    same=lambda a, b: a.fingerprint() == b.fingerprint(),
    reader="rules",
    noun="rule",
    client="rules",
    logger=log,
    error=RuleRecordError,
)


def rule_from_record(key: bytes | None, value: bytes | None) -> RuleConfig | None:
    """Parse one record; None for a tombstone. ``RuleRecordError`` (one line) when unusable."""
    return RULES.parse_record(key, value)


# -- management (``vigil rules``, the console) -----------------------------------------------------


def put_rule(kafka_cfg: KafkaConfig, rule: RuleConfig, timeout_s: float = 15.0) -> None:
    """Create or replace ``rule`` (validated again from its record value, so what is stored is
    what every reader will parse); returns once Kafka acknowledged it."""
    RULES.put(kafka_cfg, [rule], timeout_s)


def delete_rule(kafka_cfg: KafkaConfig, rule_id: str, timeout_s: float = 15.0) -> None:
    """Delete a rule (a tombstone); returns once Kafka acknowledged it."""
    RULES.delete(kafka_cfg, [rule_id], timeout_s)


def read_rules(kafka_cfg: KafkaConfig, timeout_s: float = 15.0) -> dict[str, RuleConfig]:
    """The current rules, by id (in id order): the topic read from the beginning to its end
    offsets. Invalid records are logged and skipped (counted in vigil_records_skipped_total).
    ``TimeoutError`` when reading the records takes longer than ``timeout_s``; no topic yet: no
    rules. Only the latest record of each id is validated, after the read and outside its
    deadline: validation cannot make the read time out (and the service retry it forever)."""
    return RULES.read(kafka_cfg, timeout_s)


def seed_rules(
    kafka_cfg: KafkaConfig, rules: list[RuleConfig], timeout_s: float = 15.0
) -> list[str]:
    """Publish the ``rules`` (the YAML's) whose id the topic does not have yet; returns their ids.
    A key whose record is invalid counts as present (it is not overwritten); a deleted rule
    (tombstone) counts as absent, so a YAML rule deleted live comes back at the next start
    unless it is removed from the YAML too. The topic is created when missing."""
    ensure_topics(kafka_cfg, timeout_s=timeout_s)  # the read below needs the topic
    present = RULES.read_keys(kafka_cfg, timeout_s)
    missing = [r for r in rules if r.id not in present]
    if missing:
        RULES.put(kafka_cfg, missing, timeout_s)
    return [r.id for r in missing]


# -- the alert service ---------------------------------------------------------------------------


class RulesWatcher(TableFollower[RuleConfig]):
    """Keeps the live rules from the topic, in a thread (a :class:`TableFollower` of
    :data:`RULES`): no consumer group, every service instance reads every rule.
    ``on_change(rules)`` (all the valid rules by id, in id order) is called from this thread once
    the initial read reached the end offsets, then after every change of the rule set (a record
    that changes nothing, or an invalid one, calls nothing). Kafka outages are retried with
    backoff, one log line each way."""

    def __init__(
        self,
        kafka_cfg: KafkaConfig,
        on_change: Callable[[dict[str, RuleConfig]], None],
        client_suffix: str = "rules-watcher",
        poll_timeout_ms: int = 500,
        retry_max_s: float = 10.0,
    ) -> None:
        super().__init__(
            RULES,
            kafka_cfg,
            on_change,
            name="rules-watcher",
            client_suffix=client_suffix,
            poll_timeout_ms=poll_timeout_ms,
            retry_max_s=retry_max_s,
        )

    @property
    def rules(self) -> dict[str, RuleConfig]:
        return self.items
