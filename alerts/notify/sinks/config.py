"""What every sink type shares: the keys every sink accepts (filters, retry policy, rate limit,
queue), the URL check, and the registry that maps a ``type`` to its config model.

A sink type is one module in this package holding its config model (a :class:`SinkConfig`
subclass with ``type: Literal["my_sink"]``) and its :class:`alerts.notify.sinks.Sink` subclass,
decorated with ``@register_sink``; :mod:`alerts.notify.config` validates each ``notify.sinks``
entry with the model its ``type`` selects. Strict like every section: unknown keys are errors.
Secrets (webhook secrets and headers, MQTT passwords) are ``SecretStr``: they never show in a
repr, a log line, a metric or a dead letter.

The root config composes ``notify:`` from these modules, so every ``vigil`` command imports them:
a sink's client library that only delivering needs (paho for MQTT) is imported where it delivers.
"""

from __future__ import annotations

from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator
from pydantic_core import PydanticCustomError

from pipeline.common.config import StrictModel
from pipeline.common.contracts import CAMERA_ID

__all__ = [
    "SEVERITY_RANK",
    "SINK_CONFIGS",
    "RateLimit",
    "RetryPolicy",
    "SinkConfig",
    "bad",
    "check_url",
]

Severity = Literal["info", "low", "medium", "high", "critical"]
Status = Literal["started", "ended", "reviewed", "clip"]
SEVERITY_RANK = {"info": 0, "low": 1, "medium": 2, "high": 3, "critical": 4}


class RetryPolicy(StrictModel):
    """How long one delivery to one sink is retried before it goes to the dead-letter topic."""

    attempts: int = Field(8, ge=1, le=1000, description="attempts per delivery, at most")
    initial_s: float = Field(0.5, gt=0, le=60, description="first backoff; doubles per attempt")
    max_s: float = Field(30.0, gt=0, le=3600, description="longest backoff between attempts")
    budget_s: float = Field(
        120.0, gt=0, le=7 * 24 * 3600, description="longest a delivery is retried, in total"
    )


class RateLimit(StrictModel):
    """Token bucket: at most ``per_s`` deliveries a second on average, ``burst`` at once.
    Deliveries over the limit wait (in the sink's bounded queue), they are not dropped."""

    per_s: float = Field(gt=0, le=100_000)
    burst: int = Field(10, ge=1, le=100_000)


class SinkConfig(StrictModel):
    """Keys every sink type accepts; a type's model adds ``type: Literal["<type>"]`` (declared
    there only, so the keys keep the order they always had in a dump) and its own."""

    id: str = Field(description="name in logs, metrics, dead letters and `vigil notify test`")
    enabled: bool = True
    # filters: an alert event goes to this sink only when it matches all of them
    cameras: list[str] = ["*"]
    rules: list[str] = ["*"]
    min_severity: Severity = "info"
    statuses: list[Status] = ["started", "ended", "clip"]
    rate_limit: RateLimit | None = None
    retry: RetryPolicy = RetryPolicy()
    queue_size: int = Field(
        1000,
        ge=1,
        le=1_000_000,
        description="deliveries waiting for this sink (the consumer reads ahead this far)",
    )

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        if not CAMERA_ID.match(v):
            raise ValueError(
                f"{v!r}: use 1-64 letters, digits, '_', '-', '.', starting with a letter or digit"
            )
        return v

    @field_validator("cameras", "rules")
    @classmethod
    def _ids(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError('needs at least one id, or "*" for all')
        for x in v:
            if x != "*" and not CAMERA_ID.match(x):
                raise ValueError(f"{x!r} is not a camera/rule id (or '*')")
        return v

    @field_validator("statuses")
    @classmethod
    def _statuses(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("needs at least one of started, ended, reviewed, clip")
        return v

    def matches(self, alert: dict[str, Any]) -> bool:
        """Whether this sink wants ``alert`` (camera, rule, severity and status filters)."""
        return (
            alert.get("status") in self.statuses
            and ("*" in self.cameras or alert.get("camera_id") in self.cameras)
            and ("*" in self.rules or alert.get("rule_id") in self.rules)
            and SEVERITY_RANK.get(alert.get("severity"), -1) >= SEVERITY_RANK[self.min_severity]
        )


def bad(kind: str, message: str) -> PydanticCustomError:
    """A config error whose message is shown as is (no "Value error, " in front)."""
    return PydanticCustomError(kind, message)


def check_url(v: str, schemes: tuple[str, ...]) -> str:
    """A URL with one of ``schemes`` and a host. The error never quotes the URL: a webhook URL
    (Slack's, for one) is itself a secret."""
    wanted = " or ".join(f"{s}://" for s in schemes)
    try:
        parts = urlsplit(v)
        port = parts.port
    except ValueError as e:
        raise bad("bad_url", f"not a valid URL ({e})") from None
    if parts.scheme.lower() not in schemes:
        got = f"scheme {parts.scheme!r}" if parts.scheme else "no scheme"
        raise bad("bad_url", f"must be an {wanted} URL, got {got}")
    if not parts.hostname:
        raise bad("bad_url", f"must be an {wanted} URL with a host")
    if port == 0:
        raise bad("bad_url", "port 0 is not a port")
    return v


# type -> config model, in registration order; filled by ``register_sink`` (a registry, not a
# closed union, so a sink module brings its own model)
SINK_CONFIGS: dict[str, type[SinkConfig]] = {}
