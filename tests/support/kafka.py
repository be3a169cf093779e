"""Writing to and reading back the test's own Kafka topics."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from kafka import TopicPartition

from pipeline.common.kafka import make_consumer, make_producer
from pipeline.config import VigilConfig
from tests.support.waiting import wait_for


def produce(
    cfg: VigilConfig, msgs: list[tuple[str, object]], timestamps: list[float] | None = None
) -> None:
    """``(key, value)`` pairs onto the detections topic, flushed; each record stamped with its
    time in ``timestamps`` (seconds, as ingest stamps its capture time) when given."""
    producer = make_producer(cfg.kafka, "test-detections", linger_ms=20)
    try:
        for i, (key, value) in enumerate(msgs):
            at = None if timestamps is None else int(timestamps[i] * 1000)
            producer.send(cfg.kafka.topics.detections, key=key, value=value, timestamp_ms=at)
        producer.flush(timeout=60)
    finally:
        producer.close(timeout=10)


def read_topic(cfg: VigilConfig, topic: str, min_count: int, timeout: float = 30) -> list:
    """The raw records of ``topic`` from the beginning, once at least ``min_count`` are read (and
    whatever else is there) or ``timeout`` has passed."""
    c = make_consumer(
        cfg.kafka,
        "test-read",
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    try:
        parts = wait_for(lambda: c.partitions_for_topic(topic), 15)
        tps = [TopicPartition(topic, p) for p in parts]
        c.assign(tps)
        c.seek_to_beginning(*tps)
        out: list = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for recs in c.poll(timeout_ms=500).values():
                out.extend(recs)
            if len(out) >= min_count:
                # drain what else is there (duplicates after a crash)
                for recs in c.poll(timeout_ms=500).values():
                    out.extend(recs)
                break
        return out
    finally:
        c.close()


class TopicReader:
    """Reads a topic from the beginning, across calls, decoding JSON values."""

    def __init__(self, cfg: VigilConfig, topic: str) -> None:
        self.consumer = make_consumer(
            cfg.kafka,
            "test-reader",
            group_id=None,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        deadline = time.monotonic() + 15
        parts = None
        while not parts and time.monotonic() < deadline:
            parts = self.consumer.partitions_for_topic(topic)
            if not parts:
                time.sleep(0.2)
        assert parts, f"topic {topic} does not exist"
        tps = [TopicPartition(topic, p) for p in parts]
        self.consumer.assign(tps)
        self.consumer.seek_to_beginning(*tps)
        self.records = []

    def poll(self, timeout_s: float = 1.0) -> list[dict]:
        new = []
        for recs in self.consumer.poll(timeout_ms=int(timeout_s * 1000)).values():
            for r in recs:
                value = json.loads(r.value) if r.value is not None else None
                new.append(
                    {
                        "key": r.key.decode() if r.key else None,
                        "value": value,
                        "raw": r.value,
                        "partition": r.partition,
                        "offset": r.offset,
                    }
                )
        self.records.extend(new)
        return new

    def until(self, pred: Callable[[list[dict]], bool], timeout_s: float) -> list[dict]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.poll(0.5)
            if pred(self.records):
                return self.records
        return self.records

    def close(self) -> None:
        self.consumer.close()
