"""The notifier's partitions: which records of each one are settled, the offset after the
longest run of them, its commits, and what a rebalance does to it (:mod:`alerts.notify.service`).

Rebalance events are applied between batches, all those of a poll together: a revoked
partition's settled offsets are committed (best effort) and it is kept a while in case the
rebalance gives it back (``LIMBO_S``); a partition taken starts at its committed offset, or, in a
new group, where the consumer starts, committed at once. Events still in flight in a partition
another member took are delivered by that member again.

:class:`PartitionOffsets` is a part of :class:`alerts.notify.service.NotifyService`, which sets
the attributes it declares.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from typing import Any

from kafka import TopicPartition
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata

from alerts.notify.config import NotifyConfig, NotifySettings
from pipeline.common.consumer_loop import Records, fmt_partitions, tp_order
from pipeline.common.lifecycle import OutageLog

log = logging.getLogger(__name__)

LIMBO_S = 30.0  # how long a revoked partition's state is kept in case it comes back


class Record:
    """One consumed alert event: settled when ``remaining`` (sinks still at it) reaches 0."""

    __slots__ = ("origin", "remaining")

    def __init__(self, topic: str, partition: int, offset: int) -> None:
        self.origin = (topic, partition, offset)
        self.remaining = 0


class Partition:
    __slots__ = ("committed", "next_offset", "pending")

    def __init__(self, start: int | None) -> None:
        self.pending: deque[Record] = deque()
        self.next_offset = start  # after the longest run of settled records
        self.committed = start


class PartitionOffsets:
    """The partition state of :class:`~alerts.notify.service.NotifyService`."""

    # set by NotifyService.__init__ (consumer: its ConsumerLoop's)
    cfg: NotifySettings
    ncfg: NotifyConfig
    consumer: Any
    kafka_state: OutageLog
    stats: dict[str, int]
    _settle_lock: threading.Lock
    _events: list[tuple[str, set[TopicPartition]]]
    _parts: dict[TopicPartition, Partition]
    _limbo: dict[TopicPartition, tuple[Partition, float]]
    _unsettled: int
    _tracked: int
    _commit_at: float

    def on_revoked(self, tps: set[TopicPartition]) -> None:
        """Recorded: the events of a poll are applied together by :meth:`start_partitions`."""
        self._events.append(("revoked", tps))

    def on_assigned(self, tps: set[TopicPartition]) -> None:
        self._events.append(("assigned", tps))

    def _advance(self) -> None:
        for part in self._parts.values():
            pending = part.pending
            while pending and pending[0].remaining <= 0:
                part.next_offset = pending.popleft().origin[2] + 1
                self._tracked -= 1

    def _commit(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._commit_at < self.ncfg.commit_interval_s:
            return
        self._commit_at = now
        offsets = {
            tp: OffsetAndMetadata(p.next_offset, "", -1)
            for tp, p in self._parts.items()
            if p.next_offset is not None and p.next_offset != p.committed
        }
        if not offsets:
            return
        try:
            self.consumer.commit(offsets, timeout_ms=min(5000, self.cfg.kafka.request_timeout_ms))
        except KafkaError as e:  # settled offsets are committed with the next try
            self.kafka_state.down(f"commit failed: {type(e).__name__}: {e}")
            return
        self.stats["commits"] += 1
        for tp, om in offsets.items():
            part = self._parts.get(tp)
            if part is not None:
                part.committed = om.offset

    # -- rebalances -----------------------------------------------------------------------------

    def start_partitions(self, records: Records) -> set[TopicPartition]:
        """Apply the rebalance events of the last poll; returns the partitions taken now
        (their records of this poll came before the seek and are read again)."""
        events, self._events = self._events, []
        net: dict[TopicPartition, str] = {}  # the last event of each partition
        ever_revoked: set[TopicPartition] = set()
        for kind, tps in events:
            for tp in tps:
                net[tp] = kind
                if kind == "revoked":
                    ever_revoked.add(tp)
        offsets = {
            tp: OffsetAndMetadata(p.next_offset, "", -1)
            for tp in ever_revoked
            if (p := self._parts.get(tp)) is not None
            and p.next_offset is not None
            and p.next_offset != p.committed
        }
        if offsets:  # best effort: the partition may already have a new owner
            with contextlib.suppress(KafkaError):
                self.consumer.commit(offsets, timeout_ms=5000)
                for tp, om in offsets.items():
                    self._parts[tp].committed = om.offset
        now = time.monotonic()
        revoked = sorted((tp for tp, k in net.items() if k == "revoked"), key=tp_order)
        for tp in revoked:
            part = self._parts.pop(tp, None)
            if part is not None:  # kept a while: a rebalance often gives it back at once
                self._limbo[tp] = (part, now)
        if revoked:
            log.info("partitions revoked: %s", fmt_partitions(revoked))
        fresh: set[TopicPartition] = set()
        for tp in sorted((tp for tp, k in net.items() if k == "assigned"), key=tp_order):
            if tp in self._parts:
                continue
            back = self._limbo.pop(tp, None)
            if back is not None:
                # given back: go on where this process was. kafka-python kept the partition's
                # position if it never left the assignment; if it did, the consumer starts at
                # the committed offset and reads events again (delivered again, same keys)
                self._parts[tp] = back[0]
                log.info("partition %s assigned again: going on", fmt_partitions([tp]))
                continue
            recs = records.get(tp)
            self._part_for(tp, recs[0].offset if recs else None)
            fresh.add(tp)
        for tp, (part, since) in list(self._limbo.items()):
            if now - since > LIMBO_S:  # another member has it: forget its events in flight
                del self._limbo[tp]
                self._tracked -= len(part.pending)
                with self._settle_lock:
                    self._unsettled -= sum(1 for r in part.pending if r.remaining > 0)
                    for r in part.pending:
                        r.remaining = -(10**9)
        return fresh

    def _part_for(self, tp: TopicPartition, first_offset: int | None) -> Partition:
        """Take partition ``tp``: from its committed offset, or (a new group) from where the
        consumer starts, which is committed at once so that a crash before the first commit
        cannot skip anything. The consumer seeks there: events that were in flight before a
        rebalance are read and delivered again (same Idempotency-Key), never skipped."""
        timeout_ms = self.cfg.kafka.request_timeout_ms
        committed = self.consumer.committed(tp, timeout_ms=timeout_ms)
        if committed is not None:
            start: int | None = int(committed)
            part = Partition(start)
            how = f"from committed offset {committed}"
        else:
            start = (
                first_offset
                if first_offset is not None
                else self.consumer.position(tp, timeout_ms=timeout_ms)
            )
            part = Partition(None)
            part.next_offset = start
            how = f"new group, from offset {start} ({self.ncfg.auto_offset_reset})"
            if start is not None:
                try:
                    self.consumer.commit({tp: OffsetAndMetadata(start, "", -1)}, timeout_ms=5000)
                    part.committed = start
                except KafkaError as e:
                    log.warning(
                        "could not commit the start offset of %s: %s", fmt_partitions([tp]), e
                    )
        if start is not None:
            self.consumer.seek(tp, start)
        self._parts[tp] = part
        log.info("partition %s assigned: %s", fmt_partitions([tp]), how)
        return part
