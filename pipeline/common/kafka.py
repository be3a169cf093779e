"""Kafka: the connection settings every stage shares, clients with the settings Vigil relies on,
and idempotent topic creation. Explicit timeouts everywhere (``request_timeout_ms``,
``bootstrap_timeout_ms``)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import NewTopic
from kafka.errors import (
    ClusterAuthorizationFailedError,
    KafkaError,
    TopicAlreadyExistsError,
    TopicAuthorizationFailedError,
)
from pydantic import Field, SecretStr, model_validator

from pipeline.common.config import StrictModel
from pipeline.common.errors import UserError
from pipeline.common.jsoncodec import dumps

log = logging.getLogger(__name__)


class KafkaTopics(StrictModel):
    cameras: str = "vigil.cameras"
    detections: str = "vigil.detections"
    alerts: str = "vigil.alerts"
    # The recorder's clip announcements (an ended alert's message with status "clip",
    # docs/recordings.md), keyed by camera id: a topic of their own, so that a recorder never
    # needs to write alerts (docs/security.md). Read by the notifier and alert subscribers.
    clips: str = "vigil.clips"
    # The operators' reviews of alerts (a message with status "reviewed", docs/console.md),
    # keyed by camera id: a topic of their own, so that the console never needs to write
    # alerts (docs/security.md). Read by the notifier and alert subscribers.
    reviews: str = "vigil.reviews"
    detections_dlq: str = "vigil.detections.dlq"
    control: str = "vigil.control"
    # Compacted, keyed by rule id (tombstone = deleted): the live rules every alert service
    # applies; the YAML's rules seed it (docs/console.md)
    rules: str = "vigil.rules"
    # Alert deliveries a notifier sink gave up on (docs/notify.md), with the alert and the error
    notify_dlq: str = "vigil.notify.dlq"
    # Motion spells of the cameras (ingest -> recorders in record.mode events; keyed by camera)
    motion: str = "vigil.motion"

    @model_validator(mode="after")
    def _clips_apart(self) -> KafkaTopics:
        # the notifier takes only clip announcements from the clips topic: the same name for
        # both would make every alert a refused clip, or open the alerts to the recorder
        if self.clips == self.alerts:
            raise ValueError(f"clips: {self.clips!r} is the alerts topic; give it its own name")
        # likewise for the console's reviews
        if self.reviews == self.alerts:
            raise ValueError(f"reviews: {self.reviews!r} is the alerts topic; give it its own name")
        if self.reviews == self.clips:
            raise ValueError(f"reviews: {self.reviews!r} is the clips topic; give it its own name")
        return self


class KafkaConfig(StrictModel):
    bootstrap_servers: str = "127.0.0.1:9092"
    client_id: str = "vigil"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    username: str | None = None
    password: SecretStr | None = None
    # The password in a file (a mounted Kubernetes secret, kafka_cluster.sh's secrets/<user>)
    # instead of the config: read once when the config is loaded.
    password_file: str | None = None
    request_timeout_ms: int = Field(15000, ge=1000)
    bootstrap_timeout_ms: int = Field(15000, ge=1000)
    topics: KafkaTopics = KafkaTopics()
    detections_partitions: int = Field(6, ge=1)
    cameras_partitions: int = Field(16, ge=1)
    replication_factor: int = Field(1, ge=1)
    # Replicas that must have a write before acks=all acknowledges it; default: 2 when
    # replication_factor >= 3 (one broker may fail without losing an acknowledged message).
    min_insync_replicas: int | None = Field(None, ge=1)
    compression: Literal["gzip", "snappy", "lz4", "zstd", "none"] = "gzip"
    linger_ms: int = Field(5, ge=0)

    @model_validator(mode="after")
    def _password_from_file(self) -> KafkaConfig:
        if self.password_file is not None:
            if self.password is not None:
                raise ValueError("password_file: give password or password_file, not both")
            try:
                secret = Path(self.password_file).read_text().strip()
            except OSError as e:
                raise ValueError(
                    f"password_file: cannot read {self.password_file}: {e.strerror}"
                ) from None
            self.password = SecretStr(secret)
        if (
            self.min_insync_replicas is not None
            and self.min_insync_replicas > self.replication_factor
        ):
            raise ValueError(
                f"min_insync_replicas: {self.min_insync_replicas} > replication_factor "
                f"{self.replication_factor} (no write could ever be acknowledged)"
            )
        return self

    @property
    def effective_min_insync_replicas(self) -> int | None:
        if self.min_insync_replicas is not None:
            return self.min_insync_replicas
        return 2 if self.replication_factor >= 3 else None

    def client_kwargs(self) -> dict[str, Any]:
        """Connection settings shared by producers, consumers and the admin client."""
        warn_if_password_in_clear(self)
        kw: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap_servers.split(","),
            "security_protocol": self.security_protocol,
            "request_timeout_ms": self.request_timeout_ms,
            "bootstrap_timeout_ms": self.bootstrap_timeout_ms,
        }
        if self.sasl_mechanism:
            kw["sasl_mechanism"] = self.sasl_mechanism
            kw["sasl_plain_username"] = self.username
            kw["sasl_plain_password"] = self.password.get_secret_value() if self.password else None
        return kw


_CLEAR_WARNED: set[str] = set()


def warn_if_password_in_clear(cfg: KafkaConfig) -> bool:
    """Warn once per cluster when ``kafka.password`` goes over plain TCP (SASL_PLAINTEXT with
    the PLAIN mechanism sends it as it is): accepted silently, a test rig's setting reaches
    production unnoticed. Returns whether it warned."""
    if (
        cfg.security_protocol != "SASL_PLAINTEXT"
        or cfg.sasl_mechanism != "PLAIN"
        or cfg.password is None
        or cfg.bootstrap_servers in _CLEAR_WARNED
    ):
        return False
    _CLEAR_WARNED.add(cfg.bootstrap_servers)
    log.warning(
        "Kafka at %s: security_protocol SASL_PLAINTEXT with sasl_mechanism PLAIN sends "
        "kafka.password over plain TCP, readable by whoever is on the path; use SASL_SSL",
        cfg.bootstrap_servers,
    )
    return True


class KafkaUnavailable(UserError, RuntimeError):
    """The broker cannot be reached; the message says which address and how to start it."""


class KafkaRefused(KafkaUnavailable):
    """The broker answered but its ACLs refuse what was asked (a user that may not create a
    topic): the message names the topic and the user, not an outage. Retried like an outage
    (an admin may make the topic meanwhile)."""


def _unavailable(cfg: KafkaConfig, err: Exception) -> KafkaUnavailable:
    return KafkaUnavailable(
        f"cannot reach Kafka at {cfg.bootstrap_servers} ({type(err).__name__}: {err}); "
        "is it running? `make infra-up` starts a local broker"
    )


def topic_specs(cfg: KafkaConfig) -> list[NewTopic]:
    rf = cfg.replication_factor
    t = cfg.topics
    specs = [
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
        # like the alerts: keyed by camera id, kept as long
        NewTopic(
            t.clips,
            cfg.detections_partitions,
            rf,
            topic_configs={"retention.ms": str(30 * 24 * 3600 * 1000)},
        ),
        # the operators' reviews: like the alerts too
        NewTopic(
            t.reviews,
            cfg.detections_partitions,
            rf,
            topic_configs={"retention.ms": str(30 * 24 * 3600 * 1000)},
        ),
        NewTopic(
            t.detections_dlq, 1, rf, topic_configs={"retention.ms": str(7 * 24 * 3600 * 1000)}
        ),
        NewTopic(t.control, 1, rf),
        NewTopic(t.notify_dlq, 1, rf, topic_configs={"retention.ms": str(7 * 24 * 3600 * 1000)}),
        # Motion spells matter for a few seconds: kept one hour
        NewTopic(
            t.motion, cfg.detections_partitions, rf, topic_configs={"retention.ms": "3600000"}
        ),
        # One partition: every alert service reads every rule, and rule changes stay in order.
        NewTopic(
            t.rules,
            1,
            rf,
            topic_configs={
                "cleanup.policy": "compact",
                "min.cleanable.dirty.ratio": "0.1",
                "segment.ms": "600000",
            },
        ),
    ]
    isr = cfg.effective_min_insync_replicas
    if isr is not None:
        for spec in specs:
            spec.topic_configs = {**(spec.topic_configs or {}), "min.insync.replicas": str(isr)}
    return specs


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
            except (TopicAuthorizationFailedError, ClusterAuthorizationFailedError):
                who = f"user {cfg.username}" if cfg.username else "this client"
                raise KafkaRefused(
                    f"Kafka at {cfg.bootstrap_servers} has no topic {topic.name} and {who} is "
                    "not allowed to create it: with ACLs an admin makes the topics "
                    "(deploy/local/kafka_cluster.sh does), or grant CREATE"
                ) from None
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


def group_consumer(
    cfg: KafkaConfig,
    client_suffix: str,
    *,
    group_id: str,
    session_timeout_ms: int,
    **kw: Any,
) -> KafkaConsumer:
    """A consumer-group member that commits its offsets itself (after its work is safe), with
    heartbeats at a third of the session timeout: the alert service and the notifier."""
    return make_consumer(
        cfg,
        client_suffix,
        group_id=group_id,
        enable_auto_commit=False,
        session_timeout_ms=session_timeout_ms,
        heartbeat_interval_ms=max(1000, session_timeout_ms // 3),
        **kw,
    )


def connection_count(client: KafkaProducer | KafkaConsumer) -> float | None:
    """Open broker connections of a kafka-python client (its ``connection-count`` metric); 0
    while no broker can be reached; None when the client does not report it."""
    for group, values in client.metrics().items():
        if group in ("producer-metrics", "consumer-metrics") and "connection-count" in values:
            return float(values["connection-count"])
    return None


def quiet_library_logs(verbose: bool = False) -> None:
    """kafka-python logs every failed connection attempt (about six lines a second in an outage,
    from kafka.net, kafka.cluster, kafka.coordinator); Vigil logs the state changes itself."""
    logging.getLogger("kafka").setLevel(logging.WARNING if verbose else logging.CRITICAL)
