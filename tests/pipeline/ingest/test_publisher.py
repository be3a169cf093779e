"""The detection publisher alone: what it sends, acknowledgements and failures counted, one log
line per Kafka state change. The producer is an in-process fake that settles sends on demand."""

from __future__ import annotations

import logging
import time

import numpy as np

from pipeline.common.contracts import Frame
from pipeline.ingest import metrics
from pipeline.ingest.publisher import DetectionPublisher

LOGGER = "tests.publisher"


class Future:
    def __init__(self) -> None:
        self.ok = self.failed = None

    def add_callback(self, fn):
        self.ok = fn
        return self

    def add_errback(self, fn):
        self.failed = fn
        return self


class Producer:
    """Keeps each send's future: the test acknowledges or fails it. ``full``: send raises."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, dict, int]] = []
        self.futures: list[Future] = []
        self.full = False
        self.calls: list[str] = []

    def send(self, topic, key=None, value=None, timestamp_ms=None):
        if self.full:
            raise BufferError("buffer full")
        self.sent.append((topic, key, value, timestamp_ms))
        self.futures.append(Future())
        return self.futures[-1]

    def flush(self, timeout=None):
        self.calls.append(f"flush {timeout}")

    def close(self, timeout=None):
        self.calls.append(f"close {timeout}")


def frame(cid: str = "door", seq: int = 1, ts: float = 1_700_000_000.25) -> Frame:
    return Frame(cid, seq, 1, ts, np.zeros((2, 2, 3), np.uint8))


def publisher() -> tuple[DetectionPublisher, Producer]:
    p = DetectionPublisher("t.detections", "kafka:9092", logging.getLogger(LOGGER))
    p.producer = Producer()
    return p, p.producer


def lines(caplog, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and text in r.getMessage()]


def test_sends_keyed_by_camera_with_the_capture_time():
    p, prod = publisher()
    p.publish(frame("door", ts=1_700_000_000.25), {"m": 1})
    assert prod.sent == [("t.detections", "door", {"m": 1}, 1_700_000_000_250)]
    assert p.unacked == 1 and p.published == 0


def test_acknowledgements_and_failures_are_counted_and_logged_once(caplog):
    caplog.set_level(logging.INFO, LOGGER)
    p, prod = publisher()
    errors = metrics.PUBLISH_ERRORS._value.get()
    for seq in range(3):
        p.publish(frame(seq=seq), {})
    prod.futures[0].ok(None)
    prod.futures[1].failed(TimeoutError())
    prod.futures[2].failed(TimeoutError())
    assert (p.published, p.publish_errors, p.unacked) == (1, 2, 0)
    assert metrics.PUBLISH_ERRORS._value.get() == errors + 2
    assert p.kafka_state.is_down and len(lines(caplog, "lost:")) == 1
    assert "Kafka at kafka:9092 (detections)" in lines(caplog, "lost:")[0]
    p.publish(frame(seq=4), {})
    prod.futures[3].ok(None)
    assert not p.kafka_state.is_down
    assert len(lines(caplog, "back after")) == 1
    assert "2 failed operations" in lines(caplog, "back after")[0]


def test_a_send_refused_at_once_is_dropped_and_counted():
    p, prod = publisher()
    prod.full = True
    p.publish(frame(), {})
    assert (p.published, p.publish_errors, p.unacked) == (0, 1, 0)
    assert p.kafka_state.is_down


def test_silence_with_messages_waiting_is_an_outage_but_not_a_failure(caplog):
    caplog.set_level(logging.INFO, LOGGER)
    p, prod = publisher()
    now = time.monotonic()
    p.check(now + 60)
    assert not p.kafka_state.is_down  # nothing waits: silence is fine
    p.publish(frame(), {})
    p.check(time.monotonic() + 1)
    assert not p.kafka_state.is_down  # not silent long enough
    p.check(time.monotonic() + 6)
    assert p.kafka_state.is_down and p.kafka_state.failures == 0
    assert "1 detection messages waiting" in lines(caplog, "lost:")[0]
    prod.futures[0].ok(None)
    assert not p.kafka_state.is_down


def test_close_flushes_then_closes_and_does_without_a_producer():
    p, prod = publisher()
    p.close(3.0)
    assert prod.calls == ["flush 3.0", "close 3.0"]
    DetectionPublisher("t", "k", logging.getLogger(LOGGER)).close(1.0)  # never started
