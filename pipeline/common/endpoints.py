"""Where Vigil's own services listen (Kafka brokers, Redis, MQTT brokers): hosts and ports a
camera URL must never name, since FFmpeg would speak RTSP or HTTP to them with whatever the URL
holds. A shared leaf, so the composition layer hands them to ingest as plain data."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from pipeline.common.contracts import Connections

__all__ = ["Endpoint", "host_port", "service_endpoints"]

Endpoint = tuple[str, int]  # (host, port)


def host_port(server: str, default_port: int) -> Endpoint | None:
    """``host:port`` (``[v6]:port``, a bare host) -> (host, port); None when unreadable."""
    try:
        parts = urlsplit(f"//{server.strip()}")
        host, port = parts.hostname, parts.port
    except ValueError:
        return None
    return (host, port or default_port) if host else None


def service_endpoints(cfg: Connections) -> frozenset[Endpoint]:
    """Kafka's bootstrap servers, Redis (``redis://``/``rediss://``; not a unix socket) and, when
    ``cfg`` has a ``notify`` section, its MQTT sinks' brokers."""
    found: set[Endpoint | None] = {
        host_port(server, 9092) for server in cfg.kafka.bootstrap_servers.split(",")
    }
    redis_url = cfg.redis.url.get_secret_value()
    if redis_url.startswith(("redis://", "rediss://")):
        found.add(host_port(urlsplit(redis_url).netloc.rpartition("@")[2] or "127.0.0.1", 6379))
    notify: Any = getattr(cfg, "notify", None)
    for sink in getattr(notify, "sinks", ()):
        if getattr(sink, "type", None) == "mqtt" and sink.host:
            found.add((sink.host, sink.port))
    return frozenset(e for e in found if e is not None)
