"""The ``notify:`` section: where alert events go besides Kafka (webhooks, MQTT) and how hard
the notifier tries (docs/notify.md).

Each sink type's config model lives with its implementation (one module per type in
:mod:`alerts.notify.sinks`, registered by ``register_sink``); each ``notify.sinks`` entry is
validated with the model its ``type`` selects, as a pydantic discriminated union composed from
that registry when the entry is read (so a sink registered after this module was imported counts
too). An unknown type is one error naming ``notify.sinks.<i>`` and the types there are; a bad
key is ``notify.sinks.<i>.<type>.<key>``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Protocol, Union

from pydantic import Field, GetCoreSchemaHandler, TypeAdapter, field_validator
from pydantic_core import core_schema

import alerts.notify.sinks  # noqa: F401 (imports, and so registers, every sink type)
from alerts.notify.sinks.config import (
    SEVERITY_RANK,
    SINK_CONFIGS,
    RateLimit,
    RetryPolicy,
    SinkConfig,
    bad,
)
from pipeline.common.config import StrictModel
from pipeline.common.contracts import Connections

__all__ = [
    "SEVERITY_RANK",
    "AnySink",
    "NotifyConfig",
    "NotifySettings",
    "RateLimit",
    "RetryPolicy",
    "SinkConfig",
]

_UNIONS: dict[tuple[type[SinkConfig], ...], TypeAdapter[Any]] = {}


def _union_type() -> Any:
    """``Annotated[<model> | ..., Field(discriminator="type")]`` of the registered models."""
    models = tuple(SINK_CONFIGS.values())
    union = Union[models] if len(models) > 1 else models[0]  # noqa: UP007 (built at run time)
    return Annotated[union, Field(discriminator="type")]


def _sink_union() -> TypeAdapter[Any]:
    """The discriminated union of the registered sink config models (built once per set)."""
    models = tuple(SINK_CONFIGS.values())
    adapter = _UNIONS.get(models)
    if adapter is None:
        adapter = _UNIONS[models] = TypeAdapter(_union_type())
    return adapter


class AnySink:
    """A ``notify.sinks`` entry: validated by the registered model its ``type`` selects (the
    errors are the union's, with their locations: ``<i>.<type>.<key>``)."""

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        # the JSON schema (documentation only) shows the types registered when it is built
        return core_schema.no_info_plain_validator_function(
            lambda v: _sink_union().validate_python(v),
            json_schema_input_schema=handler.generate_schema(_union_type()),
        )


class NotifyConfig(StrictModel):
    """``notify:``: the notifier (``vigil notify serve``, or inside ``vigil run``)."""

    group_id: str = "vigil-notify"
    # Static group membership: a restarted instance gets its partitions back at once.
    instance_id: str | None = None
    # Where a new group starts: "latest" so a first start does not replay 30 days of alerts to
    # every sink; the position is committed at once, so a crash right after loses nothing.
    auto_offset_reset: Literal["earliest", "latest"] = "latest"
    poll_timeout_ms: int = Field(500, ge=10, le=60_000)
    max_poll_records: int = Field(500, ge=1, le=10_000)
    session_timeout_ms: int = Field(10_000, ge=6000)
    max_in_flight: int = Field(
        10_000, ge=1, description="alert events read but not settled; then the consumer pauses"
    )
    commit_interval_s: float = Field(1.0, ge=0.0, le=60.0)
    # With several sinks: the longest one sink may keep the consumer waiting (its queue full)
    # before its overflow goes to the dead-letter topic instead (a slow sink does not hold the
    # others back for longer). A sink alone is waited for as long as it takes.
    max_hold_s: float = Field(10.0, ge=0.0, le=3600.0)
    drain_timeout_s: float = Field(
        10.0, ge=0.0, le=600.0, description="on stop, how long deliveries in progress may finish"
    )
    sinks: list[AnySink] = []

    @field_validator("sinks")
    @classmethod
    def _unique(cls, sinks: list[Any]) -> list[Any]:
        seen: set[str] = set()
        for s in sinks:
            if s.id in seen:
                raise bad("duplicate_sink", f"duplicate sink id {s.id!r}")
            seen.add(s.id)
        return sinks

    @property
    def active_sinks(self) -> list[SinkConfig]:
        return [s for s in self.sinks if s.enabled]

    def sink(self, sink_id: str) -> SinkConfig | None:
        return next((s for s in self.sinks if s.id == sink_id), None)


class NotifySettings(Connections, Protocol):
    """What the notifier needs of the root config: Kafka, Redis and this section."""

    notify: NotifyConfig
