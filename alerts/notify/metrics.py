"""Prometheus metrics of the notifier. Labels are sink ids (chosen by the operator) and fixed
outcome words: never URLs, secrets, alert ids or anything taken from a message."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

RECORDS = Counter(
    "vigil_notify_records_total",
    "Alert events read from Kafka, by outcome (dispatched, duplicate, malformed)",
    ["outcome"],
)
DELIVERIES = Counter(
    "vigil_notify_deliveries_total",
    "Deliveries settled per sink, by outcome (delivered, dead_letter)",
    ["sink", "outcome"],
)
FAILED_ATTEMPTS = Counter(
    "vigil_notify_failed_attempts_total", "Delivery attempts that failed, per sink", ["sink"]
)
QUEUED = Gauge("vigil_notify_queued", "Deliveries waiting in the sink's queue", ["sink"])
SINK_UP = Gauge("vigil_notify_sink_up", "1 while the sink answers, 0 while it fails", ["sink"])
PENDING = Gauge("vigil_notify_pending", "Alert events read and not settled by every sink yet")
LATENCY = Histogram(
    "vigil_notify_delivery_seconds",
    "From the alert event's Kafka timestamp to the sink's acknowledgement",
    ["sink"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 15.0, 60.0),
)
