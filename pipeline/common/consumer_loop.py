"""The Kafka consumer-service loop, written once: the alert service and the notifier (and the
recorder to come) are a :class:`ConsumerHandler` run by a :class:`ConsumerLoop`.

The loop owns the clients and the mechanism; the handler owns what is done with the records:

* connect: topics, a producer, a consumer-group member (offsets committed by the handler, after
  its work is safe) subscribed to one topic or several (the notifier: alerts and clips; a
  record's ``topic`` says which); retried with backoff until it works or the stop
  event is set;
* rebalances: the consumer's callbacks only record the event (they run inside ``poll``); the
  loop hands each one, in order, to :meth:`ConsumerHandler.on_revoked` / ``on_assigned`` right
  after the poll that reported it, then lets the handler take (seek) its new partitions, whose
  records of that poll predate the seek and are dropped;
* a step: ``before_poll``, poll, the rebalance callbacks, ``start_partitions``, ``handle_batch``,
  ``commit``, the broker connection check (``on_tick``), ``after_step``;
* errors: a ``KafkaError`` marks Kafka lost (one log line per outage, :class:`OutageLog`; the
  consumer's connection count marks it back), anything else is logged with its traceback; the
  handler may ``recover``, then the loop waits with backoff and goes on;
* close: ``on_close`` (the handler's last commits), the consumer and the producer, then
  ``after_close``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from kafka import TopicPartition
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.errors import KafkaError

from pipeline.common.kafka import (
    KafkaConfig,
    KafkaUnavailable,
    connection_count,
    ensure_topics,
    group_consumer,
    make_producer,
)
from pipeline.common.lifecycle import OutageLog
from pipeline.common.retry import Retrier, Stopped, retry_with_backoff

Records = dict[TopicPartition, list[Any]]


def tp_order(tp: TopicPartition) -> tuple[str, int]:
    return (tp.topic, tp.partition)


def fmt_partitions(tps: Iterable[TopicPartition]) -> str:
    return ", ".join(f"{tp.topic}[{tp.partition}]" for tp in sorted(tps, key=tp_order))


class ConsumerHandler:
    """The callback points of :class:`ConsumerLoop`; all run in the loop's thread. The defaults
    do nothing."""

    def on_started(self) -> None:
        """Connected, before the first poll."""

    def before_poll(self) -> None:
        """Each step, first (the alert service applies a rule change here)."""

    def poll_timeout_ms(self) -> int:
        raise NotImplementedError

    def on_revoked(self, tps: set[TopicPartition]) -> None:
        """Partitions taken away by a rebalance, reported by the last poll."""

    def on_assigned(self, tps: set[TopicPartition]) -> None:
        """Partitions given by a rebalance, reported by the last poll."""

    def start_partitions(self, records: Records) -> set[TopicPartition]:
        """After the rebalance callbacks: take the partitions assigned (seek to where each one
        resumes). Returns those taken now; their records of this poll are dropped (fetched
        again after the seek)."""
        return set()

    def handle_batch(self, batch: Records, fresh: set[TopicPartition]) -> int:
        """The records polled (non-empty lists, no partition of ``fresh``); returns how many
        were handled."""
        raise NotImplementedError

    def commit(self) -> None:
        """After each batch, and each empty poll: save and commit what is due."""

    def on_tick(self) -> None:
        """At most once a second, after the broker connection check (gauges)."""

    def after_step(self) -> None:
        """Each step, last (flow control, lag, the periodic stats line)."""

    def recover(self, error: Exception) -> None:
        """After a step failed with ``error`` (logged), before the backoff wait."""

    def on_close(self) -> None:
        """Closing, while the clients are still open: last deliveries, saves and commits."""

    def after_close(self) -> None:
        """Closing, after the clients."""


class _Listener(ConsumerRebalanceListener):
    """Runs inside the consumer's poll: record the event, do nothing blocking."""

    def __init__(self, loop: ConsumerLoop) -> None:
        self.loop = loop

    def on_partitions_revoked(self, revoked) -> None:
        with self.loop._lock:
            self.loop._events.append(("revoked", set(revoked)))

    def on_partitions_assigned(self, assigned) -> None:
        with self.loop._lock:
            self.loop._events.append(("assigned", set(assigned)))


class ConsumerLoop:
    """Connect, poll / step / commit until stopped, close; see the module docstring.

    ``client``: the client id suffix of both clients; ``consumer_kw``: more settings of the
    group member (``group_instance_id``, ``auto_offset_reset``...); ``backoff``: initial and
    longest wait between connection attempts and after a failed step. Connection failures are
    reported to ``connect_retrier`` under the operation ``connect to Kafka`` when one is given
    (one warning per outage), otherwise to the Kafka :class:`OutageLog` (lost / back).
    ``topic``: one topic, or several (``topics``; ``topic`` is then the first).
    ``learn_partitions``: wait (``bootstrap_timeout_ms`` at most) until the consumer knows the
    topics' partitions before joining the group (a member that joins without them gets none
    until the next metadata refresh, minutes later)."""

    def __init__(
        self,
        handler: ConsumerHandler,
        kafka: KafkaConfig,
        topic: str | Sequence[str],
        *,
        client: str,
        group_id: str,
        session_timeout_ms: int,
        max_records: int,
        logger: logging.Logger,
        name: str,
        backoff: tuple[float, float],
        consumer_kw: dict[str, Any] | None = None,
        producer_close_s: float = 10.0,
        connect_retrier: Retrier | None = None,
        scrub: Callable[[object], str] = str,
        unexpected_error: str = "unexpected error in the consumer loop",
        learn_partitions: bool = False,
    ) -> None:
        self.handler = handler
        self.kafka = kafka
        self.topics = (topic,) if isinstance(topic, str) else tuple(topic)
        self.topic = self.topics[0]
        self.client = client
        self.group_id = group_id
        self.session_timeout_ms = session_timeout_ms
        self.max_records = max_records
        self.log = logger
        self.backoff = backoff
        self.consumer_kw = dict(consumer_kw or {})
        self.producer_close_s = producer_close_s
        self.connect_retrier = connect_retrier
        self.scrub = scrub
        self.unexpected_error = unexpected_error
        self.learn_partitions = learn_partitions
        self.consumer: Any = None
        self.producer: Any = None
        self.kafka_state = OutageLog(logger, f"Kafka at {kafka.bootstrap_servers} ({name})")
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._events: list[tuple[str, set[TopicPartition]]] = []
        self._kafka_checked_at = 0.0

    # -- lifecycle ------------------------------------------------------------------------------

    def run(self, stop: threading.Event, max_seconds: float | None = None) -> None:
        """Connect, step until ``stop`` is set (or ``max_seconds`` passed), then close."""
        self._stop = stop
        deadline = None if max_seconds is None else time.monotonic() + max_seconds
        initial_s, max_s = self.backoff
        try:
            self.connect()
            self.handler.on_started()
            backoff = initial_s
            while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
                try:
                    self.step()
                    backoff = initial_s
                except Stopped:
                    break
                except KafkaError as e:  # from poll or a seek: before a batch's processing
                    self.kafka_state.down(f"{type(e).__name__}: {self.scrub(e)}")
                    self.handler.recover(e)
                    stop.wait(backoff)
                    backoff = min(backoff * 2, max_s)
                except Exception as e:
                    self.log.exception(self.unexpected_error)
                    self.handler.recover(e)
                    stop.wait(backoff)
                    backoff = min(backoff * 2, max_s)
        except Stopped:
            pass
        finally:
            self.close()

    def connect(self) -> None:
        """Topics, producer, consumer; retried with backoff until it works (:class:`Stopped`
        when ``stop`` is set first)."""
        r = self.connect_retrier
        op = "connect to Kafka"
        retry_with_backoff(
            self._connect_once,
            self._stop,
            (KafkaUnavailable, KafkaError),
            *self.backoff,
            on_failure=(
                (lambda e: r.failed(op, e))
                if r is not None
                else (lambda e: self.kafka_state.down(str(e)))
            ),
            on_success=(lambda: r.recovered(op)) if r is not None else self.kafka_state.up,
        )

    def _connect_once(self) -> None:
        ensure_topics(self.kafka)
        if self.producer is None:
            # send() blocks at most 10 s on missing metadata, so a stop is never held long
            self.producer = make_producer(self.kafka, self.client, max_block_ms=10_000)
        if self.consumer is None:
            consumer = group_consumer(
                self.kafka,
                self.client,
                group_id=self.group_id,
                session_timeout_ms=self.session_timeout_ms,
                max_poll_records=self.max_records,
                **self.consumer_kw,
            )
            if self.learn_partitions:
                deadline = time.monotonic() + self.kafka.bootstrap_timeout_ms / 1000
                while not all(consumer.partitions_for_topic(t) for t in self.topics):
                    if time.monotonic() > deadline or self._stop.wait(0.2):
                        break
            consumer.subscribe(list(self.topics), listener=_Listener(self))
            self.consumer = consumer

    def close(self) -> None:
        """The handler's ``on_close``, the clients, the handler's ``after_close``; again is
        harmless."""
        self.handler.on_close()
        if self.consumer is not None:
            try:
                self.consumer.close(autocommit=False, timeout_ms=5000)
            except Exception as e:
                self.log.debug("consumer close: %s", e)
            self.consumer = None
        if self.producer is not None:
            try:
                self.producer.close(timeout=self.producer_close_s)
            except Exception as e:
                self.log.debug("producer close: %s", e)
            self.producer = None
        self.handler.after_close()

    # -- one step -------------------------------------------------------------------------------

    def step(self) -> int:
        """Poll one batch and hand it to the handler; returns what ``handle_batch`` returned."""
        assert self.consumer is not None
        h = self.handler
        h.before_poll()
        records = self.consumer.poll(timeout_ms=h.poll_timeout_ms(), max_records=self.max_records)
        with self._lock:
            events, self._events = self._events, []
        for kind, tps in events:
            if kind == "revoked":
                h.on_revoked(tps)
            else:
                h.on_assigned(tps)
        fresh = h.start_partitions(records)
        batch = {tp: recs for tp, recs in records.items() if recs and tp not in fresh}
        n = h.handle_batch(batch, fresh)
        h.commit()
        self.check_kafka()
        h.after_step()
        return n

    def check_kafka(self) -> None:
        """One line when the consumer loses every broker connection, one when it has them back
        (kafka-python's own per-attempt lines are silenced by the CLI); then ``on_tick``. At
        most once a second."""
        now = time.monotonic()
        if now - self._kafka_checked_at < 1.0 or self.consumer is None:
            return
        self._kafka_checked_at = now
        count = connection_count(self.consumer)
        if count == 0:
            self.kafka_state.down("no broker connection", failed_operation=False)
        elif count:
            self.kafka_state.up()
        self.handler.on_tick()
