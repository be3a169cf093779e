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

Live rules (``alerts.service.live_rules``, docs/rules.md) change the rules between batches:
:mod:`alerts.live_rules`.

A batch's processing is here, as the :class:`~pipeline.common.consumer_loop.ConsumerHandler` of
a :class:`~pipeline.common.consumer_loop.ConsumerLoop` (connect, poll, rebalance events, close);
the partitions' state, checkpoints and rebalances in :mod:`alerts.checkpoint`, the Redis write
in :mod:`alerts.batch`, the Kafka publish in :mod:`alerts.publish`, dead letters in
:mod:`alerts.dlq`, retrying with backoff in :mod:`pipeline.common.retry`.
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
from typing import Any

import redis
from kafka import TopicPartition
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata

from alerts import metrics as m
from alerts.batch import BatchAlert, BatchStore, frame_detections
from alerts.checkpoint import PartitionCheckpoints
from alerts.config import AlertsConfig, AlertsSettings, parse_alerts_config
from alerts.dlq import dead_letter
from alerts.engine import RuleEngine
from alerts.envelope import check_envelope
from alerts.events import FrameEvent
from alerts.live_rules import LiveRules
from alerts.publish import publish
from alerts.rules import RuleConfig
from alerts.rules_topic import RulesWatcher
from alerts.store import AlertStore
from pipeline.common.consumer_loop import ConsumerHandler, ConsumerLoop, Records, tp_order
from pipeline.common.jsoncodec import decode_record
from pipeline.common.retry import Retrier, Stopped

log = logging.getLogger(__name__)

# Test hook: "stage:n" kills this process (SIGKILL) the n-th time a batch reaches ``stage``
# (stored, acked, published, checkpointed), to prove a crash in any window of a batch loses
# nothing and stores nothing twice.
CRASH_ENV = "VIGIL_ALERTS_TEST_CRASH"
STATS_LOG_INTERVAL_S = 60.0


class AlertService(PartitionCheckpoints, LiveRules, BatchStore, ConsumerHandler):
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
        self._stop = threading.Event()
        self._lock = threading.Lock()
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
        self._stats_at = time.monotonic()
        self.retrier = Retrier(
            self.scfg.retry_initial_s,
            self.scfg.retry_max_s,
            cfg.redis.password_text(),
            on_retry=lambda op: m.RETRIES.labels(op).inc(),
        )
        s = self.scfg
        self.loop = ConsumerLoop(
            self,
            cfg.kafka,
            self.topic,
            client=f"alerts-{self.name}",
            group_id=s.group_id,
            session_timeout_ms=s.session_timeout_ms,
            max_records=s.max_batch,
            logger=log,
            name="alert service",
            backoff=(s.retry_initial_s, s.retry_max_s),
            consumer_kw=dict(
                group_instance_id=s.instance_id,
                auto_offset_reset=s.auto_offset_reset,
                max_poll_interval_ms=s.max_poll_interval_ms,
            ),
            producer_close_s=10,
            connect_retrier=self.retrier,
            scrub=self.retrier.scrub,
            unexpected_error="unexpected error; resuming from the last checkpoints",
        )
        self.kafka_state = self.loop.kafka_state
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
        self.loop.run(stop, max_seconds)

    def close(self) -> None:
        self.loop.close()

    def step(self) -> int:
        """Poll and fully handle one batch; returns the number of messages processed."""
        return self.loop.step()

    @property
    def consumer(self) -> Any:
        return self.loop.consumer

    @property
    def producer(self) -> Any:
        return self.loop.producer

    # -- the loop's callbacks -----------------------------------------------------------------------

    def on_started(self) -> None:
        self._start_live_rules()
        log.info(
            "alert service %s: group %s on %s, %d rule(s) %s",
            self.name,
            self.group,
            self.topic,
            len(self.acfg.rules),
            f"live from {self.cfg.kafka.topics.rules}" if self.scfg.live_rules else "(YAML)",
        )

    def before_poll(self) -> None:
        self._apply_rule_change()

    def poll_timeout_ms(self) -> int:
        return self.scfg.poll_timeout_ms

    def recover(self, error: Exception) -> None:
        """A Kafka error before a batch's processing leaves nothing to undo; any other error,
        or one in the middle of a batch, resumes from the last checkpoints."""
        if not isinstance(error, KafkaError) or not self._consistent:
            self._resync()

    def commit(self) -> None:
        """An empty poll (or a batch that left some behind): checkpoint what is due."""
        if self._dirty and self._checkpoint_due():
            self._checkpoint(sorted(self._dirty, key=tp_order))

    def after_step(self) -> None:
        self._update_lag()
        self._log_stats()

    def on_close(self) -> None:
        if self._watcher is not None:
            self._watcher.stop()
            self._watcher = None
        self._log_stats(force=True)
        if self._consistent and self._dirty and self.consumer is not None:
            # only with checkpoint_interval_s > 0: save what the interval held back
            with contextlib.suppress(redis.RedisError, Stopped):
                self._checkpoint(sorted(self._dirty, key=tp_order), retry=False)
        self._commit_sync()

    def after_close(self) -> None:
        for tp in list(self._engines):
            self._forget(tp)
        m.PARTITIONS.set(0)
        with contextlib.suppress(Exception):
            self.store.client.close()

    # -- one batch ----------------------------------------------------------------------------------

    def handle_batch(self, batch: Records, fresh: set[TopicPartition]) -> int:
        """Run one batch through the rule engines and store, publish and checkpoint it; returns
        the number of messages processed. (Records of partitions restored by this poll are
        not in ``batch``: fetched before the seek to their checkpoint, fetched again after.)"""
        self._consistent = False
        # alerts of rules changed since the restored checkpoints: stored with this batch
        alerts: list[BatchAlert] = self._restored_ends(fresh)
        dead: list[tuple[str, bytes | None, dict[str, Any]]] = []
        offsets: dict[TopicPartition, int] = {}
        n = 0
        for tp, recs in batch.items():
            engine = self._engines.get(tp)
            if engine is None:
                continue  # revoked
            for rec in recs:
                self._process_record(engine, rec, alerts, dead)
            n += len(recs)
            offsets[tp] = recs[-1].offset + 1
        if offsets or alerts:
            self._handle_batch(alerts, dead, offsets)
            if offsets:
                self.stats["batches"] += 1
                m.BATCH_SIZE.observe(n)
        self._consistent = True
        return n

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
                alerts.append(
                    BatchAlert.of(ev, capture_ts, dets if ev.status == "started" else None)
                )

    def _dead_letter(self, rec, error: str, dead: list) -> None:
        value = dead_letter(
            rec, error, group=self.group, max_value_bytes=self.scfg.dlq_max_value_bytes
        )
        dead.append((self.cfg.kafka.topics.detections_dlq, rec.key, value))
        self.stats["dlq"] += 1

    def _handle_batch(
        self,
        alerts: list[BatchAlert],
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


def alert_service_runner(cfg: AlertsSettings) -> Callable[[threading.Event], None]:
    """For ``vigil run``: a callable that runs the alert service until its ``stop`` is set.
    The alerts config is validated here, so a bad rule fails the command, not a thread."""
    acfg = parse_alerts_config(cfg.alerts)

    def run(stop: threading.Event) -> None:
        AlertService(cfg, acfg).run(stop)

    return run
