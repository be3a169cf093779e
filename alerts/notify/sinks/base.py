"""The seam every sink implements: one attempt to deliver one alert event.

A :class:`Sink` only knows its protocol. Retries, backoff, the retry budget, rate limits, the
bounded queue and the dead-letter topic are the same for every sink and live in
:mod:`alerts.notify.delivery`; a sink reports what went wrong by raising :class:`SinkError`
(``permanent`` when trying again cannot help, ``retry_after`` when the far side said when).

A new sink type is one module in this package: its config model and its class, which plugs in
with::

    class MySinkConfig(SinkConfig):  # alerts.notify.sinks.config
        type: Literal["my_sink"]
        url: str

    @register_sink
    class MySink(Sink):
        kind = "my_sink"
        config_model = MySinkConfig

        def send(self, d): ...
        def where(self): ...

Importing :mod:`alerts.notify.sinks` imports every module in it, so nothing else is edited.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar, get_args
from urllib.parse import quote

import redis

from alerts.notify.sinks.config import SINK_CONFIGS, SinkConfig
from alerts.store import AlertStore
from pipeline.common.lifecycle import OutageLog

log = logging.getLogger(__name__)
_ALERT_ID = re.compile(r"^[0-9a-f]{20}$")

__all__ = [
    "SINK_TYPES",
    "Delivery",
    "Sink",
    "SinkContext",
    "SinkError",
    "idempotency_key",
    "register_sink",
    "snapshot_url",
    "synthetic_alert",
]


def idempotency_key(alert: dict[str, Any]) -> str:
    """``<id>:<status>``: the same for every copy of one alert event, so a receiver can drop a
    repeat (after a notifier crash). A ``reviewed`` event adds the review time
    (``<id>:reviewed:<review.at>``): an alert may be reviewed again, and that is a new event."""
    key = f"{alert.get('id')}:{alert.get('status')}"
    if alert.get("status") == "reviewed":
        review = alert.get("review")
        at = review.get("at") if isinstance(review, dict) else None
        key += f":{at!r}"
    return key


def snapshot_url(base: str, alert_id: str) -> str:
    """Where the console serves the alert's snapshot (``GET /api/alerts/{id}/snapshot.jpg``)."""
    return f"{base.rstrip('/')}/api/alerts/{quote(alert_id, safe='')}/snapshot.jpg"


@dataclass(slots=True, eq=False)
class Delivery:
    """One alert event on its way to the sinks that want it (shared by them, read-only)."""

    alert: dict[str, Any]
    raw: bytes  # the message exactly as it was on Kafka
    key: str  # Idempotency-Key
    kafka_ts: float | None = None  # the record's timestamp (s), for the latency metric
    record: Any = None  # the notifier's bookkeeping: settled once every sink is done


class SinkError(Exception):
    """One failed attempt. ``permanent``: trying again cannot help (e.g. HTTP 400), the delivery
    goes to the dead-letter topic at once. ``retry_after``: seconds the far side asked for."""

    def __init__(
        self, message: str, *, retry_after: float | None = None, permanent: bool = False
    ) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.permanent = permanent


@dataclass
class SinkContext:
    """What a sink may use besides its own config: the Redis alert store (snapshots, camera
    status), where the console is reachable, and the (camera, rule) pairs known up front."""

    store: AlertStore | None = None
    snapshot_base_url: str | None = None
    known_pairs: tuple[tuple[str, str], ...] = ()
    instance: str = "vigil-notify"
    # console.public_url: a clip message's payload carries public_url + the clip's path
    public_url: str | None = None
    _redis_state: OutageLog = field(
        default_factory=lambda: OutageLog(log, "Redis (notifier snapshots)")
    )

    def clip_url(self, alert: dict[str, Any]) -> str | None:
        """The absolute URL of a ``clip`` message's clip (``public_url`` + its path, the path
        made from the alert id, never taken from the message); None for other messages, without
        a ``public_url``, or for an id that is not one."""
        aid = alert.get("id")
        if (
            alert.get("status") != "clip"
            or not self.public_url
            or not isinstance(aid, str)
            or not _ALERT_ID.match(aid)
        ):
            return None
        return f"{self.public_url}/api/alerts/{aid}/clip.mp4"

    def links(self, alert: dict[str, Any]) -> dict[str, str]:
        """The console's links a delivered message carries when ``public_url`` is set:
        ``alert_url`` (the alert's detail, ``public_url/#/alerts/<id>``: after login the console
        opens it) and, for a ``clip`` message, ``clip_url``. The id is checked, never a path
        taken from the message."""
        aid = alert.get("id")
        if not self.public_url or not isinstance(aid, str) or not _ALERT_ID.match(aid):
            return {}
        out = {"alert_url": f"{self.public_url}/#/alerts/{aid}"}
        clip = self.clip_url(alert)
        if clip:
            out["clip_url"] = clip
        return out

    def snapshot(self, alert_id: str) -> bytes | None:
        """The alert's JPEG from Redis; None when there is none, it expired or Redis is down
        (the alert is delivered without it: a snapshot never holds an alert back)."""
        if self.store is None:
            return None
        try:
            jpeg = self.store.get_snapshot(alert_id)
        except redis.RedisError as e:
            self._redis_state.down(f"{type(e).__name__}; alerts go out without snapshots")
            return None
        self._redis_state.up()
        return jpeg


class Sink(ABC):
    """One configured destination. ``send`` is called from the sink's worker threads
    (``workers`` of them, each camera always on the same one), so it must be thread-safe when
    ``workers`` > 1."""

    kind: ClassVar[str] = ""  # the config's ``type``
    config_model: ClassVar[type[SinkConfig]] = SinkConfig

    def __init__(self, cfg: Any, ctx: SinkContext) -> None:
        self.cfg = cfg
        self.ctx = ctx
        self.id: str = cfg.id
        # False for `vigil notify test`: no state of its own (MQTT: no will, no availability,
        # no discovery), so a test next to a running notifier changes nothing it published
        self.announce = True
        self._insecure_warned = False

    @property
    def workers(self) -> int:
        return 1

    def start(self) -> None:  # noqa: B027 (an optional hook: a webhook has nothing to open)
        """Open connections (called once before the first ``send``)."""

    def close(self) -> None:  # noqa: B027 (an optional hook)
        """Release connections; deliveries in progress have ended."""

    @abstractmethod
    def send(self, d: Delivery) -> str:
        """Deliver ``d`` once; return a short description of what came back (``HTTP 200``),
        raise :class:`SinkError` on failure. Never put a secret in either."""

    def test(self, alert: dict[str, Any]) -> str:
        """``vigil notify test``: one attempt with a synthetic alert; what came back."""
        return self.send(Delivery(alert, b"", idempotency_key(alert)))

    @abstractmethod
    def where(self) -> str:
        """Where this sink sends to, safe to print (no path, no credentials)."""

    def describe(self) -> str:
        return f"{self.kind} sink {self.id!r} ({self.where()})"

    def secrets(self) -> list[str]:
        """Strings that must never leave the process (scrubbed from every error text)."""
        return []

    def insecure_settings(self) -> list[str]:
        """What in this sink's config weakens its transport (no certificate check, a password
        over plain TCP), in words that name the setting and never a secret."""
        return []

    def warn_if_insecure(self) -> None:
        """One warning line for the whole sink, the first time it starts: accepted silently,
        such a setting left over from a test rig goes unnoticed in production."""
        if self._insecure_warned:
            return
        self._insecure_warned = True
        problems = self.insecure_settings()
        if problems:
            log.warning("%s: insecure: %s", self.describe(), "; ".join(problems))

    def scrub(self, text: str) -> str:
        for s in sorted(self.secrets(), key=len, reverse=True):
            if s:
                text = text.replace(s, "***")
        return text


SINK_TYPES: dict[str, type[Sink]] = {}


def register_sink(cls: type[Sink]) -> type[Sink]:
    """Make a sink type available to the config (its ``config_model``, chosen by ``type``) and
    to the notifier. The model's ``type`` must be ``Literal[cls.kind]``: the key in the YAML and
    the class that delivers are one name."""
    if not cls.kind:
        raise ValueError(f"{cls.__name__} has no 'kind' (its config's type)")
    field = cls.config_model.model_fields.get("type")
    if field is None or get_args(field.annotation) != (cls.kind,):
        raise ValueError(
            f"{cls.__name__}.config_model {cls.config_model.__name__} needs "
            f'type: Literal["{cls.kind}"]'
        )
    known = SINK_TYPES.get(cls.kind)
    if known is not None and (known.__module__, known.__qualname__) != (
        cls.__module__,
        cls.__qualname__,
    ):
        raise ValueError(f"sink type {cls.kind!r} is taken by {known.__module__}.{known.__name__}")
    SINK_TYPES[cls.kind] = cls
    SINK_CONFIGS[cls.kind] = cls.config_model
    return cls


def synthetic_alert(camera_id: str = "vigil-test", rule_id: str = "notify-test") -> dict[str, Any]:
    """A valid ``vigil.alerts/v1`` started event that no rule produced (``vigil notify test``)."""
    now = time.time()
    aid = hashlib.sha1(f"{camera_id}|{rule_id}|test|{now}".encode()).hexdigest()[:20]
    return {
        "schema_version": 1,
        "id": aid,
        "camera_id": camera_id,
        "rule_id": rule_id,
        "rule_type": "zone_intrusion",
        "status": "started",
        "severity": "info",
        "label": "person",
        "track_id": None,
        "started_at": round(now, 6),
        "ended_at": None,
        "updated_at": round(now, 6),
        "frame_seq": 0,
        "epoch": int(now * 1000),
        "box": [0.1, 0.2, 0.3, 0.8],
        "confidence": 0.9,
        "count": None,
        "zone": None,
        "details": {"test": True},
    }
