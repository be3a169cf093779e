"""Sink implementations, by config ``type`` (:mod:`alerts.notify.sinks.base` is the seam)."""

from __future__ import annotations

from alerts.notify.sinks.base import Delivery, Sink, SinkContext, SinkError, idempotency_key
from alerts.notify.sinks.mqtt import MqttSink
from alerts.notify.sinks.webhook import WebhookSink

SINK_TYPES: dict[str, type[Sink]] = {"webhook": WebhookSink, "mqtt": MqttSink}

__all__ = [
    "SINK_TYPES",
    "Delivery",
    "MqttSink",
    "Sink",
    "SinkContext",
    "SinkError",
    "WebhookSink",
    "build_sink",
    "idempotency_key",
]


def build_sink(cfg, ctx: SinkContext) -> Sink:
    """The sink for one ``notify.sinks`` entry."""
    return SINK_TYPES[cfg.type](cfg, ctx)
