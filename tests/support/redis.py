"""The test's own keys in the shared test Redis."""

from __future__ import annotations

import redis

from alerts.store import AlertStore


def cleanup(client: redis.Redis, prefix: str) -> None:
    """Deletes every key under ``prefix``."""
    keys = list(client.scan_iter(match=f"{prefix}*", count=2000))
    for i in range(0, len(keys), 1000):
        client.unlink(*keys[i : i + 1000])


def stream_events(store: AlertStore, camera: str | None = None) -> list[tuple[str, str]]:
    """``(alert id, status)`` of the alert stream (one camera's, or the global one), in order."""
    entries = store.client.xrange(store.stream_key(camera), "-", "+")
    return [(f[b"id"].decode(), f[b"status"].decode()) for _, f in entries]
