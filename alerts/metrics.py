"""Prometheus metrics of the alert service (served by ``pipeline.ingest.metrics.serve``).

Labels carry rule ids, topics and partitions: bounded sets chosen by the operator, never ids of
alerts or anything taken from a message.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

MESSAGES = Counter(
    "vigil_alerts_messages_total",
    "Detection messages consumed by the alert service, by outcome (ok, dlq)",
    ["outcome"],
)
ALERTS_WRITTEN = Counter(
    "vigil_alerts_written_total",
    "Alert events newly written to Redis (replays that were already there are not counted)",
    ["rule", "status"],
)
ALERTS_REPLAYED = Counter(
    "vigil_alerts_replayed_total",
    "Alert events found already written in Redis (a replay after a crash or a rebalance)",
)
ALERTS_PUBLISHED = Counter("vigil_alerts_published_total", "Alert events acknowledged by Kafka")
DLQ = Counter("vigil_alerts_dlq_total", "Detection messages sent to the dead-letter topic")
RETRIES = Counter(
    "vigil_alerts_retries_total",
    "Failed attempts that were retried with backoff, by operation",
    ["operation"],
)
CONSUMER_LAG = Gauge(
    "vigil_alerts_consumer_lag",
    "Detection messages not yet processed (high watermark - next offset)",
    ["topic", "partition"],
)
PARTITIONS = Gauge("vigil_alerts_partitions", "Detection partitions owned by this instance")
RULE_SECONDS = Histogram(
    "vigil_alerts_rule_seconds",
    "Rule engine time per detection message",
    buckets=(0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05),
)
REDIS_WRITE_SECONDS = Histogram(
    "vigil_alerts_redis_write_seconds",
    "Redis time per batch of alert writes (snapshots included)",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
)
PUBLISH_SECONDS = Histogram(
    "vigil_alerts_publish_seconds",
    "Kafka acknowledgement time per batch of alerts",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0),
)
CAPTURE_TO_REDIS_SECONDS = Histogram(
    "vigil_alerts_capture_to_redis_seconds",
    "Capture of the triggering frame to the alert stored in Redis",
    buckets=(0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 12.8),
)
BATCH_SIZE = Histogram(
    "vigil_alerts_batch_size",
    "Detection messages per processed batch",
    buckets=(1, 5, 10, 50, 100, 250, 500, 1000, 2000, 5000, 10000),
)
EPOCH_SWITCHES = Counter(
    "vigil_alerts_epoch_switches_total",
    "A newer camera reader (epoch) took a camera over: a worker restart or a camera move",
)
STALE_EPOCH = Counter(
    "vigil_alerts_stale_epoch_total",
    "Detection messages refused because a reader that started later owns their camera",
)
