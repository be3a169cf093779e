"""Partition ownership of the alert service: each assigned partition's rule engine, checkpoints
and offset commits (docs/redis.md).

* save: per partition, the rule engine state together with the next offset, one Redis key each
  (:meth:`PartitionCheckpoints._checkpoint`), then the offsets are committed to Kafka
  asynchronously, in order (``close`` waits for the last commits: :meth:`_commit_sync`);
* load: on assignment a partition's engine is rebuilt from its checkpoint and the consumer seeks
  to the checkpoint's offset (:meth:`_restore`); without one, from the committed offset;
* rebalances: :class:`~pipeline.common.consumer_loop.ConsumerLoop` records the consumer's
  callbacks and calls :meth:`on_revoked` / :meth:`on_assigned` in the main loop between
  batches; :meth:`start_partitions` restores the partitions assigned.

:class:`PartitionCheckpoints` is a part of :class:`alerts.service.AlertService`, which sets the
attributes it declares.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import redis
from kafka import TopicPartition
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata

from alerts import metrics as m
from alerts.config import AlertsConfig, AlertServiceConfig, AlertsSettings
from alerts.engine import RuleEngine
from alerts.store import AlertStore
from pipeline.common.consumer_loop import fmt_partitions, tp_order
from pipeline.common.retry import Retrier

log = logging.getLogger(__name__)


class PartitionCheckpoints:
    """The partition state of :class:`~alerts.service.AlertService` and how it is saved,
    restored and handed over in a rebalance."""

    # set by AlertService.__init__ (consumer: its ConsumerLoop's)
    cfg: AlertsSettings
    acfg: AlertsConfig
    scfg: AlertServiceConfig
    group: str
    store: AlertStore
    consumer: Any
    retrier: Retrier
    stats: dict[str, int]
    _stop: threading.Event
    _crash_point: Callable[[str], None]
    _pending: set[TopicPartition]
    _engines: dict[TopicPartition, RuleEngine]
    _next_offset: dict[TopicPartition, int | None]
    _dirty: set[TopicPartition]
    # offsets committed asynchronously, not yet confirmed by the broker
    _uncommitted: dict[TopicPartition, OffsetAndMetadata]
    _consistent: bool  # False while a batch is half done (state ahead of Redis)
    _last_checkpoint: float

    # -- checkpoints --------------------------------------------------------------------------------

    def _checkpoint_due(self) -> bool:
        iv = self.scfg.checkpoint_interval_s
        return iv <= 0 or time.monotonic() - self._last_checkpoint >= iv

    def _checkpoint(self, tps: list[TopicPartition], retry: bool = True) -> None:
        """Save state + next offset of ``tps`` in Redis, then commit those offsets to Kafka."""
        cps: dict[tuple[str, int], tuple[int, dict[str, Any] | str]] = {}
        for tp in tps:
            engine, offset = self._engines.get(tp), self._next_offset.get(tp)
            if engine is not None and offset is not None:
                cps[(tp.topic, tp.partition)] = (offset, engine.snapshot_json())
        if retry:
            self.retrier.retry(
                "Redis checkpoint",
                lambda: self.store.put_checkpoints(self.group, cps),
                self._stop,
            )
        else:
            self.store.put_checkpoints(self.group, cps)
        self.stats["checkpoints"] += 1
        self._crash_point("checkpointed")
        self._dirty.difference_update(tps)
        self._last_checkpoint = time.monotonic()
        commit = {
            TopicPartition(t, p): OffsetAndMetadata(off, "", -1) for (t, p), (off, _) in cps.items()
        }
        if commit and self.consumer is not None:
            # Asynchronous (a synchronous commit was a broker round trip per batch): the
            # checkpoint already holds the position, the commit only follows it. Commits are
            # sent in order; close() waits for the last ones.
            self._uncommitted.update(commit)
            try:
                self.consumer.commit_async(commit, callback=self._on_commit)
            except KafkaError as e:
                self.retrier.failed("Kafka commit", e, retried=False)

    def _on_commit(self, offsets: dict[TopicPartition, OffsetAndMetadata], result: Any) -> None:
        """Commit callback, run by the consumer in this thread (during poll or commit)."""
        if isinstance(result, Exception):
            self.retrier.failed("Kafka commit", result, retried=False)
            return
        self.retrier.recovered("Kafka commit")
        for tp, om in offsets.items():
            if self._uncommitted.get(tp) == om:
                del self._uncommitted[tp]

    def _commit_sync(self) -> None:
        """Commit what was committed asynchronously and not confirmed yet, and wait for it."""
        if not self._uncommitted or self.consumer is None:
            return
        try:  # at most 5 s: a stop is not held long by a broker that is down
            self.consumer.commit(
                dict(self._uncommitted), timeout_ms=min(5000, self.cfg.kafka.request_timeout_ms)
            )
            self._uncommitted.clear()
            self.retrier.recovered("Kafka commit")
        except KafkaError as e:  # the checkpoint already holds the position
            self.retrier.failed("Kafka commit", e, retried=False)

    # -- rebalances ---------------------------------------------------------------------------------

    def on_revoked(self, tps: set[TopicPartition]) -> None:
        """Checkpoint what the partitions hold back (best effort), then drop their state."""
        dirty = [tp for tp in tps if tp in self._dirty]
        if dirty and self._consistent:
            # best effort: the next owner replays from the older one otherwise
            with contextlib.suppress(redis.RedisError):
                self._checkpoint(sorted(dirty, key=tp_order), retry=False)
        for tp in tps:
            self._forget(tp)
            self._pending.discard(tp)
        if tps:
            log.info("partitions revoked: %s", fmt_partitions(tps))

    def on_assigned(self, tps: set[TopicPartition]) -> None:
        self._pending |= tps

    def start_partitions(self, records) -> set[TopicPartition]:
        """Restore the partitions assigned (and those a resync dropped); returns them (their
        records in this poll predate the seek and are dropped)."""
        fresh = set(self._pending)
        if fresh:
            self._restore(records)
        m.PARTITIONS.set(len(self._engines))
        return fresh

    def _restore(self, records) -> None:
        """Rebuild the engines of newly assigned partitions from their checkpoints and seek."""
        assert self.consumer is not None
        tps = sorted(self._pending, key=tp_order)
        cps = self.retrier.retry(
            "Redis checkpoint load",
            lambda: self.store.get_checkpoints(
                self.group, [(tp.topic, tp.partition) for tp in tps]
            ),
            self._stop,
        )
        for tp, cp in zip(tps, cps, strict=True):
            engine = RuleEngine(self.acfg)
            start: int | None = None
            how = "no checkpoint, fresh state"
            if cp is not None:
                try:
                    engine.restore(cp["engine"])
                    start = int(cp["offset"])
                    how = f"checkpoint with {len(engine.cameras)} camera(s)"
                except (ValueError, KeyError, TypeError) as e:
                    log.warning(
                        "checkpoint of %s unusable (%s); fresh state", fmt_partitions([tp]), e
                    )
                    engine = RuleEngine(self.acfg)
            if start is None:
                committed = self.retrier.retry(
                    "Kafka committed offset",
                    lambda tp=tp: self.consumer.committed(
                        tp, timeout_ms=self.cfg.kafka.request_timeout_ms
                    ),
                    self._stop,
                    (KafkaError,),
                )
                if committed is not None:
                    start = int(committed)
                elif records.get(tp):
                    start = records[tp][0].offset
            if start is not None:
                self.consumer.seek(tp, start)
            self._engines[tp] = engine
            self._next_offset[tp] = start
            self.stats["restores"] += 1
            log.info(
                "partition %s assigned: %s, from offset %s",
                fmt_partitions([tp]),
                how,
                start if start is not None else self.scfg.auto_offset_reset,
            )
        self._pending.clear()

    def _forget(self, tp: TopicPartition) -> None:
        self._engines.pop(tp, None)
        self._next_offset.pop(tp, None)
        self._dirty.discard(tp)
        self._uncommitted.pop(tp, None)
        with contextlib.suppress(KeyError):
            m.CONSUMER_LAG.remove(tp.topic, str(tp.partition))

    def _resync(self) -> None:
        """After an unexpected error mid-batch the engines may be ahead of Redis: drop them and
        restore every owned partition from its checkpoint."""
        for tp in list(self._engines):
            self._forget(tp)
        self._consistent = True
        if self.consumer is not None:
            try:
                self._pending = set(self.consumer.assignment())
            except Exception:
                self._pending = set()
