"""Delivery to one sink: its bounded queues and workers, retries with backoff and jitter, its
rate limit, its retry budget, and the dead-letter topic for what it gives up on.

Per sink, ``workers`` threads each own a bounded queue; a camera's events always go to the same
one, so they arrive in order. A slow or dead sink only fills its own queues: the other sinks
go on, and when a queue is full the delivery is dead-lettered at once (``queue full``) rather
than blocking the consumer. A delivery is retried (``retry.initial_s`` doubling to
``retry.max_s``, each wait drawn in [d/2, d], at least the ``Retry-After`` the far side sent)
until it succeeds, fails permanently, used ``retry.attempts`` or would exceed ``retry.budget_s``;
then it goes to ``vigil.notify.dlq``. A sink that spent a whole budget is "down": until one
attempt succeeds, its deliveries go to the dead-letter topic without waiting, and one of them is
tried every ``retry.max_s`` as a probe. So a dead sink drains its queue in seconds instead of
holding every event for a full budget (which would hold the Kafka commit back for hours).

Each outage is logged once when it starts (with the first error), once when the budget is spent
and once when the sink answers again; secrets are scrubbed from every error text.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kafka.errors import KafkaError, KafkaTimeoutError

from alerts.notify import metrics as m
from alerts.notify.sinks.base import Delivery, Sink, SinkError
from pipeline.common.jsoncodec import dumps
from pipeline.common.lifecycle import OutageLog

log = logging.getLogger(__name__)

Settle = Callable[[Delivery], None]


class TokenBucket:
    """``per_s`` tokens a second, at most ``burst`` saved up; thread-safe."""

    def __init__(self, per_s: float, burst: int) -> None:
        self.per_s = per_s
        self.burst = float(burst)
        self.tokens = float(burst)
        self.at = time.monotonic()
        self._lock = threading.Lock()

    def take(self, stop: threading.Event) -> bool:
        """Wait for a token; False when ``stop`` was set first."""
        while True:
            with self._lock:
                now = time.monotonic()
                self.tokens = min(self.burst, self.tokens + (now - self.at) * self.per_s)
                self.at = now
                if self.tokens >= 1.0:
                    self.tokens -= 1.0
                    return True
                need = (1.0 - self.tokens) / self.per_s
            if stop.wait(need):
                return False


def backoff(
    attempt: int, initial_s: float, max_s: float, retry_after: float | None = None
) -> float:
    """Wait before attempt ``attempt + 1``: exponential, jittered in [d/2, d] (instances that
    failed together do not retry together), never less than ``retry_after``."""
    d = min(max_s, initial_s * 2 ** (attempt - 1))
    wait = random.uniform(d / 2, d)
    return max(wait, retry_after) if retry_after is not None else wait


@dataclass(slots=True)
class DeadLetter:
    delivery: Delivery | None
    value: dict[str, Any]  # the dead-letter message
    key: str | None  # Kafka key (the camera id)


class DeadLetters:
    """Writes dead letters to the notifier's dead-letter topic from one thread; a dead letter
    settles its delivery once Kafka acknowledged it (until then the alert's offset is not
    committed). Kafka outages are retried with backoff, logged once."""

    def __init__(
        self,
        producer: Any,
        topic: str,
        group: str,
        settle: Settle,
        retry_initial_s: float = 0.2,
        retry_max_s: float = 10.0,
    ) -> None:
        self.producer = producer
        self.topic = topic
        self.group = group
        self.settle = settle
        self.retry_initial_s = retry_initial_s
        self.retry_max_s = retry_max_s
        self._q: queue.Queue[DeadLetter] = queue.Queue()
        self._closing = threading.Event()
        self._abort = threading.Event()
        self._thread: threading.Thread | None = None
        self.state = OutageLog(log, f"Kafka dead-letter topic {topic}")
        self.written = 0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="notify-dlq", daemon=True)
        self._thread.start()

    def close(self, timeout_s: float) -> None:
        """Write what is queued (at most ``timeout_s``), then stop; unwritten ones stay
        unsettled (their alerts are delivered again after a restart)."""
        self._closing.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._abort.set()
            self._thread.join(5.0)

    def pending(self) -> int:
        return self._q.qsize()

    def put(
        self,
        d: Delivery | None,
        *,
        sink: Sink | None,
        error: str,
        attempts: int,
        first_attempt_at: float | None,
        origin: tuple[str, int, int] | None = None,
        value_text: str | None = None,
        key: str | None = None,
    ) -> None:
        """Queue a dead letter (never blocks). ``d`` None: a record that is not an alert."""
        if d is not None and d.record is not None:
            origin = origin or getattr(d.record, "origin", None)
        alert = (d.alert or None) if d is not None else None  # {}: not an alert
        value = {
            "sink": sink.id if sink is not None else None,
            "sink_type": sink.kind if sink is not None else None,
            "error": error[:2000],
            "attempts": attempts,
            "idempotency_key": (d.key or None) if d is not None else None,
            "alert": alert,
            "value": value_text,
            "topic": origin[0] if origin else None,
            "partition": origin[1] if origin else None,
            "offset": origin[2] if origin else None,
            "group": self.group,
            "first_attempt_at": round(first_attempt_at, 6) if first_attempt_at else None,
            "ts": round(time.time(), 6),
        }
        if key is None and alert is not None:
            key = str(alert.get("camera_id"))
        self._q.put(DeadLetter(d, value, key))

    def _loop(self) -> None:
        while True:
            try:
                first = self._q.get(timeout=0.2)
            except queue.Empty:
                if self._closing.is_set():
                    return
                continue
            batch = [first]
            while len(batch) < 500:
                try:
                    batch.append(self._q.get_nowait())
                except queue.Empty:
                    break
            if not self._write(batch):
                return

    def _write(self, batch: list[DeadLetter]) -> bool:
        """Send until every one is acknowledged; False when aborted."""
        delay = self.retry_initial_s
        todo = batch
        while todo:
            futures = []
            error: Exception | None = None
            for dl in todo:
                try:
                    futures.append(
                        (dl, self.producer.send(self.topic, key=dl.key, value=dumps(dl.value)))
                    )
                except KafkaError as e:
                    futures.append((dl, None))
                    error = e
            try:
                self.producer.flush(timeout=10.0)
            except KafkaError as e:
                error = e
            failed = []
            for dl, fut in futures:
                try:
                    if fut is None:
                        raise KafkaTimeoutError("not sent")
                    fut.get(timeout=0.1)
                except KafkaError as e:
                    failed.append(dl)
                    error = e
                    continue
                self.written += 1
                if dl.delivery is not None:
                    self.settle(dl.delivery)
            todo = failed
            if todo:
                self.state.down(f"{type(error).__name__}: {error}")
                if self._abort.wait(delay):
                    return False
                delay = min(delay * 2, self.retry_max_s)
            else:
                self.state.up()
        return True


class SinkRunner:
    """One sink's queues, workers, retry policy and health."""

    def __init__(
        self,
        sink: Sink,
        dead: DeadLetters,
        settle: Settle,
        halt: threading.Event,
    ) -> None:
        self.sink = sink
        self.cfg = sink.cfg
        self.id = sink.id
        self.dead = dead
        self.settle = settle
        self.halt = halt
        n = max(1, sink.workers)
        per = max(1, self.cfg.queue_size // n)
        self.queues: list[queue.Queue[Delivery]] = [queue.Queue(maxsize=per) for _ in range(n)]
        rl = self.cfg.rate_limit
        self.bucket = TokenBucket(rl.per_s, rl.burst) if rl is not None else None
        self.state = OutageLog(log, sink.describe())
        self._lock = threading.Lock()
        self._down_since: float | None = None
        self._last_probe = 0.0
        self._last_error = ""
        self._threads: list[threading.Thread] = []
        self.shedding = False  # too slow: a full queue dead-letters instead of waiting
        self.held_since: float | None = None  # since when the consumer waits for this sink
        self._delivered = m.DELIVERIES.labels(self.id, "delivered")
        self._dead = m.DELIVERIES.labels(self.id, "dead_letter")
        self._failed_attempts = m.FAILED_ATTEMPTS.labels(self.id)
        self._latency = m.LATENCY.labels(self.id)
        self._up_gauge = m.SINK_UP.labels(self.id)
        self._up_gauge.set(1)
        self.stats = {"delivered": 0, "dead_letter": 0, "queue_full": 0, "failed_attempts": 0}

    # -- feeding --------------------------------------------------------------------------------

    def wants(self, alert: dict[str, Any]) -> bool:
        return self.cfg.matches(alert)

    def offer(self, d: Delivery, hold_s: float) -> None:
        """Queue ``d`` on its camera's worker. A full queue makes the caller (the consumer
        loop) wait, at most ``hold_s``: a healthy sink working through a backlog paces the
        consumer and loses nothing. A sink that keeps its queue full for longer is too slow:
        it sheds (``queue full`` dead letters) until its queue has room again, so it does not
        hold the other sinks back (:meth:`pressure`)."""
        qs = self.queues
        q = qs[zlib.crc32(d.alert["camera_id"].encode()) % len(qs)] if len(qs) > 1 else qs[0]
        try:
            if self.shedding or self._down_since is not None or hold_s <= 0:
                q.put_nowait(d)
            else:
                q.put(d, timeout=hold_s)
            return
        except queue.Full:
            pass
        if not self.shedding and self._down_since is None and hold_s > 0:
            self._start_shedding(f"its queue stayed full for {hold_s:.1f} s")
        with self._lock:
            self.stats["queue_full"] += 1
        self._dead_letter(
            d,
            0,
            f"queue full ({q.maxsize} deliveries waiting): {self.sink.describe()} too slow or down",
            None,
        )

    def fill(self) -> float:
        """How full the fullest of its queues is (0..1)."""
        return max(q.qsize() / q.maxsize for q in self.queues)

    def pressure(self, now: float, max_hold_s: float) -> bool:
        """Whether the consumer should wait for this sink before reading more: its queues are
        half full and it is neither down nor shedding. Waiting for it longer than
        ``max_hold_s`` in a row makes it shed; shedding ends when its queues are below 1/4."""
        fill = self.fill()
        if self.shedding:
            if fill < 0.25:
                self.shedding = False
                self.held_since = None
                log.info(
                    "%s: keeps up again; its deliveries wait in its queue again",
                    self.sink.describe(),
                )
            return False
        if fill < 0.5 or self._down_since is not None:
            self.held_since = None
            return False
        if self.held_since is None:
            self.held_since = now
        elif max_hold_s > 0 and now - self.held_since > max_hold_s:
            self._start_shedding(f"it held the other sinks back for {now - self.held_since:.1f} s")
            return False
        return True

    def _start_shedding(self, why: str) -> None:
        self.shedding = True
        log.warning(
            "%s is too slow (%s): while its queue is full its new deliveries go to %s",
            self.sink.describe(),
            why,
            self.dead.topic,
        )

    def queued(self) -> int:
        return sum(q.qsize() for q in self.queues)

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        self.sink.start()
        for i, q in enumerate(self.queues):
            t = threading.Thread(
                target=self._work, args=(q,), name=f"notify-{self.id}-{i}", daemon=True
            )
            t.start()
            self._threads.append(t)

    def join(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))

    def close(self) -> None:
        try:
            self.sink.close()
        except Exception as e:  # closing must not stop the other sinks' closing
            log.debug("%s: close: %s", self.sink.describe(), e)

    def _work(self, q: queue.Queue[Delivery]) -> None:
        while not self.halt.is_set():
            try:
                d = q.get(timeout=0.2)
            except queue.Empty:
                continue
            try:
                self._deliver(d)
            except Exception:  # a bug here must not end the worker (its queue would only grow)
                log.exception(
                    "%s: unexpected error; the event stays unsettled", self.sink.describe()
                )

    # -- one delivery ---------------------------------------------------------------------------

    def _deliver(self, d: Delivery) -> None:
        r = self.cfg.retry
        attempts = 0
        first: float | None = None
        t0 = time.monotonic()
        while not self.halt.is_set():
            probe = False
            if self._down_since is not None:
                probe = self._probe_due()
                if not probe:
                    down_s = time.monotonic() - self._down_since
                    self._dead_letter(
                        d,
                        attempts,
                        f"not attempted: sink down for {down_s:.0f} s "
                        f"(last error: {self._last_error})",
                        first,
                    )
                    return
            if self.bucket is not None and not self.bucket.take(self.halt):
                return
            if first is None:
                first = time.time()
            attempts += 1
            try:
                self.sink.send(d)
            except Exception as e:  # SinkError, or a sink's bug: counted as a failed attempt
                if isinstance(e, SinkError):
                    err, retry_after, permanent = str(e), e.retry_after, e.permanent
                else:
                    err, retry_after, permanent = f"{type(e).__name__}: {e}", None, False
                    log.debug("%s: unexpected error", self.sink.describe(), exc_info=True)
                err = self.sink.scrub(err)
                self._attempt_failed(err)
                if permanent:
                    self._dead_letter(d, attempts, f"permanent failure: {err}", first)
                    return
                if probe:
                    self._dead_letter(d, attempts, f"sink still down: {err}", first)
                    return
                wait = backoff(attempts, r.initial_s, r.max_s, retry_after)
                spent = time.monotonic() - t0
                if attempts >= r.attempts or spent + wait > r.budget_s:
                    self._budget_spent(attempts, spent, err)
                    self._dead_letter(d, attempts, err, first)
                    return
                if self.halt.wait(wait):
                    return  # stopping: unsettled, delivered again after the restart
                continue
            self._succeeded(d)
            return

    def _probe_due(self) -> bool:
        with self._lock:
            now = time.monotonic()
            if now - self._last_probe >= self.cfg.retry.max_s:
                self._last_probe = now
                return True
            return False

    def _attempt_failed(self, err: str) -> None:
        self._failed_attempts.inc()
        with self._lock:
            self.stats["failed_attempts"] += 1
            self._last_error = err
        self._up_gauge.set(0)
        self.state.down(f"{err}; retrying with backoff")

    def _budget_spent(self, attempts: int, spent_s: float, err: str) -> None:
        with self._lock:
            if self._down_since is not None:
                return
            self._down_since = time.monotonic()
            self._last_probe = self._down_since
        log.warning(
            "%s: retry budget spent (%d attempt(s) in %.1f s, last error: %s); its deliveries "
            "go to %s until it answers again (one probe every %g s)",
            self.sink.describe(),
            attempts,
            spent_s,
            err,
            self.dead.topic,
            self.cfg.retry.max_s,
        )

    def _succeeded(self, d: Delivery) -> None:
        if self._down_since is not None:
            with self._lock:
                self._down_since = None
        self.state.up()
        self._up_gauge.set(1)
        with self._lock:
            self.stats["delivered"] += 1
        self._delivered.inc()
        if d.kafka_ts is not None:
            self._latency.observe(max(0.0, time.time() - d.kafka_ts))
        self.settle(d)

    def _dead_letter(self, d: Delivery, attempts: int, error: str, first: float | None) -> None:
        with self._lock:
            self.stats["dead_letter"] += 1
        self._dead.inc()
        log.debug(
            "%s: dead letter %s after %d attempt(s): %s",
            self.sink.describe(),
            d.key,
            attempts,
            error,
        )
        self.dead.put(d, sink=self.sink, error=error, attempts=attempts, first_attempt_at=first)
