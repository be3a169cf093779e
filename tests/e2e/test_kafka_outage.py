"""Kafka going away mid-run and coming back (real broker, real camera, real services).

A broker of this test's own (tests/support/private_services.py: the session's broker serves other
tests meanwhile) is stopped while an ingest worker streams a camera-sim camera and an alert
service turns its detections into alerts, then started again. Redis is the session's, under this
test's key prefix. What a user notices:

- the worker carries on: every detection message it sent is either acknowledged or counted as a
  publish error (none vanishes), and frames captured after the outage reach the topic;
- the alert service resumes from its checkpoints: the (alert id, status) set in Redis is exactly
  what a fault-free replay of the detections on the topic gives, none stored twice;
- the log says it once: one "lost" and one "back" line per component, and none of kafka-python's
  per-attempt connection lines (issue 12, defect 5).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter

import pytest
from kafka import KafkaConsumer, TopicPartition

from alerts.engine import RuleEngine
from alerts.service import AlertService
from alerts.store import AlertStore
from pipeline.app import build_worker
from pipeline.cameras.registry import put_cameras
from pipeline.cameras.spec import CameraSpec
from pipeline.common.kafka import ensure_topics, quiet_library_logs
from pipeline.config import parse_config
from tests.support.config import make_config_dict
from tests.support.private_services import PrivateService
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration

WHOLE_FRAME = [[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]]
RULES = [
    {
        "id": "anyone",
        "type": "zone_intrusion",
        "zone": WHOLE_FRAME,
        "classes": ["person"],
        "min_frames": 2,
        "clear_after_s": 1.0,
        "cooldown_s": 0,
    },
    {
        "id": "two-people",
        "type": "crowding",
        "zone": WHOLE_FRAME,
        "classes": ["person"],
        "min_count": 2,
        "clear_after_s": 1.0,
        "cooldown_s": 0,
    },
]


@pytest.fixture
def private_kafka(tmp_path):
    """A broker of this test's own: stopping it hurts no other test. Requested before
    topic_reader, so the reader closes before the broker goes."""
    with PrivateService("kafka", tmp_path) as kafka:
        yield kafka


def test_kafka_restart_mid_run(private_kafka, detector, camera_sim, topic_reader, caplog):
    d = make_config_dict(private_kafka.address)
    tag = d["redis"]["key_prefix"].rstrip(":")
    d["alerts"] = {
        "rules": RULES,
        "service": {
            "group_id": f"{tag}-alerts",
            "poll_timeout_ms": 200,
            "retry_initial_s": 0.2,
            "retry_max_s": 2.0,
        },
    }
    d["ingest"]["default_fps"] = 3
    cfg = parse_config(d, "test")
    assert cfg.kafka.bootstrap_servers == private_kafka.address
    ensure_topics(cfg.kafka)  # on the private broker (no auto-creation there either)
    quiet_library_logs()  # what the CLI does
    store = AlertStore(cfg.redis)

    sim = camera_sim("classroom.mp4")
    put_cameras(cfg.kafka, [CameraSpec(id="room", url=sim.urls["classroom"], fps=3)])
    worker = build_worker(cfg, detector=detector, worker_id=f"{tag}-w").start()
    service = AlertService(cfg)
    stop, worker_stop = threading.Event(), threading.Event()
    threads = [
        threading.Thread(target=worker.run, args=(worker_stop,), daemon=True),
        threading.Thread(target=service.run, args=(stop,), daemon=True),
    ]
    for t in threads:
        t.start()
    reader = topic_reader(cfg, cfg.kafka.topics.detections)
    restarted_at = None
    worker_closed = False
    try:
        with caplog.at_level(logging.INFO):
            assert wait_for(lambda: store.stream_len() >= 1, 120), "no alert before the outage"
            published_before = worker.published
            private_kafka.stop()
            time.sleep(6)  # past the worker's 5 s without acknowledgement
            assert threads[0].is_alive() and threads[1].is_alive()
            private_kafka.start()
            restarted_at = time.time()
            after_restart = reader.until(
                lambda rs: any(r["value"]["capture_ts"] > restarted_at + 2 for r in rs), 90
            )
            # frames captured after the broker came back reach the topic
            assert any(r["value"]["capture_ts"] > restarted_at + 2 for r in after_restart), (
                f"no frame captured after the restart on the topic: {len(after_restart)} "
                f"records, newest capture "
                f"{max((r['value']['capture_ts'] for r in after_restart), default=None)} "
                f"< restart {restarted_at} + 2 s"
            )
            assert worker.published > published_before, "nothing published after the restart"
            time.sleep(2)
            worker_stop.set()  # the camera stops; the alert service finishes what is on the topic
            threads[0].join(timeout=30)
            worker.close()
            worker_closed = True
            assert wait_for(lambda: _caught_up(cfg, store), 60), "the alert service lags"
    finally:
        worker_stop.set()
        stop.set()
        for t in threads:
            t.join(timeout=30)
        if not worker_closed:
            worker.close()
        service.close()
    lines = [(r.name, r.levelno, r.getMessage()) for r in caplog.records]

    # the worker: every message it produced acknowledged or counted, none vanished. The
    # publisher counts outcomes (published = acknowledged, publish_errors = failed or dropped with
    # a full buffer, unacked = neither yet); the attempts are WorkerStats.processed, counted once
    # per message handed to DetectionPublisher.publish (worker._finish: frame_out, then publish).
    produced = sum(worker.stats.processed.values())
    print(
        f"worker: {produced} messages produced, {worker.published} published, "
        f"{worker.publish_errors} publish errors; "
        f"{sum(r['value']['capture_ts'] > restarted_at for r in reader.records)} after the restart"
    )
    assert worker._unacked == 0
    assert produced > 0 and produced == worker.published + worker.publish_errors, (
        produced,
        worker.published,
        worker.publish_errors,
    )
    # ... and what was acknowledged is on the topic, once
    records = reader.until(lambda rs: len(rs) >= worker.published, 30)
    assert len(records) == worker.published, (len(records), worker.published)

    # the alert service: exactly what a fault-free replay of the same detections gives
    engine = RuleEngine(cfg.alerts)
    by_partition = sorted(records, key=lambda r: (r["partition"], r["offset"]))
    replay = [(a.id, a.status) for r in by_partition for a in engine.process(r["value"])]
    events = [
        (f[b"id"].decode(), f[b"status"].decode())
        for _, f in store.client.xrange(store.stream_key())
    ]
    assert not [e for e, n in Counter(events).items() if n > 1], "an alert event stored twice"
    assert set(events) == set(replay) and replay, set(replay) ^ set(events)

    # one line per state change, none of the library's per-attempt lines
    def count(logger: str, text: str) -> int:
        return sum(1 for name, _, msg in lines if name == logger and text in msg)

    for logger in ("pipeline.ingest.worker", "alerts.service"):
        assert count(logger, "lost:") == 1, [m for n, _, m in lines if n == logger]
        assert count(logger, "back after") == 1, [m for n, _, m in lines if n == logger]
    noisy = [m for name, level, m in lines if name.startswith("kafka") and level >= logging.WARNING]
    assert noisy == [], noisy[:5]
    store.client.close()


def _caught_up(cfg, store: AlertStore) -> bool:
    """Every detection partition checkpointed up to its end (where the service resumes)."""
    consumer = KafkaConsumer(**cfg.kafka.client_kwargs())
    try:
        topic = cfg.kafka.topics.detections
        tps = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        group = cfg.alerts.service.group_id
        for tp, end in consumer.end_offsets(tps).items():
            cp = store.get_checkpoint(group, topic, tp.partition)
            if end and (cp is None or cp["offset"] < end):
                return False
        return bool(tps)
    finally:
        consumer.close()
