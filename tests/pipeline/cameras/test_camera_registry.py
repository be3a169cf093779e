"""The camera registry watcher through a Kafka outage (pipeline/cameras/registry.py).

kafka-python's ``poll`` raises (KafkaConnectionError) when it cannot reach a broker to look the
group coordinator up: that is Kafka away, not a broken registry. The watcher must ride it out
(its worker's cameras keep streaming) and say so once, not stop the worker ("camera registry
watcher failed"), which the Kafka outage test saw in one run of three.
"""

from __future__ import annotations

import logging
import threading

from kafka.errors import KafkaConnectionError

from pipeline.cameras import registry as camera_registry
from pipeline.cameras.registry import RegistryWatcher
from pipeline.common.kafka import KafkaConfig
from tests.support.waiting import wait_for


class OutageConsumer:
    """A consumer whose first ``failures`` polls raise as kafka-python's do with no broker."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.polls = 0
        self.connected = False
        self.lock = threading.Lock()

    def partitions_for_topic(self, topic: str) -> set[int]:
        raise KafkaConnectionError("111 ECONNREFUSED")  # no broker: the watcher starts anyway

    def subscribe(self, topics, listener=None) -> None:
        self.topics = topics

    def poll(self, timeout_ms: int = 0, **_kw) -> dict:
        with self.lock:
            self.polls += 1
            if self.polls <= self.failures:
                raise KafkaConnectionError("111 ECONNREFUSED")
            self.connected = True
        threading.Event().wait(0.01)
        return {}

    def metrics(self) -> dict:
        return {"consumer-metrics": {"connection-count": 1.0 if self.connected else 0.0}}

    def close(self, autocommit: bool = False) -> None:
        pass


def test_watcher_rides_out_kafka_connection_errors(monkeypatch, caplog):
    consumer = OutageConsumer(failures=3)
    monkeypatch.setattr(camera_registry, "make_consumer", lambda *a, **kw: consumer)
    watcher = RegistryWatcher(KafkaConfig(bootstrap_servers="127.0.0.1:1"), "g", lambda owned: None)
    watcher.backoff = (0.01, 0.02)  # the retry pauses, short for the test
    with caplog.at_level(logging.INFO, logger="pipeline.cameras.registry"):
        watcher.start()
        try:
            polled = wait_for(
                lambda: watcher.error or consumer.polls > consumer.failures + 3, 10, 0.01
            )
            assert polled is True, (
                consumer.polls,
                watcher.error,
            )
            assert watcher.error is None, watcher.error
            assert watcher._thread.is_alive()
        finally:
            watcher.stop()
    lines = [r.getMessage() for r in caplog.records if r.name == camera_registry.log.name]
    assert sum("lost:" in m for m in lines) == 1, lines
    assert sum("back after" in m for m in lines) == 1, lines
