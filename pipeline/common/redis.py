"""Redis: the connection settings, the one client factory, and every key name Vigil uses.

Every key starts with ``redis.key_prefix`` (default ``vigil:``); docs/redis.md describes them.
Keys are built here only, so the alert service, the console and retraining agree on them.
"""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

import redis
from pydantic import Field, SecretStr

from pipeline.common.config import ConfigError, StrictModel
from pipeline.common.urls import mask_url

log = logging.getLogger(__name__)


class RedisConfig(StrictModel):
    url: SecretStr = SecretStr("redis://127.0.0.1:6379/0")
    key_prefix: str = "vigil:"
    socket_timeout_s: float = Field(5.0, gt=0)
    stream_maxlen: int = Field(100_000, ge=100)
    camera_stream_maxlen: int = Field(10_000, ge=100)
    # The audit trail (who changed a camera, rule, user or model): entries kept, oldest trimmed
    audit_maxlen: int = Field(100_000, ge=100)
    snapshot_ttl_s: int = Field(7 * 24 * 3600, ge=60)
    frame_ttl_s: int = Field(120, ge=5, description="recent frames kept for snapshots")
    store_frames: bool = True


def redis_client(cfg: RedisConfig) -> redis.Redis:
    """Explicit timeouts everywhere; the URL (which may hold a password) is never logged."""
    url = cfg.url.get_secret_value()
    try:
        client = redis.Redis.from_url(
            url,
            socket_timeout=cfg.socket_timeout_s,
            socket_connect_timeout=cfg.socket_timeout_s,
            health_check_interval=30,
        )
    except ValueError as e:  # its text may quote a piece of the password
        raise ConfigError(
            f"redis.url {mask_url(url)!r} is not a Redis URL ({type(e).__name__}); "
            "percent-encode '/', '?', '#' and '@' in the password"
        ) from None
    warn_if_password_unused(client, url)
    warn_if_insecure_transport(url)
    return client


_TRANSPORT_WARNED: set[str] = set()
_LOOPBACK = {"127.0.0.1", "::1", "localhost"}


def warn_if_insecure_transport(url: str) -> bool:
    """Warn once per server when ``redis.url`` turns certificate checks off
    (``rediss://...?ssl_cert_reqs=none``) or sends a password over plain TCP to another host
    (``redis://``): accepted silently, a test rig's setting reaches production unnoticed.
    Returns whether it warned. The line names the server, never the password."""
    try:
        parts = urlsplit(url)
        where = f"{parts.hostname}:{parts.port or 6379}"
    except ValueError:
        return False
    scheme = parts.scheme.lower()
    if scheme == "rediss" and "ssl_cert_reqs=none" in parts.query.lower():
        problem = "ssl_cert_reqs=none: the server's certificate is not checked"
    elif scheme == "redis" and parts.password and parts.hostname not in _LOOPBACK:
        problem = "the password goes over plain TCP (redis://); use rediss://"
    else:
        return False
    if where in _TRANSPORT_WARNED:
        return False
    _TRANSPORT_WARNED.add(where)
    log.warning("Redis at %s: insecure redis.url: %s", where, problem)
    return True


_AUTH_CHECKED: set[str] = set()


def warn_if_password_unused(client: redis.Redis, url: str) -> bool:
    """Warn (once per server) when ``url`` carries a password but the server asks for none:
    redis-py then connects without a word, and whoever reaches the server needs no password.
    Returns whether it warned. Unreachable servers are left to the caller's own error."""
    try:
        parts = urlsplit(url)
        password, where = parts.password, f"{parts.hostname}:{parts.port or 6379}"
    except ValueError:
        return False
    if not password or where in _AUTH_CHECKED:
        return False
    try:
        client.execute_command("AUTH", *([parts.username] if parts.username else []), password)
    except redis.AuthenticationError as e:
        if "without any password configured" not in str(e):
            return False
    except redis.RedisError:
        return False  # not reachable now: nothing to say about its AUTH yet
    else:
        _AUTH_CHECKED.add(where)
        return False
    _AUTH_CHECKED.add(where)
    log.warning(
        "Redis at %s has no password set but redis.url carries one: the password is not used "
        "and anyone who reaches the server needs none; set requirepass (or an ACL user) there",
        where,
    )
    return True


class RedisKeys:
    """Key names under one prefix."""

    __slots__ = ("prefix",)

    def __init__(self, prefix: str = "vigil:") -> None:
        self.prefix = prefix

    def alerts_stream(self, camera_id: str | None = None) -> str:
        """The alert event stream, all cameras or one camera's."""
        p = self.prefix
        return f"{p}alerts" if camera_id is None else f"{p}alerts:{camera_id}"

    def alert(self, alert_id: str) -> str:
        """Hash: the alert's latest state."""
        return f"{self.prefix}alert:{alert_id}"

    def snapshot(self, alert_id: str) -> str:
        """The alert's JPEG snapshot."""
        return f"{self.prefix}snapshot:{alert_id}"

    def checkpoint(self, group: str, topic: str, partition: int) -> str:
        """Alert-service rule state + next offset for one Kafka partition."""
        return f"{self.prefix}state:{group}:{topic}:{partition}"

    def frame(self, camera_id: str, epoch: int, seq: int) -> str:
        """A recent frame (JPEG, short TTL) for snapshots and collection."""
        return f"{self.prefix}frame:{camera_id}:{epoch}:{seq}"

    def source_frame(self, alert_id: str) -> str:
        """The alert's triggering frame as the camera saw it (JPEG, no drawing), kept as long as
        the snapshot: a reviewed alert adds it to the retraining dataset."""
        return f"{self.prefix}source:{alert_id}"

    def live(self, camera_id: str) -> str:
        """Hash: the camera's newest frame for the console (``jpeg``, ``detections`` JSON,
        ``capture_ts``, ``seq``, ``width``, ``height``, ``worker``), short TTL."""
        return f"{self.prefix}live:{camera_id}"

    def camera_status(self, camera_id: str) -> str:
        """Hash: the owning worker's view of the camera (state, last error, fps...), short TTL."""
        return f"{self.prefix}camera_status:{camera_id}"

    def console(self, what: str) -> str:
        """Console users, sessions, API tokens and login counters (``console:<what>``)."""
        return f"{self.prefix}console:{what}"

    def audit(self) -> str:
        """Stream: the audit trail, one entry per change made in the console or the CLI
        (``at``, ``who``, ``via``, ``address``, ``action``, ``target``, ``details`` JSON)."""
        return f"{self.prefix}audit"

    def models(self, name: str) -> str:
        """Base of the model registry's keys for model ``name`` (``...:<what>`` appended)."""
        return f"{self.prefix}models:{name}:"


def frame_key(prefix: str, camera_id: str, epoch: int, seq: int) -> str:
    return RedisKeys(prefix).frame(camera_id, epoch, seq)
