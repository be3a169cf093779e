"""The ``notify:`` section: where alert events go besides Kafka (webhooks, MQTT) and how hard
the notifier tries (docs/notify.md).

One model per sink type, chosen by ``type`` (a pydantic discriminated union, so an unknown type
is one error naming ``notify.sinks.<i>`` and the types there are). Strict like every section:
unknown keys are errors. Secrets (webhook secrets and headers, MQTT passwords) are
``SecretStr``: they never show in a repr, a log line, a metric or a dead letter.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, Protocol
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

from pipeline.common.config import StrictModel
from pipeline.common.contracts import CAMERA_ID, Connections

__all__ = [
    "SEVERITY_RANK",
    "MqttSinkConfig",
    "MqttTls",
    "NotifyConfig",
    "NotifySettings",
    "RateLimit",
    "RetryPolicy",
    "SinkConfig",
    "WebhookSinkConfig",
]

Severity = Literal["info", "low", "medium", "high", "critical"]
Status = Literal["started", "ended", "reviewed"]
SEVERITY_RANK = {"info": 0, "low": 1, "medium": 2, "high": 3, "critical": 4}
_TOPIC_BAD = re.compile(r"[+#\x00]")


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


class _SinkBase(StrictModel):
    id: str = Field(description="name in logs, metrics, dead letters and `vigil notify test`")
    enabled: bool = True
    # filters: an alert event goes to this sink only when it matches all of them
    cameras: list[str] = ["*"]
    rules: list[str] = ["*"]
    min_severity: Severity = "info"
    statuses: list[Status] = ["started", "ended"]
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
            raise ValueError("needs at least one of started, ended, reviewed")
        return v

    def matches(self, alert: dict[str, Any]) -> bool:
        """Whether this sink wants ``alert`` (camera, rule, severity and status filters)."""
        return (
            alert.get("status") in self.statuses
            and ("*" in self.cameras or alert.get("camera_id") in self.cameras)
            and ("*" in self.rules or alert.get("rule_id") in self.rules)
            and SEVERITY_RANK.get(alert.get("severity"), -1) >= SEVERITY_RANK[self.min_severity]
        )


def _bad(kind: str, message: str) -> PydanticCustomError:
    """A config error whose message is shown as is (no "Value error, " in front)."""
    return PydanticCustomError(kind, message)


def _check_url(v: str, schemes: tuple[str, ...]) -> str:
    """A URL with one of ``schemes`` and a host. The error never quotes the URL: a webhook URL
    (Slack's, for one) is itself a secret."""
    wanted = " or ".join(f"{s}://" for s in schemes)
    try:
        parts = urlsplit(v)
        port = parts.port
    except ValueError as e:
        raise _bad("bad_url", f"not a valid URL ({e})") from None
    if parts.scheme.lower() not in schemes:
        got = f"scheme {parts.scheme!r}" if parts.scheme else "no scheme"
        raise _bad("bad_url", f"must be an {wanted} URL, got {got}")
    if not parts.hostname:
        raise _bad("bad_url", f"must be an {wanted} URL with a host")
    if port == 0:
        raise _bad("bad_url", "port 0 is not a port")
    return v


class WebhookSinkConfig(_SinkBase):
    type: Literal["webhook"]
    # repr=False: a webhook URL may be a secret itself (Slack's); it is never logged whole
    url: str = Field(repr=False, description="http(s) URL the alert is sent to")
    method: Literal["POST", "PUT"] = "POST"
    format: Literal["json", "slack"] = "json"
    # HMAC-SHA256 key of X-Vigil-Signature: required for format json, optional for slack (Slack
    # does not check signatures; its URL is the secret)
    secret: SecretStr | None = None
    headers: dict[str, SecretStr] = Field(
        {}, description="extra request headers (Authorization: ...); values are secrets"
    )
    # url: `snapshot_url` in the body when console.snapshot_base_url is set; base64: the JPEG
    # itself (`snapshot_jpeg_base64`, started events); none: neither
    include_snapshot: Literal["url", "base64", "none"] = "url"
    timeout_s: float = Field(5.0, gt=0, le=300, description="connect, send and read, each")
    concurrency: int = Field(
        4, ge=1, le=64, description="parallel requests (one camera's events stay in order)"
    )
    verify_tls: bool = True
    ca_file: str | None = None

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        return _check_url(v, ("http", "https"))

    @field_validator("secret")
    @classmethod
    def _secret(cls, v: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        if v is None:
            if info.data.get("format", "json") == "json":
                raise _bad(
                    "missing_secret",
                    "required for a json webhook: the receiver checks X-Vigil-Signature "
                    "with it (put it in an environment variable: secret: ${MY_SECRET})",
                )
            return v
        if len(v.get_secret_value()) < 16:
            raise _bad(
                "short_secret", "at least 16 characters (an HMAC key that can be guessed is none)"
            )
        return v

    @field_validator("headers")
    @classmethod
    def _headers(cls, v: dict[str, SecretStr]) -> dict[str, SecretStr]:
        reserved = {
            "content-type",
            "idempotency-key",
            "x-vigil-signature",
            "x-vigil-timestamp",
            "content-length",
        }
        for name in v:
            if not re.fullmatch(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+", name):
                raise ValueError(f"{name!r} is not a header name")
            if name.lower() in reserved:
                raise ValueError(f"{name!r} is set by the notifier")
            if any(c in v[name].get_secret_value() for c in "\r\n\x00"):
                raise ValueError(f"{name!r}: a header value cannot hold a line break")
        return v


class MqttTls(StrictModel):
    """TLS to the broker (``mqtts://`` turns it on with the system's CAs)."""

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    insecure: bool = Field(False, description="skip the host name check (self-signed test rigs)")


class MqttSinkConfig(_SinkBase):
    type: Literal["mqtt"]
    url: str = Field(description="mqtt://host[:1883] or mqtts://host[:8883]")
    username: str | None = None
    password: SecretStr | None = None
    client_id: str | None = Field(None, description="default vigil-notify-<host>-<pid>")
    prefix: str = Field("vigil/", description="topic prefix: <prefix>alerts, <prefix><camera>/...")
    qos: Literal[0, 1, 2] = 1
    keepalive_s: int = Field(30, ge=5, le=3600)
    timeout_s: float = Field(10.0, gt=0, le=300, description="connect and acknowledgements")
    tls: MqttTls | None = None
    discovery: bool = Field(True, description="Home Assistant MQTT discovery messages")
    discovery_prefix: str = "homeassistant"
    availability_interval_s: float = Field(
        10.0, ge=1, le=3600, description="how often camera availability is read from Redis"
    )

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        _check_url(v, ("mqtt", "mqtts"))
        if "@" in urlsplit(v).netloc:
            raise _bad("bad_url", "put the user and password in username / password, not the URL")
        return v

    @field_validator("prefix", "discovery_prefix")
    @classmethod
    def _topic(cls, v: str) -> str:
        if _TOPIC_BAD.search(v) or v.startswith("/"):
            raise _bad("bad_prefix", f"{v!r}: no '+', '#' or leading '/' in a topic prefix")
        return v

    @field_validator("prefix")
    @classmethod
    def _slash(cls, v: str) -> str:
        return v if not v or v.endswith("/") else v + "/"

    @model_validator(mode="after")
    def _pair(self) -> MqttSinkConfig:
        if self.password is not None and self.username is None:
            raise ValueError("password: give username too")
        return self

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or ""

    @property
    def port(self) -> int:
        parts = urlsplit(self.url)
        return parts.port or (8883 if parts.scheme.lower() == "mqtts" else 1883)

    @property
    def use_tls(self) -> bool:
        return self.tls is not None or urlsplit(self.url).scheme.lower() == "mqtts"


SinkConfig = Annotated[WebhookSinkConfig | MqttSinkConfig, Field(discriminator="type")]


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
    sinks: list[SinkConfig] = []

    @field_validator("sinks")
    @classmethod
    def _unique(cls, sinks: list[Any]) -> list[Any]:
        seen: set[str] = set()
        for s in sinks:
            if s.id in seen:
                raise _bad("duplicate_sink", f"duplicate sink id {s.id!r}")
            seen.add(s.id)
        return sinks

    @property
    def active_sinks(self) -> list[WebhookSinkConfig | MqttSinkConfig]:
        return [s for s in self.sinks if s.enabled]

    def sink(self, sink_id: str) -> WebhookSinkConfig | MqttSinkConfig | None:
        return next((s for s in self.sinks if s.id == sink_id), None)


class NotifySettings(Connections, Protocol):
    """What the notifier needs of the root config: Kafka, Redis and this section."""

    notify: NotifyConfig
