"""The notifier: alert events from ``vigil.alerts`` (a Kafka consumer group) to webhooks and
MQTT, at least once per (alert id, status, sink), nothing lost (docs/notify.md).

The main loop polls a batch and hands every alert event to the sinks whose filters want it
(:class:`alerts.notify.delivery.SinkRunner`: bounded queues, workers, retries, rate limit).
Each record is settled when every one of those sinks delivered it or wrote it to the
dead-letter topic (acknowledged by Kafka); per partition, the offset after the longest run of
settled records is committed every ``commit_interval_s``. So a crash (SIGKILL included)
redelivers what was not settled, never skips it: duplicates after a crash carry the same
``Idempotency-Key`` (``<id>:<status>``), and repeats of an event on Kafka (the alert service
is at-least-once) are dropped here while this process remembers them.

The consumer reads ahead while the sinks' queues have room and pauses while one is half full
(a backlog is delivered at the sinks' pace, nothing dropped); a sink that holds the others back
for longer than ``max_hold_s`` sheds its overflow to the dead-letter topic, and a sink that is
down dead-letters at once (:mod:`alerts.notify.delivery`). The consumer also pauses while
``max_in_flight`` events are unsettled. A new group starts at ``auto_offset_reset`` and
commits that position at once, so even a crash before the first delivery loses nothing.

Rebalance callbacks run on the Kafka IO loop and only record the event; the main loop applies it
between batches. A revoked partition's settled offsets are committed (best effort); events still
in flight there are delivered by the new owner again.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from typing import Any

from kafka import TopicPartition
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata

from alerts.notify import metrics as m
from alerts.notify.config import NotifyConfig, NotifySettings
from alerts.notify.delivery import DeadLetters, SinkRunner
from alerts.notify.sinks import Delivery, SinkContext, SinkError, build_sink, idempotency_key
from alerts.notify.sinks.base import synthetic_alert
from alerts.rules import RuleConfig
from alerts.store import AlertStore
from pipeline.common.contracts import CAMERA_ID
from pipeline.common.jsoncodec import decode_record
from pipeline.common.kafka import (
    KafkaUnavailable,
    connection_count,
    ensure_topics,
    group_consumer,
    make_producer,
)
from pipeline.common.lifecycle import OutageLog

log = logging.getLogger(__name__)

DEDUP_WINDOW = 100_000
SOLE_SINK_HOLD_S = 60.0
LIMBO_S = 30.0  # longest the loop waits for room in the queue of the only sink
STATS_LOG_INTERVAL_S = 60.0
_STATUSES = {"started", "ended", "reviewed"}


class _Record:
    """One consumed alert event: settled when ``remaining`` (sinks still at it) reaches 0."""

    __slots__ = ("origin", "remaining")

    def __init__(self, topic: str, partition: int, offset: int) -> None:
        self.origin = (topic, partition, offset)
        self.remaining = 0


class _Partition:
    __slots__ = ("committed", "next_offset", "pending")

    def __init__(self, start: int | None) -> None:
        self.pending: deque[_Record] = deque()
        self.next_offset = start  # after the longest run of settled records
        self.committed = start


class _Listener(ConsumerRebalanceListener):
    """On the consumer's IO loop: record the event only."""

    def __init__(self, service: NotifyService) -> None:
        self.service = service

    def on_partitions_revoked(self, revoked) -> None:
        with self.service._lock:
            self.service._events.append(("revoked", set(revoked)))

    def on_partitions_assigned(self, assigned) -> None:
        with self.service._lock:
            self.service._events.append(("assigned", set(assigned)))


def check_alert(alert: Any) -> dict[str, Any]:
    """The fields the notifier relies on (the alert service wrote the rest per alert.v1)."""
    if not isinstance(alert, dict):
        raise ValueError(f"not a JSON object but {type(alert).__name__}")
    for key in ("id", "camera_id", "rule_id", "severity"):
        if not isinstance(alert.get(key), str):
            raise ValueError(f"field {key!r} missing or not a string")
    if alert.get("status") not in _STATUSES:
        raise ValueError(f"status {alert.get('status')!r} is not started, ended or reviewed")
    if not CAMERA_ID.match(alert["camera_id"]) or not CAMERA_ID.match(alert["rule_id"]):
        raise ValueError("camera_id or rule_id is not a valid id")
    return alert


def known_pairs(cameras: Iterable[str], rules: Iterable[RuleConfig]) -> tuple[tuple[str, str], ...]:
    """(camera, rule) for every enabled rule on every camera it applies to: the MQTT sink
    announces them to Home Assistant before their first alert."""
    cams = list(cameras)
    return tuple((c, r.id) for r in rules if r.enabled for c in cams if r.applies_to(c))


class NotifyService:
    def __init__(
        self,
        cfg: NotifySettings,
        ncfg: NotifyConfig | None = None,
        *,
        snapshot_base_url: str | None = None,
        known: tuple[tuple[str, str], ...] = (),
        name: str | None = None,
    ) -> None:
        self.cfg = cfg
        self.ncfg = ncfg if ncfg is not None else cfg.notify
        if not self.ncfg.active_sinks:
            raise ValueError("notify.sinks: no (enabled) sink configured; nothing to deliver to")
        self.name = name or self.ncfg.instance_id or f"{socket.gethostname()}-{os.getpid()}"
        self.group = self.ncfg.group_id
        self.topic = cfg.kafka.topics.alerts
        self.store = AlertStore(cfg.redis)
        self.ctx = SinkContext(self.store, snapshot_base_url, known, self.name)
        self._stop = threading.Event()
        self._halt = threading.Event()  # workers end their current attempt and exit
        self._lock = threading.Lock()
        self._settle_lock = threading.Lock()
        self._events: list[tuple[str, set[TopicPartition]]] = []
        self._parts: dict[TopicPartition, _Partition] = {}
        # revoked partitions, kept LIMBO_S in case the rebalance gives them back
        self._limbo: dict[TopicPartition, tuple[_Partition, float]] = {}
        self._seen: OrderedDict[str, tuple[str, int, int]] = OrderedDict()
        self._unsettled = 0
        self._tracked = 0
        self._paused = False
        self._commit_at = 0.0
        self._kafka_checked_at = 0.0
        self._stats_at = time.monotonic()
        self.consumer: Any = None
        self.producer: Any = None
        self.dead = DeadLetters(None, cfg.kafka.topics.notify_dlq, self.group, self._settle)
        self.runners = [
            SinkRunner(build_sink(s, self.ctx), self.dead, self._settle, self._halt)
            for s in self.ncfg.active_sinks
        ]
        self.kafka_state = OutageLog(log, f"Kafka at {cfg.kafka.bootstrap_servers} (notifier)")
        self._dispatched = m.RECORDS.labels("dispatched")
        self._duplicates = m.RECORDS.labels("duplicate")
        self._malformed = m.RECORDS.labels("malformed")
        self.stats = {"records": 0, "duplicates": 0, "malformed": 0, "commits": 0}

    # -- lifecycle ------------------------------------------------------------------------------

    def run(self, stop: threading.Event, max_seconds: float | None = None) -> None:
        """Consume until ``stop`` is set (or ``max_seconds`` passed), then drain and close."""
        self._stop = stop
        deadline = None if max_seconds is None else time.monotonic() + max_seconds
        try:
            if not self._connect():
                return
            for r in self.runners:
                r.start()
            self.dead.start()
            log.info(
                "notifier %s: group %s on %s, sinks: %s",
                self.name,
                self.group,
                self.topic,
                ", ".join(r.sink.describe() for r in self.runners),
            )
            backoff = 0.2
            while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
                try:
                    self.step()
                    backoff = 0.2
                except KafkaError as e:
                    self.kafka_state.down(f"{type(e).__name__}: {e}")
                    stop.wait(backoff)
                    backoff = min(backoff * 2, 10.0)
                except Exception:
                    log.exception("unexpected error in the notifier loop")
                    stop.wait(backoff)
                    backoff = min(backoff * 2, 10.0)
        finally:
            self.close()

    def _connect(self) -> bool:
        """Topics, producer, consumer; retried with backoff until it works or ``stop``."""
        delay = 0.2
        while not self._stop.is_set():
            try:
                ensure_topics(self.cfg.kafka)
                if self.producer is None:
                    self.producer = make_producer(
                        self.cfg.kafka, f"notify-{self.name}", max_block_ms=10_000
                    )
                    self.dead.producer = self.producer
                if self.consumer is None:
                    n = self.ncfg
                    consumer = group_consumer(
                        self.cfg.kafka,
                        f"notify-{self.name}",
                        group_id=n.group_id,
                        group_instance_id=n.instance_id,
                        auto_offset_reset=n.auto_offset_reset,
                        max_poll_records=n.max_poll_records,
                        session_timeout_ms=n.session_timeout_ms,
                    )
                    # a group joined before the member knows the topic's partitions gets
                    # none until the next metadata refresh (minutes): learn them first
                    deadline = time.monotonic() + self.cfg.kafka.bootstrap_timeout_ms / 1000
                    while not consumer.partitions_for_topic(self.topic):
                        if time.monotonic() > deadline or self._stop.wait(0.2):
                            break
                    consumer.subscribe([self.topic], listener=_Listener(self))
                    self.consumer = consumer
                self.kafka_state.up()
                return True
            except (KafkaUnavailable, KafkaError) as e:
                self.kafka_state.down(str(e))
                self._stop.wait(delay)
                delay = min(delay * 2, 10.0)
        return False

    def close(self) -> None:
        """Let deliveries in progress finish (``drain_timeout_s``), stop the workers, write the
        queued dead letters, commit what is settled, close everything."""
        deadline = time.monotonic() + self.ncfg.drain_timeout_s
        while self._unsettled > 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        self._halt.set()
        for r in self.runners:
            timeout = getattr(r.cfg, "timeout_s", 10.0) + 1.0
            r.join(timeout)
        self.dead.close(5.0)
        if self.consumer is not None:
            self._advance()
            self._commit(force=True)
        self._log_stats(force=True)
        for r in self.runners:
            r.close()
        if self.consumer is not None:
            with contextlib.suppress(Exception):
                self.consumer.close(autocommit=False, timeout_ms=5000)
            self.consumer = None
        if self.producer is not None:
            with contextlib.suppress(Exception):
                self.producer.close(timeout=5)
            self.producer = None
        with contextlib.suppress(Exception):
            self.store.client.close()

    # -- the loop -------------------------------------------------------------------------------

    def step(self) -> int:
        """Poll one batch and hand it to the sinks; returns the number of records read."""
        records = self.consumer.poll(
            timeout_ms=50 if self._paused else self.ncfg.poll_timeout_ms,
            max_records=self.ncfg.max_poll_records,
        )
        fresh = self._rebalance(records)
        batches = []
        for tp, recs in records.items():
            if tp in fresh or not recs:
                continue  # fetched before the seek to its start: fetched again after it
            part = self._parts.get(tp)
            if part is None:
                # records before the assignment callback: take it now (seek), read them again
                if tp in self.consumer.assignment():
                    self._part_for(tp, recs[0].offset)
                continue  # not ours (revoked): the new owner reads it from the commit
            batches.append((part, recs))
        # partitions interleaved: each one's commit advances as deliveries go, instead of one
        # waiting behind the whole batch of another (fewer repeats after a crash)
        n = 0
        for i in range(max((len(r) for _, r in batches), default=0)):
            for part, recs in batches:
                if i < len(recs):
                    self._dispatch(part, recs[i])
                    n += 1
        self._advance()
        self._commit()
        self._flow_control()
        self._check_kafka()
        self._log_stats()
        return n

    def _dispatch(self, part: _Partition, rec: Any) -> None:
        r = _Record(rec.topic, rec.partition, rec.offset)
        part.pending.append(r)
        self._tracked += 1
        self.stats["records"] += 1
        try:
            alert = check_alert(decode_record(rec.value))  # bounded size and depth
        except ValueError as e:  # no value, too large or deep, not UTF-8 or JSON, not an alert
            self.stats["malformed"] += 1
            self._malformed.inc()
            with self._settle_lock:
                r.remaining = 1
                self._unsettled += 1
            raw = rec.value or b""
            log.warning(
                "%s[%d]@%d is not an alert event (%s): dead-lettered",
                rec.topic,
                rec.partition,
                rec.offset,
                str(e)[:200],
            )
            self.dead.put(
                Delivery({}, raw, "", record=r),
                sink=None,
                error=f"not an alert event: {e}"[:2000],
                attempts=0,
                first_attempt_at=None,
                value_text=raw[:65536].decode("utf-8", "replace")
                if rec.value is not None
                else None,
                key=rec.key.decode("utf-8", "replace") if rec.key is not None else None,
            )
            return
        key = idempotency_key(alert)
        first = self._seen.get(key)
        if first is not None and first != r.origin:
            # another record with the same event (the alert service is at-least-once); the
            # same record read again after a rebalance is delivered again instead
            self.stats["duplicates"] += 1
            self._duplicates.inc()
            return
        self._seen[key] = r.origin
        if len(self._seen) > DEDUP_WINDOW:
            self._seen.popitem(last=False)
        targets = [run for run in self.runners if run.wants(alert)]
        self._dispatched.inc()
        if not targets:
            return
        ts = rec.timestamp / 1000 if getattr(rec, "timestamp", None) and rec.timestamp > 0 else None
        d = Delivery(alert, rec.value, key, ts, r)
        with self._settle_lock:
            r.remaining = len(targets)
            self._unsettled += 1
        # with other sinks, one may hold the consumer max_hold_s at most; a sink alone holds
        # nobody back, but the loop must poll again well within max.poll.interval.ms
        hold = self.ncfg.max_hold_s if len(self.runners) > 1 else SOLE_SINK_HOLD_S
        for run in targets:
            run.offer(d, hold)

    def _settle(self, d: Delivery) -> None:
        """One sink is done with ``d`` (delivered, or its dead letter acknowledged)."""
        r = d.record
        if r is None:
            return
        with self._settle_lock:
            r.remaining -= 1
            if r.remaining == 0:
                self._unsettled -= 1

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

    def _flow_control(self) -> None:
        """Pause the consumer while a sink's queues are half full (it catches up; a sink that
        takes longer than ``max_hold_s`` sheds instead, delivery.py), while ``max_in_flight``
        events are unsettled, or while too many settled ones wait behind an unsettled one
        (memory); resume when none of that holds."""
        limit = self.ncfg.max_in_flight
        now = time.monotonic()
        hold = self.ncfg.max_hold_s if len(self.runners) > 1 else 0.0
        busy = [r.id for r in self.runners if r.pressure(now, hold)]
        over = self._unsettled >= limit or self._tracked >= 50 * limit
        if (busy or over) and not self._paused:
            self.consumer.pause(*self.consumer.assignment())
            self._paused = True
            log.debug("pausing the consumer (%d unsettled; waiting for %s)", self._unsettled, busy)
        elif (
            self._paused
            and not busy
            and self._unsettled < limit // 2
            and self._tracked < 25 * limit
        ):
            self.consumer.resume(*self.consumer.paused())
            self._paused = False
            log.debug("consuming again (%d unsettled)", self._unsettled)
        elif self._paused:  # partitions assigned while paused
            fresh = set(self.consumer.assignment()) - set(self.consumer.paused())
            if fresh:
                self.consumer.pause(*fresh)

    # -- rebalances -----------------------------------------------------------------------------

    def _rebalance(self, records: dict[TopicPartition, list[Any]]) -> set[TopicPartition]:
        """Apply the rebalance events recorded during ``poll``; returns the partitions taken
        now (their records of this poll came before the seek and are read again)."""
        with self._lock:
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
        revoked = sorted((tp for tp, k in net.items() if k == "revoked"), key=_tp_order)
        for tp in revoked:
            part = self._parts.pop(tp, None)
            if part is not None:  # kept a while: a rebalance often gives it back at once
                self._limbo[tp] = (part, now)
        if revoked:
            log.info("partitions revoked: %s", _fmt(revoked))
        fresh: set[TopicPartition] = set()
        for tp in sorted((tp for tp, k in net.items() if k == "assigned"), key=_tp_order):
            if tp in self._parts:
                continue
            back = self._limbo.pop(tp, None)
            if back is not None:
                # given back: go on where this process was. kafka-python kept the partition's
                # position if it never left the assignment; if it did, the consumer starts at
                # the committed offset and reads events again (delivered again, same keys)
                self._parts[tp] = back[0]
                log.info("partition %s assigned again: going on", _fmt([tp]))
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

    def _part_for(self, tp: TopicPartition, first_offset: int | None) -> _Partition:
        """Take partition ``tp``: from its committed offset, or (a new group) from where the
        consumer starts, which is committed at once so that a crash before the first commit
        cannot skip anything. The consumer seeks there: events that were in flight before a
        rebalance are read and delivered again (same Idempotency-Key), never skipped."""
        timeout_ms = self.cfg.kafka.request_timeout_ms
        committed = self.consumer.committed(tp, timeout_ms=timeout_ms)
        if committed is not None:
            start: int | None = int(committed)
            part = _Partition(start)
            how = f"from committed offset {committed}"
        else:
            start = (
                first_offset
                if first_offset is not None
                else self.consumer.position(tp, timeout_ms=timeout_ms)
            )
            part = _Partition(None)
            part.next_offset = start
            how = f"new group, from offset {start} ({self.ncfg.auto_offset_reset})"
            if start is not None:
                try:
                    self.consumer.commit({tp: OffsetAndMetadata(start, "", -1)}, timeout_ms=5000)
                    part.committed = start
                except KafkaError as e:
                    log.warning("could not commit the start offset of %s: %s", _fmt([tp]), e)
        if start is not None:
            self.consumer.seek(tp, start)
        self._parts[tp] = part
        log.info("partition %s assigned: %s", _fmt([tp]), how)
        return part

    # -- health ---------------------------------------------------------------------------------

    def _check_kafka(self) -> None:
        now = time.monotonic()
        if now - self._kafka_checked_at < 1.0 or self.consumer is None:
            return
        self._kafka_checked_at = now
        count = connection_count(self.consumer)
        if count == 0:
            self.kafka_state.down("no broker connection", failed_operation=False)
        elif count:
            self.kafka_state.up()
        m.PENDING.set(self._unsettled)
        for r in self.runners:
            m.QUEUED.labels(r.id).set(r.queued())

    def _log_stats(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._stats_at < STATS_LOG_INTERVAL_S:
            return
        self._stats_at = now
        s = self.stats
        log.info(
            "notifier %s: %d alert events read (%d repeats dropped, %d malformed), %d unsettled; %s",
            self.name,
            s["records"],
            s["duplicates"],
            s["malformed"],
            self._unsettled,
            "; ".join(
                f"{r.id}: {r.stats['delivered']} delivered, {r.stats['dead_letter']} dead-lettered"
                for r in self.runners
            ),
        )


def _tp_order(tp: TopicPartition) -> tuple[str, int]:
    return (tp.topic, tp.partition)


def _fmt(tps: Iterable[TopicPartition]) -> str:
    return ", ".join(
        f"{tp.topic}[{tp.partition}]" for tp in sorted(tps, key=lambda t: (t.topic, t.partition))
    )


def notify_runner(
    cfg: NotifySettings,
    *,
    snapshot_base_url: str | None = None,
    known: tuple[tuple[str, str], ...] = (),
) -> Callable[[threading.Event], None]:
    """For ``vigil run``: a callable that runs the notifier until its ``stop`` is set. Built
    here (sinks included), so a bad sink fails the command, not a thread."""
    service = NotifyService(cfg, snapshot_base_url=snapshot_base_url, known=known)

    def run(stop: threading.Event) -> None:
        service.run(stop)

    return run


def send_test(
    cfg: NotifySettings, sink_id: str, snapshot_base_url: str | None = None
) -> tuple[bool, str]:
    """``vigil notify test SINK``: one synthetic alert, one attempt, no filters, no retries;
    (delivered, what came back). Raises ValueError for an unknown sink id."""
    scfg = cfg.notify.sink(sink_id)
    if scfg is None:
        known = ", ".join(s.id for s in cfg.notify.sinks) or "none configured"
        raise ValueError(f"no sink {sink_id!r} in notify.sinks ({known})")
    store = AlertStore(cfg.redis)
    sink = build_sink(scfg, SinkContext(store, snapshot_base_url))
    sink.announce = False
    try:
        sink.start()
        return True, sink.test(synthetic_alert())
    except SinkError as e:
        return False, sink.scrub(str(e))
    finally:
        sink.close()
        with contextlib.suppress(Exception):
            store.client.close()
