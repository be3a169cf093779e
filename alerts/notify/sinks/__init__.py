"""Sink types: one module per type, each holding its config model and its implementation.

``base`` has the :class:`Sink` seam and ``register_sink``; ``config`` the keys every sink
accepts and the registry of config models. Importing this package imports every other module in
it, so each registers itself: a new sink type is one new module here, nothing else is edited.
"""

from __future__ import annotations

import importlib
import pkgutil

from alerts.notify.sinks.base import (
    SINK_TYPES,
    Delivery,
    Sink,
    SinkContext,
    SinkError,
    idempotency_key,
    register_sink,
)
from alerts.notify.sinks.config import SINK_CONFIGS, SinkConfig

_SHARED = {"base", "config"}
for _m in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
    if _m.name not in _SHARED and not _m.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_m.name}")

__all__ = [
    "SINK_CONFIGS",
    "SINK_TYPES",
    "Delivery",
    "Sink",
    "SinkConfig",
    "SinkContext",
    "SinkError",
    "build_sink",
    "idempotency_key",
    "register_sink",
]


def build_sink(cfg: SinkConfig, ctx: SinkContext) -> Sink:
    """The sink for one ``notify.sinks`` entry."""
    return SINK_TYPES[cfg.type](cfg, ctx)
