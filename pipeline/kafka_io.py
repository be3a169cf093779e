"""Kafka clients with the settings Vigil relies on, and idempotent topic creation."""

from __future__ import annotations

import json
import logging
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from pipeline.config import KafkaConfig

log = logging.getLogger(__name__)


class KafkaUnavailable(RuntimeError):
    """The broker cannot be reached; the message says which address and how to start it."""


def _unavailable(cfg: KafkaConfig, err: Exception) -> KafkaUnavailable:
    return KafkaUnavailable(
        f"cannot reach Kafka at {cfg.bootstrap_servers} ({type(err).__name__}: {err}); "
        "is it running? `make infra-up` starts a local broker"
    )


def dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def topic_specs(cfg: KafkaConfig) -> list[NewTopic]:
    rf = cfg.replication_factor
    t = cfg.topics
    return [
        # Compacted: the latest definition per camera id is the registry; a tombstone removes it.
        NewTopic(
            t.cameras,
            cfg.cameras_partitions,
            rf,
            topic_configs={
                "cleanup.policy": "compact",
                "min.cleanable.dirty.ratio": "0.1",
                "segment.ms": "600000",
            },
        ),
        NewTopic(
            t.detections,
            cfg.detections_partitions,
            rf,
            topic_configs={"retention.ms": str(24 * 3600 * 1000)},
        ),
        NewTopic(
            t.alerts,
            cfg.detections_partitions,
            rf,
            topic_configs={"retention.ms": str(30 * 24 * 3600 * 1000)},
        ),
        NewTopic(
            t.detections_dlq, 1, rf, topic_configs={"retention.ms": str(7 * 24 * 3600 * 1000)}
        ),
        NewTopic(t.control, 1, rf),
    ]


def admin_client(cfg: KafkaConfig) -> KafkaAdminClient:
    try:
        return KafkaAdminClient(client_id=f"{cfg.client_id}-admin", **cfg.client_kwargs())
    except KafkaError as e:
        raise _unavailable(cfg, e) from None


def ensure_topics(cfg: KafkaConfig, timeout_s: float = 15.0) -> None:
    """Create Vigil's topics when missing; existing topics are left as they are."""
    admin = admin_client(cfg)
    try:
        existing = set(admin.list_topics())
        missing = [t for t in topic_specs(cfg) if t.name not in existing]
        for topic in missing:
            try:
                admin.create_topics([topic], timeout_ms=int(timeout_s * 1000))
                log.info("created topic %s (%d partitions)", topic.name, topic.num_partitions)
            except TopicAlreadyExistsError:
                pass
    except KafkaError as e:
        raise _unavailable(cfg, e) from None
    finally:
        admin.close()


def make_producer(
    cfg: KafkaConfig, client_suffix: str = "producer", **overrides: Any
) -> KafkaProducer:
    """acks=all + idempotence: a retried send never duplicates or reorders a camera's messages."""
    kw: dict[str, Any] = dict(
        client_id=f"{cfg.client_id}-{client_suffix}",
        acks="all",
        enable_idempotence=True,
        retries=2**31 - 1,
        delivery_timeout_ms=120_000,
        max_in_flight_requests_per_connection=5,
        linger_ms=cfg.linger_ms,
        compression_type=None if cfg.compression == "none" else cfg.compression,
        key_serializer=lambda k: k.encode() if isinstance(k, str) else k,
        value_serializer=lambda v: v if v is None or isinstance(v, bytes) else dumps(v),
        **cfg.client_kwargs(),
    )
    kw.update(overrides)
    try:
        return KafkaProducer(**kw)
    except KafkaError as e:
        raise _unavailable(cfg, e) from None


def make_consumer(cfg: KafkaConfig, client_suffix: str, **kw: Any) -> KafkaConsumer:
    try:
        return KafkaConsumer(
            client_id=f"{cfg.client_id}-{client_suffix}", **cfg.client_kwargs(), **kw
        )
    except KafkaError as e:
        raise _unavailable(cfg, e) from None
