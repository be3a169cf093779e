"""The alert service: detection messages in (a Kafka consumer group), alerts out (Redis + Kafka).

One batch at a time, in this order, each step retried with backoff until it succeeds:

1. ``poll`` a batch; run every message through the rule engine of its partition (malformed
   messages go to the dead-letter topic instead);
2. write the batch's alert events to Redis (idempotent: an (id, status) already there is skipped)
   with a snapshot of the triggering frame for "started" events;
3. publish to Kafka the alert events not yet acknowledged there, and the dead letters; mark the
   alerts as published in Redis;
4. checkpoint, per partition of the batch, the rule engine state together with the next offset
   (one Redis key each), then commit that offset to Kafka (asynchronously, in order; ``close``
   waits for the last commits).

A crash anywhere replays from the last checkpoint with the state that goes with it; the engine is
deterministic (capture time, not the wall clock) so the replay produces the same alerts with the
same ids, which Redis already has: nothing is lost and nothing is stored twice. Kafka gets an
alert again only after a crash between its acknowledgement and step 3's mark (at-least-once;
consumers dedup by (id, status)). The checkpoint, not the committed offset, says where a
partition resumes; the commit follows it for lag monitoring and as a fallback.

Partitions carry cameras (messages are keyed by camera id), so each partition gets its own
``RuleEngine``: on assignment it is rebuilt from the partition's checkpoint and the consumer seeks
to the checkpoint's offset; on revocation it is dropped. Rebalance callbacks run on the Kafka IO
loop and only record the event; the work happens in the main loop between batches.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

import redis
from kafka import TopicPartition
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.errors import KafkaError, KafkaTimeoutError
from kafka.structs import OffsetAndMetadata

from alerts import metrics as m
from alerts.config import AlertsConfig, AlertsSettings, parse_alerts_config
from alerts.engine import RuleEngine
from alerts.events import AlertEvent
from alerts.snapshots import render_snapshot
from alerts.store import AlertStore, AlertWrite
from pipeline.common.jsoncodec import dumps, loads
from pipeline.common.kafka import KafkaUnavailable, ensure_topics, make_consumer, make_producer

log = logging.getLogger(__name__)

T = TypeVar("T")

# Test hook: "stage:n" kills this process (SIGKILL) the n-th time a batch reaches ``stage``
# (stored, acked, published, checkpointed), to prove a crash in any window of a batch loses
# nothing and stores nothing twice.
CRASH_ENV = "VIGIL_ALERTS_TEST_CRASH"
STATS_LOG_INTERVAL_S = 60.0


class _Stopped(Exception):
    """The stop event was set while a step was waiting to retry."""


@dataclass(slots=True)
class _Alert:
    event: AlertEvent
    message: dict[str, Any]
    capture_ts: float
    payload: bytes  # the message as JSON, encoded once: stored in Redis and published as is


class _Listener(ConsumerRebalanceListener):
    """Runs on the consumer's IO loop: record the event, do nothing blocking."""

    def __init__(self, service: AlertService) -> None:
        self.service = service

    def on_partitions_revoked(self, revoked) -> None:
        self.service._rebalance_event("revoked", revoked)

    def on_partitions_assigned(self, assigned) -> None:
        self.service._rebalance_event("assigned", assigned)


class AlertService:
    def __init__(
        self,
        cfg: AlertsSettings,
        alerts_cfg: AlertsConfig | None = None,
        name: str | None = None,
    ) -> None:
        self.cfg = cfg
        self.acfg = alerts_cfg if alerts_cfg is not None else parse_alerts_config(cfg.alerts)
        self.scfg = self.acfg.service
        RuleEngine(self.acfg)  # fail now, not at the first assignment, on a rule without a type
        self.name = name or self.scfg.instance_id or f"{socket.gethostname()}-{os.getpid()}"
        self.group = self.scfg.group_id
        self.topic = cfg.kafka.topics.detections
        self.store = AlertStore(cfg.redis, alert_ttl_s=self.scfg.alert_ttl_s)
        self.consumer = None
        self.producer = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._events: list[tuple[str, set[TopicPartition]]] = []
        self._pending: set[TopicPartition] = set()
        self._engines: dict[TopicPartition, RuleEngine] = {}
        self._next_offset: dict[TopicPartition, int | None] = {}
        self._dirty: set[TopicPartition] = set()
        # offsets committed asynchronously, not yet confirmed by the broker
        self._uncommitted: dict[TopicPartition, OffsetAndMetadata] = {}
        self._consistent = True  # False while a batch is half done (state ahead of Redis)
        self._last_checkpoint = time.monotonic()
        self._lag_at = 0.0
        self._stats_at = time.monotonic()
        self._failing: dict[str, float] = {}
        self._secret = _url_password(cfg.redis.url.get_secret_value())
        self._messages_ok = m.MESSAGES.labels("ok")
        self.stats = {
            "messages": 0,
            "dlq": 0,
            "alerts_written": 0,
            "alerts_replayed": 0,
            "published": 0,
            "batches": 0,
            "restores": 0,
            "checkpoints": 0,
        }
        crash = os.environ.get(CRASH_ENV, "")
        stage, _, n = crash.partition(":")
        self._crash = (stage, int(n or 1)) if stage else None
        self._crash_seen = 0

    # -- lifecycle ----------------------------------------------------------------------------------

    def run(self, stop: threading.Event, max_seconds: float | None = None) -> None:
        """Consume until ``stop`` is set (or ``max_seconds`` passed), then close."""
        self._stop = stop
        deadline = None if max_seconds is None else time.monotonic() + max_seconds
        try:
            self._connect()
            log.info(
                "alert service %s: group %s on %s, %d rule(s)",
                self.name,
                self.group,
                self.topic,
                len(self.acfg.rules),
            )
            backoff = self.scfg.retry_initial_s
            while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
                try:
                    self.step()
                    backoff = self.scfg.retry_initial_s
                except _Stopped:
                    break
                except KafkaError as e:  # from poll or a seek: before a batch's processing
                    log.warning("Kafka: %s: %s; retrying", type(e).__name__, self._scrub(e))
                    if not self._consistent:
                        self._resync()
                    stop.wait(backoff)
                    backoff = min(backoff * 2, self.scfg.retry_max_s)
                except Exception:
                    log.exception("unexpected error; resuming from the last checkpoints")
                    self._resync()
                    stop.wait(backoff)
                    backoff = min(backoff * 2, self.scfg.retry_max_s)
        except _Stopped:
            pass
        finally:
            self.close()

    def _connect(self) -> None:
        def connect() -> None:
            ensure_topics(self.cfg.kafka)
            if self.producer is None:
                # send() blocks at most 10 s on missing metadata, so a stop is never held long
                self.producer = make_producer(
                    self.cfg.kafka, f"alerts-{self.name}", max_block_ms=10_000
                )
            if self.consumer is None:
                s = self.scfg
                consumer = make_consumer(
                    self.cfg.kafka,
                    f"alerts-{self.name}",
                    group_id=s.group_id,
                    group_instance_id=s.instance_id,
                    enable_auto_commit=False,
                    auto_offset_reset=s.auto_offset_reset,
                    max_poll_records=s.max_batch,
                    session_timeout_ms=s.session_timeout_ms,
                    heartbeat_interval_ms=max(1000, s.session_timeout_ms // 3),
                    max_poll_interval_ms=s.max_poll_interval_ms,
                )
                consumer.subscribe([self.topic], listener=_Listener(self))
                self.consumer = consumer

        self._retry("connect to Kafka", connect, (KafkaUnavailable, KafkaError))

    def close(self) -> None:
        self._log_stats(force=True)
        if self._consistent and self._dirty and self.consumer is not None:
            # only with checkpoint_interval_s > 0: save what the interval held back
            with contextlib.suppress(redis.RedisError, _Stopped):
                self._checkpoint(sorted(self._dirty, key=_tp_order), retry=False)
        self._commit_sync()
        if self.consumer is not None:
            try:
                self.consumer.close(autocommit=False, timeout_ms=5000)
            except Exception as e:
                log.debug("consumer close: %s", e)
            self.consumer = None
        if self.producer is not None:
            try:
                self.producer.close(timeout=10)
            except Exception as e:
                log.debug("producer close: %s", e)
            self.producer = None
        for tp in list(self._engines):
            self._forget(tp)
        m.PARTITIONS.set(0)
        with contextlib.suppress(Exception):
            self.store.client.close()

    # -- one batch ----------------------------------------------------------------------------------

    def step(self) -> int:
        """Poll and fully handle one batch; returns the number of messages processed."""
        assert self.consumer is not None
        records = self.consumer.poll(
            timeout_ms=self.scfg.poll_timeout_ms, max_records=self.scfg.max_batch
        )
        fresh = self._handle_rebalance(records)
        self._consistent = False
        alerts: list[_Alert] = []
        dead: list[tuple[str, bytes | None, dict[str, Any]]] = []
        offsets: dict[TopicPartition, int] = {}
        n = 0
        for tp, recs in records.items():
            engine = self._engines.get(tp)
            if engine is None or tp in fresh or not recs:
                continue  # fetched before the seek to its checkpoint: fetched again after it
            for rec in recs:
                self._process_record(engine, rec, alerts, dead)
            n += len(recs)
            offsets[tp] = recs[-1].offset + 1
        if offsets:
            self._handle_batch(alerts, dead, offsets)
            self.stats["batches"] += 1
            m.BATCH_SIZE.observe(n)
        elif self._dirty and self._checkpoint_due():
            self._checkpoint(sorted(self._dirty, key=_tp_order))
        self._consistent = True
        self._update_lag()
        self._log_stats()
        return n

    def _process_record(self, engine: RuleEngine, rec, alerts: list, dead: list) -> None:
        t0 = time.perf_counter()
        try:
            if rec.value is None:
                raise ValueError("empty message (null value)")
            msg = loads(rec.value)
            events = engine.process(msg)
        except ValueError as e:  # bad JSON, bad UTF-8, or FrameEvent.from_message
            self._dead_letter(rec, str(e), dead)
            return
        except Exception as e:  # a rule bug must not stop the service: park the message
            log.exception("rule engine failed on %s[%d]@%d", rec.topic, rec.partition, rec.offset)
            self._dead_letter(rec, f"internal error: {type(e).__name__}: {e}", dead)
            return
        finally:
            m.RULE_SECONDS.observe(time.perf_counter() - t0)
        self.stats["messages"] += 1
        self._messages_ok.inc()
        if events:
            capture_ts = float(msg["capture_ts"])
            for ev in events:
                d = ev.to_dict()
                alerts.append(_Alert(ev, d, capture_ts, dumps(d)))

    def _dead_letter(self, rec, error: str, dead: list) -> None:
        limit = self.scfg.dlq_max_value_bytes
        raw = rec.value or b""
        value = {
            "error": error[:2000],
            "topic": rec.topic,
            "partition": rec.partition,
            "offset": rec.offset,
            "key": rec.key.decode("utf-8", "replace") if rec.key is not None else None,
            "value": None if rec.value is None else raw[:limit].decode("utf-8", "replace"),
            "value_truncated": len(raw) > limit,
            "ts": round(time.time(), 6),
            "group": self.group,
        }
        dead.append((self.cfg.kafka.topics.detections_dlq, rec.key, value))
        self.stats["dlq"] += 1
        m.MESSAGES.labels("dlq").inc()
        m.DLQ.inc()
        log.warning("dead letter %s[%d]@%d: %s", rec.topic, rec.partition, rec.offset, error[:200])

    def _handle_batch(
        self,
        alerts: list[_Alert],
        dead: list[tuple[str, bytes | None, dict[str, Any]]],
        offsets: dict[TopicPartition, int],
    ) -> None:
        # 1. Redis (idempotent), 2. Kafka, 3. checkpoint, 4. commit: nothing is acknowledged
        # to Kafka before it is stored.
        todo = self._retry("Redis alert write", lambda: self._store(alerts)) if alerts else []
        self._crash_point("stored")
        topic = self.cfg.kafka.topics.alerts
        sends = [(topic, a.message["camera_id"], a.payload) for a in todo] + dead
        if sends:
            t0 = time.perf_counter()
            self._publish(sends)
            m.PUBLISH_SECONDS.observe(time.perf_counter() - t0)
            self.stats["published"] += len(todo)
            m.ALERTS_PUBLISHED.inc(len(todo))
        self._crash_point("acked")
        if todo:
            done = [(a.event.id, a.event.status) for a in todo]
            self._retry("Redis publish mark", lambda: self.store.mark_published(done))
        self._crash_point("published")
        self._next_offset.update(offsets)
        self._dirty.update(offsets)
        if self._checkpoint_due():
            self._checkpoint(sorted(self._dirty, key=_tp_order))

    def _store(self, alerts: list[_Alert]) -> list[_Alert]:
        """Write to Redis; returns the alerts Kafka has not acknowledged yet."""
        t0 = time.perf_counter()
        started = [a for a in alerts if a.event.status == "started"]
        sources = self.store.snapshot_sources(
            [(a.event.id, a.event.camera_id, a.event.epoch, a.event.frame_seq) for a in started]
        )
        snaps: dict[int, bytes | None] = {}
        for a, (frame, already) in zip(started, sources, strict=True):
            if frame is not None and not already:
                try:
                    snaps[id(a)] = render_snapshot(frame, a.message, self.scfg.snapshot_quality)
                except Exception as e:  # a bad JPEG must not block the alert
                    log.warning("snapshot of alert %s failed: %s", a.event.id, e)
        results = self.store.write_alerts(
            [AlertWrite(a.message, a.capture_ts, snaps.get(id(a)), a.payload) for a in alerts]
        )
        now = time.time()
        m.REDIS_WRITE_SECONDS.observe(time.perf_counter() - t0)
        todo = []
        for a, (written, published) in zip(alerts, results, strict=True):
            if written:
                self.stats["alerts_written"] += 1
                m.ALERTS_WRITTEN.labels(a.event.rule_id, a.event.status).inc()
                m.CAPTURE_TO_REDIS_SECONDS.observe(max(0.0, now - a.capture_ts))
            else:
                self.stats["alerts_replayed"] += 1
                m.ALERTS_REPLAYED.inc()
            if not published:
                todo.append(a)
        return todo

    def _publish(self, sends: list[tuple[str, Any, dict[str, Any]]]) -> None:
        """Send and wait for every acknowledgement; resend what failed, with backoff."""
        assert self.producer is not None
        pending = sends
        delay = self.scfg.retry_initial_s
        op = "Kafka publish"
        while True:
            futures: list[tuple[Any, Any]] = []
            send = self.producer.send
            for s in pending:
                try:
                    futures.append((s, send(s[0], key=s[1], value=s[2])))
                except KafkaError as e:
                    futures.append((s, e))
            self._flush()
            failed, error = [], None
            for s, fut in futures:
                if isinstance(fut, Exception):
                    failed.append(s)
                    error = fut
                    continue
                while True:
                    try:
                        fut.get(timeout=1.0)
                        break
                    except KafkaTimeoutError as e:
                        if fut.is_done:
                            failed.append(s)
                            error = e
                            break
                        if self._stop.is_set():
                            raise _Stopped from None
                    except KafkaError as e:
                        failed.append(s)
                        error = e
                        break
            if not failed:
                self._recovered(op)
                return
            self._failed(op, error)
            if self._stop.wait(delay):
                raise _Stopped
            delay = min(delay * 2, self.scfg.retry_max_s)
            pending = failed

    def _flush(self) -> None:
        """Send what the producer holds now rather than after ``linger_ms``, and wait until it is
        acknowledged or failed; the per-send results are read afterwards (a failure here only
        means some are not done yet: they are waited for one by one)."""
        assert self.producer is not None
        while True:
            try:
                self.producer.flush(timeout=1.0)
                return
            except KafkaTimeoutError:
                if self._stop.is_set():
                    raise _Stopped from None
            except KafkaError:
                return

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
            self._retry("Redis checkpoint", lambda: self.store.put_checkpoints(self.group, cps))
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
                self._failed("Kafka commit", e, retried=False)

    def _on_commit(self, offsets: dict[TopicPartition, OffsetAndMetadata], result: Any) -> None:
        """Commit callback, run by the consumer in this thread (during poll or commit)."""
        if isinstance(result, Exception):
            self._failed("Kafka commit", result, retried=False)
            return
        self._recovered("Kafka commit")
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
            self._recovered("Kafka commit")
        except KafkaError as e:  # the checkpoint already holds the position
            self._failed("Kafka commit", e, retried=False)

    # -- rebalances ---------------------------------------------------------------------------------

    def _rebalance_event(self, kind: str, tps) -> None:
        with self._lock:
            self._events.append((kind, set(tps)))

    def _handle_rebalance(self, records) -> set[TopicPartition]:
        """Apply rebalance events recorded during ``poll``; returns the partitions restored now
        (their records in this poll predate the seek and are dropped)."""
        with self._lock:
            events, self._events = self._events, []
        for kind, tps in events:
            if kind == "revoked":
                dirty = [tp for tp in tps if tp in self._dirty]
                if dirty and self._consistent:
                    # best effort: the next owner replays from the older one otherwise
                    with contextlib.suppress(redis.RedisError):
                        self._checkpoint(sorted(dirty, key=_tp_order), retry=False)
                for tp in tps:
                    self._forget(tp)
                    self._pending.discard(tp)
                if tps:
                    log.info("partitions revoked: %s", _fmt(tps))
            else:
                self._pending |= tps
        fresh = set(self._pending)
        if fresh:
            self._restore(records)
        m.PARTITIONS.set(len(self._engines))
        return fresh

    def _restore(self, records) -> None:
        """Rebuild the engines of newly assigned partitions from their checkpoints and seek."""
        assert self.consumer is not None
        tps = sorted(self._pending, key=_tp_order)
        cps = self._retry(
            "Redis checkpoint load",
            lambda: self.store.get_checkpoints(
                self.group, [(tp.topic, tp.partition) for tp in tps]
            ),
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
                    log.warning("checkpoint of %s unusable (%s); fresh state", _fmt([tp]), e)
                    engine = RuleEngine(self.acfg)
            if start is None:
                committed = self._retry(
                    "Kafka committed offset",
                    lambda tp=tp: self.consumer.committed(
                        tp, timeout_ms=self.cfg.kafka.request_timeout_ms
                    ),
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
                _fmt([tp]),
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

    # -- helpers ------------------------------------------------------------------------------------

    def _retry(
        self,
        op: str,
        fn: Callable[[], T],
        errors: tuple[type[BaseException], ...] = (redis.RedisError,),
    ) -> T:
        delay = self.scfg.retry_initial_s
        while True:
            try:
                result = fn()
            except errors as e:
                self._failed(op, e)
                if self._stop.wait(delay):
                    raise _Stopped from None
                delay = min(delay * 2, self.scfg.retry_max_s)
                continue
            self._recovered(op)
            return result

    def _failed(self, op: str, error: BaseException | None, retried: bool = True) -> None:
        if retried:
            m.RETRIES.labels(op).inc()
        if op not in self._failing:  # once per outage, not once per attempt
            self._failing[op] = time.monotonic()
            log.warning(
                "%s failed (%s: %s); %s",
                op,
                type(error).__name__,
                self._scrub(error),
                "retrying with backoff" if retried else "will try again with the next batch",
            )

    def _recovered(self, op: str) -> None:
        since = self._failing.pop(op, None)
        if since is not None:
            log.info("%s recovered after %.1f s", op, time.monotonic() - since)

    def _scrub(self, error: object) -> str:
        text = str(error)
        return text.replace(self._secret, "***") if self._secret else text

    def _crash_point(self, stage: str) -> None:
        if self._crash is not None and self._crash[0] == stage:
            self._crash_seen += 1
            if self._crash_seen == self._crash[1]:
                log.warning("%s=%s: killing this process", CRASH_ENV, os.environ.get(CRASH_ENV))
                logging.shutdown()
                os.kill(os.getpid(), signal.SIGKILL)

    def _update_lag(self) -> None:
        now = time.monotonic()
        if now - self._lag_at < 2.0 or self.consumer is None:
            return
        self._lag_at = now
        for tp in self._engines:
            hw, nxt = self.consumer.highwater(tp), self._next_offset.get(tp)
            if hw is not None and nxt is not None:
                m.CONSUMER_LAG.labels(tp.topic, str(tp.partition)).set(max(0, hw - nxt))

    def _log_stats(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._stats_at >= STATS_LOG_INTERVAL_S:
            self._stats_at = now
            s = self.stats
            log.info(
                "alert service %s: %d messages, %d alert events written (%d replayed), "
                "%d dead letters, %d partition(s)",
                self.name,
                s["messages"],
                s["alerts_written"],
                s["alerts_replayed"],
                s["dlq"],
                len(self._engines),
            )


def _tp_order(tp: TopicPartition) -> tuple[str, int]:
    return (tp.topic, tp.partition)


def _fmt(tps) -> str:
    return ", ".join(f"{tp.topic}[{tp.partition}]" for tp in sorted(tps, key=_tp_order))


def _url_password(url: str) -> str | None:
    try:
        return urlsplit(url).password or None
    except ValueError:
        return None


def alert_service_runner(cfg: AlertsSettings) -> Callable[[threading.Event], None]:
    """For ``vigil run``: a callable that runs the alert service until its ``stop`` is set.
    The alerts config is validated here, so a bad rule fails the command, not a thread."""
    acfg = parse_alerts_config(cfg.alerts)

    def run(stop: threading.Event) -> None:
        AlertService(cfg, acfg).run(stop)

    return run
