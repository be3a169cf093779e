"""Live rules in the alert service (``alerts.service.live_rules``, docs/rules.md).

At start the rules topic is seeded with the YAML's rules it lacks and its rules replace the
YAML's; a :class:`RulesWatcher` thread then reports every change, which is recorded like a
rebalance and applied between batches (:meth:`LiveRules._apply_rule_change`): unchanged rules
keep their state, the open alerts of a changed or deleted rule end (``reason: rule_changed``)
and are stored and published at once like a batch without offsets, and every partition is
checkpointed. Checkpoints key rule states by fingerprint, so a restore after a crash in the
middle of a change ends the same alerts again (``RuleEngine.pop_changed_ends``), which Redis
already has.

:class:`LiveRules` is a part of :class:`alerts.service.AlertService`, which sets the attributes
it declares.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from kafka import TopicPartition
from kafka.errors import KafkaError

from alerts.batch import BatchAlert
from alerts.config import AlertsConfig, AlertServiceConfig, AlertsSettings
from alerts.engine import RuleEngine
from alerts.rules import RuleConfig
from alerts.rules_topic import RulesWatcher, read_rules, seed_rules
from pipeline.common.consumer_loop import tp_order
from pipeline.common.kafka import KafkaUnavailable
from pipeline.common.retry import Retrier

log = logging.getLogger(__name__)


class LiveRules:
    # set by AlertService.__init__
    cfg: AlertsSettings
    acfg: AlertsConfig
    scfg: AlertServiceConfig
    name: str
    retrier: Retrier
    _stop: threading.Event
    _lock: threading.Lock
    _engines: dict[TopicPartition, RuleEngine]
    _next_offset: dict[TopicPartition, int | None]
    _dirty: set[TopicPartition]
    _consistent: bool
    # the watcher thread records the latest rule set here (under _lock); the main loop
    # applies it between batches
    _watcher: RulesWatcher | None
    _rules_pending: dict[str, RuleConfig] | None
    _checkpoint: Callable[..., None]
    _handle_batch: Callable[..., None]

    def _start_live_rules(self) -> None:
        """Seed the rules topic with the YAML's rules it lacks, take its rules instead of the
        YAML's, then watch it. Runs before the first poll, so every partition's engine is built
        with the topic's rules (no alert of a stale rule at start)."""
        if not self.scfg.live_rules or self._watcher is not None:
            return
        kcfg = self.cfg.kafka
        timeout_s = kcfg.request_timeout_ms / 1000
        errors = (KafkaError, KafkaUnavailable, TimeoutError)
        yaml_rules = list(self.acfg.rules)
        seeded = self.retrier.retry(
            "Kafka rules seed",
            lambda: seed_rules(kcfg, yaml_rules, timeout_s),
            self._stop,
            errors,
        )
        rules = self.retrier.retry(
            "Kafka rules read", lambda: read_rules(kcfg, timeout_s), self._stop, errors
        )
        acfg = self.acfg.with_rules(list(rules.values()))
        RuleEngine(acfg)  # a type without implementation fails the start, like a YAML rule
        self.acfg = acfg
        log.info(
            "live rules: %d rule(s) in %s (%d seeded from the YAML: %s)",
            len(rules),
            kcfg.topics.rules,
            len(seeded),
            ", ".join(seeded) or "none",
        )
        self._watcher = RulesWatcher(
            kcfg,
            self._rules_changed,
            client_suffix=f"alerts-rules-{self.name}",
            poll_timeout_ms=min(500, self.scfg.poll_timeout_ms),
            retry_max_s=self.scfg.retry_max_s,
        ).start()

    def _rules_changed(self, rules: dict[str, RuleConfig]) -> None:
        """The watcher's callback (its thread): record the latest rule set, do nothing else."""
        with self._lock:
            self._rules_pending = rules

    def _apply_rule_change(self) -> None:
        """Apply the rule set the watcher recorded, between batches.

        The ended events of the changed rules' open alerts go through ``_handle_batch`` right
        away, with no offsets, rather than with the next batch: a change then takes effect even
        when no detection arrives, and it keeps exactly-once because (1) the state before the
        change is checkpointed first (``checkpoint_interval_s > 0`` may hold some back), so a
        crash never replays messages of the old rules under the new ones; (2) the ended events
        are stored in Redis (idempotent per (id, status)) before Kafka, like any alert; (3) every
        partition is checkpointed after the change; a crash before that restores the pre-change
        checkpoint under the new rules, and ``restore`` ends the same alerts with the same
        events (same engine state), which Redis already has."""
        with self._lock:
            rules, self._rules_pending = self._rules_pending, None
        if rules is None:
            return
        before = {r.id: r.fingerprint() for r in self.acfg.rules}
        after = {rid: r.fingerprint() for rid, r in rules.items()}
        if before == after:
            return
        try:
            acfg = self.acfg.with_rules(list(rules.values()))
            RuleEngine(acfg)  # validate before any engine changes
        except ValueError as e:  # RulesError too; not reached for rules the watcher validated
            log.error("rule change not applied: %s", e)
            return
        if self._dirty:  # only with checkpoint_interval_s > 0
            self._checkpoint(sorted(self._dirty, key=tp_order))
        self._consistent = False
        self.acfg = acfg
        ends: list[BatchAlert] = []
        for tp in sorted(self._engines, key=tp_order):
            for ev in self._engines[tp].replace_rules(acfg):
                ends.append(BatchAlert.of(ev, ev.updated_at))
            if self._next_offset.get(tp) is not None:
                self._dirty.add(tp)  # rule states re-keyed: checkpoint even without ends
        if ends:
            self._handle_batch(ends, [], {})
        if self._dirty:
            self._checkpoint(sorted(self._dirty, key=tp_order))
        self._consistent = True
        log.info(
            "rules changed: added %s, changed %s, removed %s; %d open alert(s) ended",
            _ids(after.keys() - before.keys()),
            _ids(k for k in after.keys() & before.keys() if after[k] != before[k]),
            _ids(before.keys() - after.keys()),
            len(ends),
        )

    def _restored_ends(self, fresh: set[TopicPartition]) -> list[BatchAlert]:
        """The ended events of alerts whose rule changed since the checkpoints just restored."""
        out: list[BatchAlert] = []
        for tp in sorted(fresh, key=tp_order):
            engine = self._engines.get(tp)
            ends = engine.pop_changed_ends() if engine is not None else []
            if ends:
                out += [BatchAlert.of(ev, ev.updated_at) for ev in ends]
                if self._next_offset.get(tp) is not None:
                    self._dirty.add(tp)
                log.info(
                    "%s[%d]: %d open alert(s) of changed rules ended",
                    tp.topic,
                    tp.partition,
                    len(ends),
                )
        return out


def _ids(ids: Any) -> str:
    return ", ".join(sorted(ids)) or "-"
