"""Settings that weaken a connection are accepted, but never silently: one warning line at
start naming the sink (or server) and the setting, never the password."""

from __future__ import annotations

import logging

import pytest

from alerts.notify.sinks.base import SinkContext
from alerts.notify.sinks.mqtt import MqttSink, MqttSinkConfig
from alerts.notify.sinks.webhook import WebhookSink, WebhookSinkConfig
from pipeline.common.kafka import KafkaConfig
from pipeline.common.redis import RedisConfig, redis_client

PASSWORD = "hunter2-very-secret-pw"


def warnings_of(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def test_webhook_verify_tls_false_warns_once(caplog):
    caplog.set_level(logging.WARNING)
    cfg = WebhookSinkConfig(
        id="ops-hook",
        type="webhook",
        url="https://hooks.example:8443/in",
        secret=PASSWORD,
        verify_tls=False,
    )
    sink = WebhookSink(cfg, SinkContext())
    sink.start()
    sink.start()  # every worker thread's connection calls it: still one line
    (line,) = warnings_of(caplog)
    assert "ops-hook" in line and "verify_tls: false" in line
    assert PASSWORD not in line


def test_webhook_checked_tls_is_quiet(caplog):
    caplog.set_level(logging.WARNING)
    cfg = WebhookSinkConfig(
        id="ops-hook", type="webhook", url="https://hooks.example/in", secret=PASSWORD
    )
    WebhookSink(cfg, SinkContext()).start()
    assert warnings_of(caplog) == []


@pytest.mark.parametrize(
    ("url", "tls", "warned"),
    [
        ("mqtt://127.0.0.1:1", None, True),  # password over plain TCP
        ("mqtts://127.0.0.1:1", None, False),
        ("mqtt://127.0.0.1:1", {}, False),  # tls: turns TLS on
    ],
)
def test_mqtt_password_without_tls_warns_once(caplog, url, tls, warned):
    caplog.set_level(logging.WARNING, logger="alerts.notify")
    extra = {} if tls is None else {"tls": tls}
    cfg = MqttSinkConfig(
        id="home", type="mqtt", url=url, username="vigil", password=PASSWORD, **extra
    )
    sink = MqttSink(cfg, SinkContext())
    sink.announce = False
    try:
        sink.start()
        sink.start()
    finally:
        sink.close()
    lines = [w for w in warnings_of(caplog) if "insecure" in w]
    if warned:
        (line,) = lines
        assert "home" in line and "plain TCP" in line
    else:
        assert lines == []
    assert all(PASSWORD not in w for w in warnings_of(caplog))


def test_kafka_sasl_plain_over_plaintext_warns_once(caplog):
    caplog.set_level(logging.WARNING)
    cfg = KafkaConfig(
        bootstrap_servers="kafka-a.example:9092",
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism="PLAIN",
        username="vigil",
        password=PASSWORD,
    )
    cfg.client_kwargs()
    cfg.client_kwargs()
    (line,) = warnings_of(caplog)
    assert "kafka-a.example:9092" in line and "SASL_PLAINTEXT" in line
    assert PASSWORD not in line


def test_redis_password_over_plain_tcp_warns_once(caplog):
    caplog.set_level(logging.WARNING, logger="pipeline.common.redis")
    # TEST-NET address: never answers, so only the URL itself is judged
    cfg = RedisConfig(url=f"redis://:{PASSWORD}@192.0.2.7:6379/0", socket_timeout_s=0.2)
    redis_client(cfg).close()
    redis_client(cfg).close()
    lines = [w for w in warnings_of(caplog) if "insecure" in w]
    (line,) = lines
    assert "192.0.2.7:6379" in line and "plain TCP" in line
    assert PASSWORD not in line
