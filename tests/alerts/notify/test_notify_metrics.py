"""The notifier's Prometheus metrics (docs/notify.md, "Metrics"): every documented
``vigil_notify_*`` series is in the text ``vigil notify serve --metrics-port`` serves (this
process's registry) and moves as documented, through a real notifier on the local Kafka: a
receiver that holds a request (queued, pending), one that is down (failed attempts, dead letters,
sink down), an old event (delivery seconds from its Kafka timestamp), a repeat and a record that
is not an alert."""

from __future__ import annotations

import json
import time
import uuid

import pytest
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from pipeline.common.kafka import make_producer
from tests.support.notify import Receiver, alert, closed_port_url, make_cfg, running, webhook
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration

DOCUMENTED = {  # docs/notify.md, "Metrics": name -> its labels
    "vigil_notify_deliveries_total": {"sink", "outcome"},
    "vigil_notify_failed_attempts_total": {"sink"},
    "vigil_notify_queued": {"sink"},
    "vigil_notify_sink_up": {"sink"},
    "vigil_notify_delivery_seconds_count": {"sink"},
    "vigil_notify_records_total": {"outcome"},
    "vigil_notify_pending": set(),
}
OLD_S = 100.0  # how old the first event's Kafka timestamp is


def exposition() -> dict[tuple[str, frozenset], float]:
    """Every vigil_notify_* sample of the /metrics text: (name, labels) -> value."""
    out = {}
    for family in text_string_to_metric_families(generate_latest(REGISTRY).decode()):
        for s in family.samples:
            if s.name.startswith("vigil_notify_"):
                out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(name: str, **labels: str) -> float | None:
    return exposition().get((name, frozenset(labels.items())))


def test_every_documented_metric_is_exposed_and_moves(kafka_bootstrap):
    ok, down = f"ok{uuid.uuid4().hex[:8]}", f"down{uuid.uuid4().hex[:8]}"
    records = {
        o: value("vigil_notify_records_total", outcome=o) or 0.0
        for o in ("dispatched", "duplicate", "malformed")
    }
    a0, a1, a2 = alert(0), alert(1), alert(2)  # cam-a
    b0 = alert(0, camera="cam-b")
    with Receiver(hang_s=60.0) as rx:  # holds every request until released
        sinks = [
            webhook(rx.url, id=ok, cameras=["cam-a"], concurrency=1),
            webhook(
                closed_port_url(),
                id=down,
                cameras=["cam-b"],
                retry={"attempts": 2, "initial_s": 0.05, "max_s": 0.1, "budget_s": 5.0},
            ),
        ]
        cfg = make_cfg(kafka_bootstrap, sinks)
        producer = make_producer(cfg.kafka, "test-metrics")
        topic = cfg.kafka.topics.alerts
        old_ms = int((time.time() - OLD_S) * 1000)
        producer.send(topic, key="cam-a", value=b"not an alert")
        producer.send(topic, key="cam-a", value=json.dumps(a0).encode(), timestamp_ms=old_ms)
        for a in (a0, a1, a2, b0):  # a0 twice: a repeat of the at-least-once alert service
            producer.send(topic, key=a["camera_id"], value=json.dumps(a).encode())
        producer.flush(30)
        producer.close(10)
        with running(cfg):
            # the receiver holds a0: a1 and a2 wait in ok's queue, the three are pending
            assert wait_for(
                lambda: (
                    value("vigil_notify_queued", sink=ok) == 2
                    and value("vigil_notify_pending") == 3
                ),
                30,
            ), exposition()
            # the down sink: two failed attempts, a dead letter, marked down
            assert wait_for(
                lambda: (
                    value("vigil_notify_deliveries_total", sink=down, outcome="dead_letter") == 1
                ),
                30,
            ), exposition()
            assert value("vigil_notify_failed_attempts_total", sink=down) == 2
            assert value("vigil_notify_sink_up", sink=down) == 0
            assert value("vigil_notify_deliveries_total", sink=ok, outcome="delivered") == 0
            rx.release()
            assert wait_for(
                lambda: (
                    value("vigil_notify_deliveries_total", sink=ok, outcome="delivered") == 3
                    and value("vigil_notify_queued", sink=ok) == 0
                    and value("vigil_notify_pending") == 0
                ),
                30,
            ), exposition()
            got = exposition()
    for name, labels in DOCUMENTED.items():
        assert any(n == name and {k for k, _ in ls} == labels for n, ls in got), name
    assert value("vigil_notify_sink_up", sink=ok) == 1
    assert value("vigil_notify_failed_attempts_total", sink=ok) == 0
    assert value("vigil_notify_deliveries_total", sink=ok, outcome="dead_letter") == 0
    # from each event's Kafka timestamp to the acknowledgement: a0's is OLD_S s old
    assert value("vigil_notify_delivery_seconds_count", sink=ok) == 3
    assert value("vigil_notify_delivery_seconds_sum", sink=ok) >= OLD_S
    assert value("vigil_notify_delivery_seconds_bucket", sink=ok, le="60.0") == 2
    assert value("vigil_notify_delivery_seconds_bucket", sink=ok, le="+Inf") == 3
    moved = {o: value("vigil_notify_records_total", outcome=o) - records[o] for o in records}
    assert moved == {"dispatched": 4, "duplicate": 1, "malformed": 1}
