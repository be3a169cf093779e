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

Live rules (``alerts.service.live_rules``, docs/rules.md): at start the rules topic is seeded with
the YAML's rules it lacks and its rules replace the YAML's; a :class:`RulesWatcher` thread then
reports every change, which is recorded like a rebalance and applied between batches
(:meth:`AlertService._apply_rule_change`): unchanged rules keep their state, the open alerts of a
changed or deleted rule end (``reason: rule_changed``) and are stored and published at once like
a batch without offsets, and every partition is checkpointed. Checkpoints key rule states by
fingerprint, so a restore after a crash in the middle of a change ends the same alerts again
(``RuleEngine.pop_changed_ends``), which Redis already has.

The consumer loop and a batch's processing are here; the partitions' state, checkpoints and
rebalances in :mod:`alerts.checkpoint`, the Kafka publish in :mod:`alerts.publish`, dead letters
in :mod:`alerts.dlq`, retrying with backoff in :mod:`pipeline.common.retry`.
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
from typing import Any

import redis
from kafka import TopicPartition
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata

from alerts import metrics as m
from alerts.checkpoint import PartitionCheckpoints, RebalanceListener, tp_order
from alerts.config import AlertsConfig, AlertsSettings, parse_alerts_config
from alerts.dlq import dead_letter
from alerts.engine import RuleEngine
from alerts.envelope import check_envelope
from alerts.events import AlertEvent, FrameEvent
from alerts.publish import publish
from alerts.rules import RuleConfig
from alerts.rules_registry import RulesWatcher, read_rules, seed_rules
from alerts.snapshots import render_snapshot
from alerts.store import AlertStore, AlertWrite
from pipeline.common.jsoncodec import decode_record, dumps, dumps_text
from pipeline.common.kafka import (
    KafkaUnavailable,
    connection_count,
    ensure_topics,
    group_consumer,
    make_producer,
)
from pipeline.common.lifecycle import OutageLog
from pipeline.common.retry import Retrier, Stopped

log = logging.getLogger(__name__)

# Test hook: "stage:n" kills this process (SIGKILL) the n-th time a batch reaches ``stage``
# (stored, acked, published, checkpointed), to prove a crash in any window of a batch loses
# nothing and stores nothing twice.
CRASH_ENV = "VIGIL_ALERTS_TEST_CRASH"
STATS_LOG_INTERVAL_S = 60.0


@dataclass(slots=True)
class _Alert:
    event: AlertEvent
    message: dict[str, Any]
    capture_ts: float
    payload: bytes  # the message as JSON, encoded once: stored in Redis and published as is
    # started events: every detection of the triggering frame as JSON, for the console's review
    frame_detections: str | None = None

    @classmethod
    def of(cls, event: AlertEvent, capture_ts: float, frame_detections: str | None = None):
        d = event.to_dict()
        return cls(event, d, capture_ts, dumps(d), frame_detections)


def frame_detections(frame: FrameEvent) -> str:
    """All the frame's detections as JSON (``{label, confidence, box, track_id}``, the shape of
    the console's live view), with the track ids the engine gave them, rounded like alerts."""
    return dumps_text(
        [
            {
                "label": d.label,
                "confidence": round(d.confidence, 4),
                "box": [round(v, 5) for v in d.box],
                "track_id": d.track_id,
            }
            for d in frame.detections
        ]
    )


class AlertService(PartitionCheckpoints):
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
        # live rules: the watcher thread records the latest rule set here (under _lock); the main
        # loop applies it between batches
        self._watcher: RulesWatcher | None = None
        self._rules_pending: dict[str, RuleConfig] | None = None
        self._last_checkpoint = time.monotonic()
        self._lag_at = 0.0
        self._kafka_checked_at = 0.0
        self.kafka_state = OutageLog(log, f"Kafka at {cfg.kafka.bootstrap_servers} (alert service)")
        self._stats_at = time.monotonic()
        self.retrier = Retrier(
            self.scfg.retry_initial_s,
            self.scfg.retry_max_s,
            cfg.redis.password_text(),
            on_retry=lambda op: m.RETRIES.labels(op).inc(),
        )
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
            self._start_live_rules()
            log.info(
                "alert service %s: group %s on %s, %d rule(s) %s",
                self.name,
                self.group,
                self.topic,
                len(self.acfg.rules),
                f"live from {self.cfg.kafka.topics.rules}" if self.scfg.live_rules else "(YAML)",
            )
            backoff = self.scfg.retry_initial_s
            while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
                try:
                    self.step()
                    backoff = self.scfg.retry_initial_s
                except Stopped:
                    break
                except KafkaError as e:  # from poll or a seek: before a batch's processing
                    self.kafka_state.down(f"{type(e).__name__}: {self.retrier.scrub(e)}")
                    if not self._consistent:
                        self._resync()
                    stop.wait(backoff)
                    backoff = min(backoff * 2, self.scfg.retry_max_s)
                except Exception:
                    log.exception("unexpected error; resuming from the last checkpoints")
                    self._resync()
                    stop.wait(backoff)
                    backoff = min(backoff * 2, self.scfg.retry_max_s)
        except Stopped:
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
                consumer = group_consumer(
                    self.cfg.kafka,
                    f"alerts-{self.name}",
                    group_id=s.group_id,
                    group_instance_id=s.instance_id,
                    auto_offset_reset=s.auto_offset_reset,
                    max_poll_records=s.max_batch,
                    session_timeout_ms=s.session_timeout_ms,
                    max_poll_interval_ms=s.max_poll_interval_ms,
                )
                consumer.subscribe([self.topic], listener=RebalanceListener(self))
                self.consumer = consumer

        self.retrier.retry("connect to Kafka", connect, self._stop, (KafkaUnavailable, KafkaError))

    def close(self) -> None:
        if self._watcher is not None:
            self._watcher.stop()
            self._watcher = None
        self._log_stats(force=True)
        if self._consistent and self._dirty and self.consumer is not None:
            # only with checkpoint_interval_s > 0: save what the interval held back
            with contextlib.suppress(redis.RedisError, Stopped):
                self._checkpoint(sorted(self._dirty, key=tp_order), retry=False)
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
        self._apply_rule_change()
        records = self.consumer.poll(
            timeout_ms=self.scfg.poll_timeout_ms, max_records=self.scfg.max_batch
        )
        fresh = self._handle_rebalance(records)
        self._consistent = False
        # alerts of rules changed since the restored checkpoints: stored with this batch
        alerts: list[_Alert] = self._restored_ends(fresh)
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
        if offsets or alerts:
            self._handle_batch(alerts, dead, offsets)
            if offsets:
                self.stats["batches"] += 1
                m.BATCH_SIZE.observe(n)
        elif self._dirty and self._checkpoint_due():
            self._checkpoint(sorted(self._dirty, key=tp_order))
        self._consistent = True
        self._update_lag()
        self._check_kafka()
        self._log_stats()
        return n

    def _check_kafka(self) -> None:
        """One line when the consumer loses every broker connection, one when it has them back
        (kafka-python's own per-attempt lines are silenced by the CLI)."""
        now = time.monotonic()
        if now - self._kafka_checked_at < 1.0 or self.consumer is None:
            return
        self._kafka_checked_at = now
        count = connection_count(self.consumer)
        if count == 0:
            self.kafka_state.down("no broker connection", failed_operation=False)
        elif count:
            self.kafka_state.up()

    def _process_record(self, engine: RuleEngine, rec, alerts: list, dead: list) -> None:
        t0 = time.perf_counter()
        try:
            msg = decode_record(rec.value)  # bounded size and depth; no value: ValueError too
            check_envelope(
                rec,
                msg,
                self.scfg.max_future_s,
                self.scfg.max_age_s,
                self.scfg.max_clock_skew_s,
            )
            frame = FrameEvent.from_message(msg)
            events = engine.process_frame(frame)
        except ValueError as e:  # bad JSON, bad UTF-8, too deep or large, key/time/epoch checks,
            self._dead_letter(rec, str(e), dead)  # FrameEvent.from_message
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
            capture_ts = frame.capture_ts
            dets: str | None = None
            for ev in events:
                if ev.status == "started" and dets is None:
                    dets = frame_detections(frame)  # a started alert is always of this frame
                alerts.append(_Alert.of(ev, capture_ts, dets if ev.status == "started" else None))

    def _dead_letter(self, rec, error: str, dead: list) -> None:
        value = dead_letter(
            rec, error, group=self.group, max_value_bytes=self.scfg.dlq_max_value_bytes
        )
        dead.append((self.cfg.kafka.topics.detections_dlq, rec.key, value))
        self.stats["dlq"] += 1

    def _handle_batch(
        self,
        alerts: list[_Alert],
        dead: list[tuple[str, bytes | None, dict[str, Any]]],
        offsets: dict[TopicPartition, int],
    ) -> None:
        # 1. Redis (idempotent), 2. Kafka, 3. checkpoint, 4. commit: nothing is acknowledged
        # to Kafka before it is stored.
        todo = (
            self.retrier.retry("Redis alert write", lambda: self._store(alerts), self._stop)
            if alerts
            else []
        )
        self._crash_point("stored")
        topic = self.cfg.kafka.topics.alerts
        sends = [(topic, a.message["camera_id"], a.payload) for a in todo] + dead
        if sends:
            t0 = time.perf_counter()
            publish(self.producer, sends, self._stop, self.retrier)
            m.PUBLISH_SECONDS.observe(time.perf_counter() - t0)
            self.stats["published"] += len(todo)
            m.ALERTS_PUBLISHED.inc(len(todo))
        self._crash_point("acked")
        if todo:
            done = [(a.event.id, a.event.status) for a in todo]
            self.retrier.retry(
                "Redis publish mark", lambda: self.store.mark_published(done), self._stop
            )
        self._crash_point("published")
        self._next_offset.update(offsets)
        self._dirty.update(offsets)
        if self._checkpoint_due():
            self._checkpoint(sorted(self._dirty, key=tp_order))

    def _await_late_frames(
        self, started: list[_Alert], sources: list[tuple[bytes | None, bool]]
    ) -> None:
        """Fill in frames that were not in Redis yet: the worker's frame store writes in the
        background, so the newest detection may beat its frame by a few ms. One short wait per
        batch, only for alerts of frames captured in the last few seconds (a replay of old
        messages finds its frames expired, waiting would not help)."""
        wait = self.scfg.snapshot_wait_s
        if wait <= 0:
            return
        now = time.time()
        late = [
            i
            for i, (frame, already) in enumerate(sources)
            if frame is None and not already and now - started[i].capture_ts < wait + 5.0
        ]
        if not late:
            return
        self._stop.wait(wait)
        again = self.store.snapshot_sources(
            [
                (a.event.id, a.event.camera_id, a.event.epoch, a.event.frame_seq)
                for a in (started[i] for i in late)
            ]
        )
        for i, found in zip(late, again, strict=True):
            sources[i] = found

    def _store(self, alerts: list[_Alert]) -> list[_Alert]:
        """Write to Redis; returns the alerts Kafka has not acknowledged yet."""
        t0 = time.perf_counter()
        started = [a for a in alerts if a.event.status == "started"]
        sources = self.store.snapshot_sources(
            [(a.event.id, a.event.camera_id, a.event.epoch, a.event.frame_seq) for a in started]
        )
        self._await_late_frames(started, sources)
        snaps: dict[int, bytes | None] = {}
        for a, (frame, already) in zip(started, sources, strict=True):
            if frame is not None and not already:
                try:
                    snaps[id(a)] = render_snapshot(frame, a.message, self.scfg.snapshot_quality)
                except Exception as e:  # a bad JPEG must not block the alert
                    log.warning("snapshot of alert %s failed: %s", a.event.id, e)
        # the frame as the camera saw it, for the console's review (kept like the snapshot)
        source = {
            id(a): frame
            for a, (frame, already) in zip(started, sources, strict=True)
            if frame is not None and not already
        }
        results = self.store.write_alerts(
            [
                AlertWrite(
                    a.message,
                    a.capture_ts,
                    snaps.get(id(a)),
                    a.payload,
                    source=source.get(id(a)),
                    frame_detections=a.frame_detections,
                )
                for a in alerts
            ]
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

    # -- live rules ---------------------------------------------------------------------------------

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
        ends: list[_Alert] = []
        for tp in sorted(self._engines, key=tp_order):
            for ev in self._engines[tp].replace_rules(acfg):
                ends.append(_Alert.of(ev, ev.updated_at))
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

    def _restored_ends(self, fresh: set[TopicPartition]) -> list[_Alert]:
        """The ended events of alerts whose rule changed since the checkpoints just restored."""
        out: list[_Alert] = []
        for tp in sorted(fresh, key=tp_order):
            engine = self._engines.get(tp)
            ends = engine.pop_changed_ends() if engine is not None else []
            if ends:
                out += [_Alert.of(ev, ev.updated_at) for ev in ends]
                if self._next_offset.get(tp) is not None:
                    self._dirty.add(tp)
                log.info(
                    "%s[%d]: %d open alert(s) of changed rules ended",
                    tp.topic,
                    tp.partition,
                    len(ends),
                )
        return out

    # -- helpers ------------------------------------------------------------------------------------

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


def _ids(ids) -> str:
    return ", ".join(sorted(ids)) or "-"


def alert_service_runner(cfg: AlertsSettings) -> Callable[[threading.Event], None]:
    """For ``vigil run``: a callable that runs the alert service until its ``stop`` is set.
    The alerts config is validated here, so a bad rule fails the command, not a thread."""
    acfg = parse_alerts_config(cfg.alerts)

    def run(stop: threading.Event) -> None:
        AlertService(cfg, acfg).run(stop)

    return run
