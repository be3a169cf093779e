"""The notifier: alert events from ``vigil.alerts``, the recorder's clip announcements from
``vigil.clips`` and the operators' reviews from ``vigil.reviews`` (one Kafka consumer group on
the three topics) to webhooks and MQTT, at least once per (alert id, status, sink), nothing lost
(docs/notify.md).

The clips topic is written by the recorders, which may not write alerts: a record there may only
announce a clip. One with another status (a ``started``, ``ended`` or ``reviewed`` forged there)
is skipped: counted in ``vigil_records_skipped_total{reader="notifier_clips"}``, one log line,
never delivered, and it does not count as the event's first copy for the repeat check. The
reviews topic is written by the console, which may not write alerts either: only ``reviewed``
is taken from it, anything else is skipped the same way (``reader="notifier_reviews"``). A
``reviewed`` message still found on the alerts topic (from a console before the reviews topic)
is delivered as before. Everything else (settling, commits, repeats, dead letters of malformed
records) is the same for the records of every topic: offsets are kept per partition of each.

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

The notifier is the :class:`~pipeline.common.consumer_loop.ConsumerHandler` of a
:class:`~pipeline.common.consumer_loop.ConsumerLoop` (connect, poll, rebalance events, close).
Rebalance events are applied between batches, all those of a poll together: a revoked
partition's settled offsets are committed (best effort); events still in flight there are
delivered by the new owner again.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

from kafka import TopicPartition

from alerts.notify import metrics as m
from alerts.notify.config import NotifyConfig, NotifySettings
from alerts.notify.delivery import DeadLetters, SinkRunner
from alerts.notify.offsets import Partition, PartitionOffsets, Record
from alerts.notify.sinks import Delivery, SinkContext, SinkError, build_sink, idempotency_key
from alerts.notify.sinks.base import synthetic_alert
from alerts.rules import RuleConfig
from alerts.store import AlertStore
from pipeline.common.consumer_loop import ConsumerHandler, ConsumerLoop, Records
from pipeline.common.contracts import CAMERA_ID
from pipeline.common.jsoncodec import decode_record
from pipeline.common.records import SkippedRecords

log = logging.getLogger(__name__)

DEDUP_WINDOW = 100_000
SOLE_SINK_HOLD_S = 60.0
STATS_LOG_INTERVAL_S = 60.0
_STATUSES = {"started", "ended", "reviewed", "clip"}
CLIP = "clip"  # the one status a record of the clips topic may have
REVIEWED = "reviewed"  # the one status a record of the reviews topic may have


def check_alert(alert: Any) -> dict[str, Any]:
    """The fields the notifier relies on (the alert service wrote the rest per alert.v1)."""
    if not isinstance(alert, dict):
        raise ValueError(f"not a JSON object but {type(alert).__name__}")
    for key in ("id", "camera_id", "rule_id", "severity"):
        if not isinstance(alert.get(key), str):
            raise ValueError(f"field {key!r} missing or not a string")
    if alert.get("status") not in _STATUSES:
        raise ValueError(f"status {alert.get('status')!r} is not started, ended, reviewed or clip")
    if not CAMERA_ID.match(alert["camera_id"]) or not CAMERA_ID.match(alert["rule_id"]):
        raise ValueError("camera_id or rule_id is not a valid id")
    return alert


def known_pairs(cameras: Iterable[str], rules: Iterable[RuleConfig]) -> tuple[tuple[str, str], ...]:
    """(camera, rule) for every enabled rule on every camera it applies to: the MQTT sink
    announces them to Home Assistant before their first alert."""
    cams = list(cameras)
    return tuple((c, r.id) for r in rules if r.enabled for c in cams if r.applies_to(c))


class NotifyService(PartitionOffsets, ConsumerHandler):
    def __init__(
        self,
        cfg: NotifySettings,
        ncfg: NotifyConfig | None = None,
        *,
        snapshot_base_url: str | None = None,
        public_url: str | None = None,
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
        self.clips_topic = cfg.kafka.topics.clips
        self.reviews_topic = cfg.kafka.topics.reviews
        self.store = AlertStore(cfg.redis)
        self.ctx = SinkContext(
            self.store, snapshot_base_url, known, self.name, public_url=public_url
        )
        self._halt = threading.Event()  # workers end their current attempt and exit
        self._settle_lock = threading.Lock()
        # rebalance events of the last poll, applied together by start_partitions
        self._events: list[tuple[str, set[TopicPartition]]] = []
        self._parts: dict[TopicPartition, Partition] = {}
        # revoked partitions, kept a while (LIMBO_S) in case the rebalance gives them back
        self._limbo: dict[TopicPartition, tuple[Partition, float]] = {}
        self._seen: OrderedDict[str, tuple[str, int, int]] = OrderedDict()
        self._unsettled = 0
        self._tracked = 0
        self._paused = False
        self._commit_at = 0.0
        self._stats_at = time.monotonic()
        self.dead = DeadLetters(None, cfg.kafka.topics.notify_dlq, self.group, self._settle)
        self.runners = [
            SinkRunner(build_sink(s, self.ctx), self.dead, self._settle, self._halt)
            for s in self.ncfg.active_sinks
        ]
        n = self.ncfg
        self.loop = ConsumerLoop(
            self,
            cfg.kafka,
            (self.topic, self.clips_topic, self.reviews_topic),
            client=f"notify-{self.name}",
            group_id=n.group_id,
            session_timeout_ms=n.session_timeout_ms,
            max_records=n.max_poll_records,
            logger=log,
            name="notifier",
            backoff=(0.2, 10.0),
            consumer_kw=dict(
                group_instance_id=n.instance_id, auto_offset_reset=n.auto_offset_reset
            ),
            producer_close_s=5,
            unexpected_error="unexpected error in the notifier loop",
            learn_partitions=True,
        )
        self.kafka_state = self.loop.kafka_state
        self._dispatched = m.RECORDS.labels("dispatched")
        self._duplicates = m.RECORDS.labels("duplicate")
        self._malformed = m.RECORDS.labels("malformed")
        self.refused = SkippedRecords(log, "notifier_clips")
        self.refused_reviews = SkippedRecords(log, "notifier_reviews")
        self.stats = {"records": 0, "duplicates": 0, "malformed": 0, "refused": 0, "commits": 0}

    # -- lifecycle ------------------------------------------------------------------------------

    def run(self, stop: threading.Event, max_seconds: float | None = None) -> None:
        """Consume until ``stop`` is set (or ``max_seconds`` passed), then drain and close."""
        self.loop.run(stop, max_seconds)

    def close(self) -> None:
        """Let deliveries in progress finish (``drain_timeout_s``), stop the workers, write the
        queued dead letters, commit what is settled, close everything."""
        self.loop.close()

    def step(self) -> int:
        """Poll one batch and hand it to the sinks; returns the number of records read."""
        return self.loop.step()

    @property
    def consumer(self) -> Any:
        return self.loop.consumer

    @property
    def producer(self) -> Any:
        return self.loop.producer

    # -- the loop's callbacks -------------------------------------------------------------------

    def on_started(self) -> None:
        self.dead.producer = self.producer
        for r in self.runners:
            r.start()
        self.dead.start()
        log.info(
            "notifier %s: group %s on %s, %s and %s, sinks: %s",
            self.name,
            self.group,
            self.topic,
            self.clips_topic,
            self.reviews_topic,
            ", ".join(r.sink.describe() for r in self.runners),
        )

    def poll_timeout_ms(self) -> int:
        return 50 if self._paused else self.ncfg.poll_timeout_ms

    def handle_batch(self, batch: Records, fresh: set[TopicPartition]) -> int:
        """Hand the records to the sinks; returns the number of records read."""
        batches = []
        for tp, recs in batch.items():
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
        return n

    def commit(self) -> None:
        self._advance()
        self._commit()

    def on_tick(self) -> None:
        m.PENDING.set(self._unsettled)
        for r in self.runners:
            m.QUEUED.labels(r.id).set(r.queued())

    def after_step(self) -> None:
        self._flow_control()
        self._log_stats()

    def on_close(self) -> None:
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

    def after_close(self) -> None:
        with contextlib.suppress(Exception):
            self.store.client.close()

    # -- delivery -------------------------------------------------------------------------------

    def _dispatch(self, part: Partition, rec: Any) -> None:
        r = Record(rec.topic, rec.partition, rec.offset)
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
        if rec.topic == self.clips_topic and alert["status"] != CLIP:
            # a recorder's topic cannot start, end or review an alert: settled, not delivered,
            # and not taken for the event's first copy (the real one would be dropped as a repeat)
            self.stats["refused"] += 1
            self.refused.skip(
                f"{rec.topic}[{rec.partition}]@{rec.offset}",
                "invalid",
                f"status {alert['status']!r} on the clips topic, which announces clips only",
            )
            return
        if rec.topic == self.reviews_topic and alert["status"] != REVIEWED:
            # the console's topic cannot start, end or announce a clip of an alert: likewise
            self.stats["refused"] += 1
            self.refused_reviews.skip(
                f"{rec.topic}[{rec.partition}]@{rec.offset}",
                "invalid",
                f"status {alert['status']!r} on the reviews topic, which carries reviews only",
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

    def _log_stats(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._stats_at < STATS_LOG_INTERVAL_S:
            return
        self._stats_at = now
        s = self.stats
        log.info(
            "notifier %s: %d alert events read (%d repeats dropped, %d malformed, %d refused), "
            "%d unsettled; %s",
            self.name,
            s["records"],
            s["duplicates"],
            s["malformed"],
            s["refused"],
            self._unsettled,
            "; ".join(
                f"{r.id}: {r.stats['delivered']} delivered, {r.stats['dead_letter']} dead-lettered"
                for r in self.runners
            ),
        )


def notify_runner(
    cfg: NotifySettings,
    *,
    snapshot_base_url: str | None = None,
    known: tuple[tuple[str, str], ...] = (),
    public_url: str | None = None,
) -> Callable[[threading.Event], None]:
    """For ``vigil run``: a callable that runs the notifier until its ``stop`` is set. Built
    here (sinks included), so a bad sink fails the command, not a thread."""
    service = NotifyService(
        cfg, snapshot_base_url=snapshot_base_url, known=known, public_url=public_url
    )

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
