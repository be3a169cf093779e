"""Live rules: the compacted Kafka topic ``kafka.topics.rules`` (docs/console.md, docs/rules.md).

Key = rule id; value = the rule's mapping as in the YAML's ``alerts.rules`` list (JSON, only the
keys that were given, so a default keeps following the code like in the YAML); a tombstone
deletes the rule. One partition, so every reader sees the changes in the order they were made.

* management (``vigil rules``, the console): :func:`put_rule`, :func:`delete_rule`,
  :func:`read_rules` (the topic read to its end offsets), :func:`seed_rules` (the YAML's rules
  the topic does not have yet), :func:`validate_rule` (the YAML's checks and error texts);
* the alert service: :class:`RulesWatcher` keeps reading the topic (no consumer group: every
  service instance reads every rule) and reports the full rule set after each change.

Modelled on the camera registry (``pipeline/ingest/registry.py``); every call has a timeout.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kafka import TopicPartition
from kafka.errors import KafkaError

from alerts.errors import RulesError
from alerts.rules import RuleConfig, parse_rule
from pipeline.common.contracts import CAMERA_ID
from pipeline.common.jsoncodec import decode_record
from pipeline.common.kafka import (
    KafkaConfig,
    KafkaUnavailable,
    ensure_topics,
    make_consumer,
    make_producer,
)
from pipeline.common.lifecycle import OutageLog
from pipeline.common.records import SkippedRecords, reason_of

log = logging.getLogger(__name__)


def _skipped() -> SkippedRecords:
    """Each reader of the topic (a read, a watcher) has its own log lines to spend, so a flood
    read by one cannot hide another's bad records; all count in vigil_records_skipped_total."""
    return SkippedRecords(log, "rules")


__all__ = [
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


class RuleRecordError(ValueError):
    """A record of the rules topic that is not a usable rule (logged and skipped by readers)."""

    reason = "invalid"


def validate_rule(raw: dict[str, Any]) -> RuleConfig:
    """Validate one rule mapping exactly like the YAML's ``alerts.rules`` (same checks, same
    ``RulesError`` texts, e.g. ``rule 'door': zone: polygon needs at least 3 points``). The only
    check across rules in the YAML, unique ids, holds by construction: the topic is keyed by id."""
    return parse_rule(raw, 0)


def rule_value(rule: RuleConfig) -> dict[str, Any]:
    """The record value of ``rule``: the keys that were given, as JSON types. ``parse_rule`` of it
    gives the same rule (same ``model_dump()``, same ``fingerprint()``)."""
    return rule.model_dump(mode="json", exclude_unset=True)


def _one_line(e: Exception) -> str:
    return "; ".join(line.strip() for line in str(e).splitlines() if line.strip())


def rule_from_record(key: bytes | None, value: bytes | None) -> RuleConfig | None:
    """Parse one record; None for a tombstone. ``RuleRecordError`` (one line) when unusable."""
    if value is None:
        return None
    name = key.decode(errors="replace") if key is not None else None
    try:
        raw = decode_record(value)
    except ValueError as e:  # too large, nested too deeply, not UTF-8, not JSON
        err = RuleRecordError(f"rule record {name!r}: not JSON ({e})")
        err.reason = reason_of(e)
        raise err from None
    try:
        rule = validate_rule(raw)
    except RulesError as e:
        raise RuleRecordError(f"rule record {name!r}: {_one_line(e)}") from None
    if name is not None and name != rule.id:
        raise RuleRecordError(f"rule record {name!r}: key does not match the rule's id {rule.id!r}")
    return rule


# -- management (``vigil rules``, the console) -----------------------------------------------------


def put_rule(kafka_cfg: KafkaConfig, rule: RuleConfig, timeout_s: float = 15.0) -> None:
    """Create or replace ``rule`` (validated again from its record value, so what is stored is
    what every reader will parse); returns once Kafka acknowledged it."""
    _put(kafka_cfg, [rule], timeout_s)


def delete_rule(kafka_cfg: KafkaConfig, rule_id: str, timeout_s: float = 15.0) -> None:
    """Delete a rule (a tombstone); returns once Kafka acknowledged it."""
    if not isinstance(rule_id, str) or not CAMERA_ID.match(rule_id):
        raise ValueError(f"invalid rule id {rule_id!r}")
    _send(kafka_cfg, [(rule_id, None)], timeout_s)


def read_rules(kafka_cfg: KafkaConfig, timeout_s: float = 15.0) -> dict[str, RuleConfig]:
    """The current rules, by id (in id order): the topic read from the beginning to its end
    offsets. Invalid records are logged and skipped (counted in vigil_records_skipped_total).
    ``TimeoutError`` when reading the records takes longer than ``timeout_s``; no topic yet: no
    rules. Only the latest record of each id is validated, after the read and outside its
    deadline: validation cannot make the read time out (and the service retry it forever)."""
    return _read(kafka_cfg, timeout_s).rules


def seed_rules(
    kafka_cfg: KafkaConfig, rules: list[RuleConfig], timeout_s: float = 15.0
) -> list[str]:
    """Publish the ``rules`` (the YAML's) whose id the topic does not have yet; returns their ids.
    A key whose record is invalid counts as present (it is not overwritten); a deleted rule
    (tombstone) counts as absent, so a YAML rule deleted live comes back at the next start
    unless it is removed from the YAML too. The topic is created when missing."""
    ensure_topics(kafka_cfg, timeout_s=timeout_s)  # the read below needs the topic
    present = _read(kafka_cfg, timeout_s, validate=False).keys
    missing = [r for r in rules if r.id not in present]
    if missing:
        _put(kafka_cfg, missing, timeout_s)
    return [r.id for r in missing]


def _put(kafka_cfg: KafkaConfig, rules: list[RuleConfig], timeout_s: float) -> None:
    items: list[tuple[str, bytes | None]] = []
    for rule in rules:
        value = rule_value(rule)
        validate_rule(value)  # a RuleConfig built without validation must not reach the readers
        items.append((rule.id, json.dumps(value, separators=(",", ":")).encode()))
    _send(kafka_cfg, items, timeout_s)


def _send(kafka_cfg: KafkaConfig, items: list[tuple[str, bytes | None]], timeout_s: float) -> None:
    ensure_topics(kafka_cfg, timeout_s=timeout_s)  # compacted; never a broker-default topic
    # send() blocks at most timeout_s on missing metadata; get() waits as long for the ack
    producer = make_producer(kafka_cfg, "rules", max_block_ms=int(timeout_s * 1000))
    try:
        futures = [producer.send(kafka_cfg.topics.rules, key=k, value=v) for k, v in items]
        for f in futures:
            f.get(timeout=timeout_s)
    finally:
        producer.close(timeout=timeout_s)


@dataclass
class _Topic:
    rules: dict[str, RuleConfig] = field(default_factory=dict)
    keys: set[str] = field(default_factory=set)  # ids with a record, valid or not (no tombstone)


def _apply(
    state: _Topic, topic: str, key: bytes | None, value: bytes | None, skipped: SkippedRecords
) -> bool:
    """Apply one record; True when the valid rule set changed."""
    if key is None:
        skipped.skip(f"of {topic}", "no_key", "a rule record needs its rule id as key")
        return False
    rid = key.decode(errors="replace")
    if value is None:
        state.keys.discard(rid)
        return state.rules.pop(rid, None) is not None
    state.keys.add(rid)
    try:
        rule = rule_from_record(key, value)
    except RuleRecordError as e:
        skipped.skip(f"{rid!r} of {topic}", e.reason, str(e))
        return False
    except Exception as e:  # noqa: BLE001 - whatever a parser raises: skip, never stop the reader
        skipped.skip(f"{rid!r} of {topic}", "error", f"{type(e).__name__}: {e}")
        return False
    assert rule is not None
    old = state.rules.get(rid)
    state.rules[rid] = rule
    return old is None or old.fingerprint() != rule.fingerprint()


def _read(kafka_cfg: KafkaConfig, timeout_s: float, validate: bool = True) -> _Topic:
    """The topic from its beginning to its end offsets, then (``validate``) the latest record of
    each key parsed and validated; ``keys`` only without it."""
    topic = kafka_cfg.topics.rules
    deadline = time.monotonic() + timeout_s
    consumer = make_consumer(
        kafka_cfg,
        "rules-reader",
        group_id=None,
        enable_auto_commit=False,
        allow_auto_create_topics=False,  # reading never creates a topic (not compacted)
    )
    latest = _Latest(_skipped())
    try:
        parts = consumer.partitions_for_topic(topic)
        if not parts:
            return _Topic()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        end = consumer.end_offsets(tps, timeout_ms=int(timeout_s * 1000))
        while True:
            left_ms = int((deadline - time.monotonic()) * 1000)
            if left_ms <= 0:
                raise TimeoutError(f"reading {topic} did not finish in {timeout_s:g} s")
            if all(consumer.position(tp, timeout_ms=left_ms) >= end[tp] for tp in tps):
                break
            for records in consumer.poll(timeout_ms=min(500, left_ms)).values():
                for rec in records:
                    latest.add(topic, rec.key, rec.value)
    finally:
        consumer.close(autocommit=False)
    state = _Topic()
    if not validate:
        state.keys = {rid for rid, (_, versions) in latest.values.items() if versions}
        return state
    latest.apply(state, topic)
    state.rules = dict(sorted(state.rules.items()))
    return state


class _Latest:
    """The records read so far, per key: the versions since its last tombstone, each distinct
    value once. Applied newest first, stopping at the first valid one, they give what applying
    every record in order gives (an invalid record leaves the rule before it as it was), but a
    rule rewritten many times, or a flood of copies of one record, is validated once."""

    def __init__(self, skipped: SkippedRecords) -> None:
        self.skipped = skipped
        self.values: dict[str, tuple[bytes, dict[bytes, None]]] = {}

    def add(self, topic: str, key: bytes | None, value: bytes | None) -> None:
        if key is None:
            self.skipped.skip(f"of {topic}", "no_key", "a rule record needs its rule id as key")
            return
        rid = key.decode(errors="replace")
        entry = self.values.pop(rid, None)  # re-inserted: the order of the latest writes
        versions: dict[bytes, None] = {} if entry is None or value is None else entry[1]
        if value is not None:
            versions.pop(value, None)
            versions[value] = None
        self.values[rid] = (key, versions)

    def apply(self, state: _Topic, topic: str) -> bool:
        """Apply the records to ``state`` (a fresh one); True when its rule set changed."""
        changed = False
        for rid, (key, versions) in self.values.items():
            if not versions:  # deleted
                changed |= _apply(state, topic, key, None, self.skipped)
            for value in reversed(versions):
                changed |= _apply(state, topic, key, value, self.skipped)
                if rid in state.rules:
                    break
        self.values.clear()
        return changed


# -- the alert service ---------------------------------------------------------------------------


class RulesWatcher:
    """Keeps the live rules from the topic, in a thread: assigns its partitions (no consumer
    group), reads from the beginning and keeps polling. ``on_change(rules)`` (all the valid rules
    by id, in id order) is called from this thread once the initial read reached the end
    offsets, then after every change of the rule set (a record that changes nothing, or an
    invalid one, calls nothing). Kafka outages are retried with backoff, one log line each way."""

    def __init__(
        self,
        kafka_cfg: KafkaConfig,
        on_change: Callable[[dict[str, RuleConfig]], None],
        client_suffix: str = "rules-watcher",
        poll_timeout_ms: int = 500,
        retry_max_s: float = 10.0,
    ) -> None:
        self.cfg = kafka_cfg
        self.topic = kafka_cfg.topics.rules
        self._on_change = on_change
        self._suffix = client_suffix
        self._poll_ms = poll_timeout_ms
        self._retry_max_s = retry_max_s
        self._state = _Topic()
        self._skipped = _skipped()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.ready = threading.Event()  # set once the initial read is complete
        self._outage = OutageLog(log, f"Kafka at {kafka_cfg.bootstrap_servers} (rules watcher)")
        self._thread = threading.Thread(target=self._run, name="rules-watcher", daemon=True)

    def start(self) -> RulesWatcher:
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=timeout_s)

    @property
    def rules(self) -> dict[str, RuleConfig]:
        with self._lock:
            return dict(sorted(self._state.rules.items()))

    def _run(self) -> None:
        consumer = None
        end: dict[TopicPartition, int] | None = None  # the initial read's target, then None
        initial = _Latest(self._skipped)  # the initial read's records, validated at its end
        waiting_logged = False
        backoff = 0.2
        timeout_ms = self.cfg.request_timeout_ms
        try:
            while not self._stop.is_set():
                try:
                    if consumer is None:
                        consumer = make_consumer(
                            self.cfg,
                            self._suffix,
                            group_id=None,
                            enable_auto_commit=False,
                            allow_auto_create_topics=False,
                        )
                        parts = consumer.partitions_for_topic(self.topic)
                        if not parts:
                            consumer.close(autocommit=False)
                            consumer = None
                            if not waiting_logged:
                                log.warning(
                                    "rules topic %s does not exist yet; waiting", self.topic
                                )
                                waiting_logged = True
                            self._stop.wait(1.0)
                            continue
                        tps = [TopicPartition(self.topic, p) for p in sorted(parts)]
                        consumer.assign(tps)
                        consumer.seek_to_beginning(*tps)
                        if not self.ready.is_set():
                            end = consumer.end_offsets(tps, timeout_ms=timeout_ms)
                    changed = False
                    for records in consumer.poll(timeout_ms=self._poll_ms).values():
                        if end is not None:  # the initial read: only each id's latest counts
                            for rec in records:
                                initial.add(self.topic, rec.key, rec.value)
                            continue
                        with self._lock:
                            for rec in records:
                                changed |= _apply(
                                    self._state, self.topic, rec.key, rec.value, self._skipped
                                )
                    if end is not None:
                        if all(
                            consumer.position(tp, timeout_ms=timeout_ms) >= o
                            for tp, o in end.items()
                        ):
                            end = None
                            with self._lock:
                                initial.apply(self._state, self.topic)
                            self.ready.set()
                            log.info(
                                "rules topic %s read: %d rule(s)",
                                self.topic,
                                len(self._state.rules),
                            )
                            self._notify()
                    elif changed:
                        self._notify()
                    self._outage.up()
                    backoff = 0.2
                except (KafkaError, KafkaUnavailable) as e:
                    self._outage.down(f"{type(e).__name__}: {e}")
                    if consumer is not None and not self.ready.is_set():
                        # start the initial read again from the beginning, with fresh end offsets
                        consumer.close(autocommit=False)
                        consumer = None
                        with self._lock:
                            self._state = _Topic()
                        initial = _Latest(self._skipped)
                    self._stop.wait(backoff)
                    backoff = min(backoff * 2, self._retry_max_s)
        except Exception:  # a bug: say so once, loudly; the service keeps its current rules
            log.exception("rules watcher stopped")
        finally:
            if consumer is not None:
                try:
                    consumer.close(autocommit=False)
                except Exception:  # noqa: BLE001 - closing on shutdown must not mask the real error
                    log.debug("rules watcher consumer close failed", exc_info=True)

    def _notify(self) -> None:
        try:
            self._on_change(self.rules)
        except Exception:  # the callback's bug must not stop the watcher
            log.exception("rules watcher: on_change failed")
