"""Redis: the connection settings, the one client factory, and every key name Vigil uses.

Every key starts with ``redis.key_prefix`` (default ``vigil:``); docs/redis.md describes them.
Keys are built here only, so the alert service, the console and retraining agree on them.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal, get_args
from urllib.parse import urlsplit

import redis
from pydantic import Field, PrivateAttr, SecretStr, model_validator

from pipeline.common.config import ConfigError, StrictModel
from pipeline.common.urls import mask_url

log = logging.getLogger(__name__)


# The processes that talk to Redis, each of which may log in as its own ACL user (redis_acl.py).
Component = Literal["ingest", "alerts", "console", "notifier", "models", "recorder"]
COMPONENTS: tuple[str, ...] = get_args(Component)


class _Login(StrictModel):
    """A Redis ACL login: user name and password, or a file holding the password (a mounted
    secret, services.sh's ``redis/secrets/<user>``) so it sits in neither the YAML nor a command
    line. The file is read once, when the config is loaded, and kept out of ``model_dump``:
    a dumped config names the file, never its content."""

    username: str | None = None
    password: SecretStr | None = None
    password_file: str | None = None
    _file_password: SecretStr | None = PrivateAttr(None)

    @model_validator(mode="after")
    def _read_password_file(self) -> _Login:
        if self.password_file is not None:
            if self.password is not None:
                raise ValueError("password_file: give password or password_file, not both")
            try:
                text = Path(self.password_file).read_text().strip()
            except OSError as e:
                raise ValueError(
                    f"password_file: cannot read {self.password_file}: {e.strerror}"
                ) from None
            self._file_password = SecretStr(text)
        return self

    def secret(self) -> SecretStr | None:
        """The password: ``password``, or what ``password_file`` held."""
        return self.password if self.password is not None else self._file_password


class RedisCredentials(_Login):
    """One component's Redis ACL user: ``redis.users.<component>``."""

    username: str = Field(min_length=1)


class RedisConfig(_Login):
    url: SecretStr = SecretStr("redis://127.0.0.1:6379/0")
    # username / password / password_file (from _Login): an ACL user for every component (or
    # none: the URL's user, else ``default``); ``users``: one per component, which the
    # composition layer picks (VigilConfig.for_component).
    users: dict[Component, RedisCredentials] = {}
    key_prefix: str = "vigil:"
    socket_timeout_s: float = Field(5.0, gt=0)
    stream_maxlen: int = Field(100_000, ge=100)
    camera_stream_maxlen: int = Field(10_000, ge=100)
    # The audit trail (who changed a camera, rule, user or model): entries kept, oldest trimmed
    audit_maxlen: int = Field(100_000, ge=100)
    snapshot_ttl_s: int = Field(7 * 24 * 3600, ge=60)
    frame_ttl_s: int = Field(120, ge=5, description="recent frames kept for snapshots")
    store_frames: bool = True

    @model_validator(mode="after")
    def _one_place_for_the_login(self) -> RedisConfig:
        if self.users or self.username is not None or self.secret() is not None:
            try:
                parts = urlsplit(self.url.get_secret_value())
                in_url = parts.username or parts.password
            except ValueError:
                in_url = False  # redis_client names the bad URL
            if in_url:
                raise ValueError(
                    "url: give the user and password in the URL or in username / password_file "
                    "(and users), not both"
                )
        return self

    def for_component(self, component: Component) -> RedisConfig:
        """This config with ``component``'s own ACL user from ``users`` (unchanged without one),
        so a process logs in with only what its component may do."""
        if component not in COMPONENTS:
            raise ValueError(f"unknown Redis component {component!r}: one of {COMPONENTS}")
        creds = self.users.get(component)
        if creds is None:
            return self
        login = {k: getattr(creds, k) for k in ("username", "password", "password_file")}
        out = self.model_copy(update={**login, "users": {}})
        out._file_password = creds._file_password
        return out

    def password_text(self) -> str | None:
        """The password in use (``password``, its file, or the URL's), for scrubbing it from
        error texts."""
        secret = self.secret()
        if secret is not None:
            return secret.get_secret_value() or None
        try:
            return urlsplit(self.url.get_secret_value()).password or None
        except ValueError:
            return None

    def client_kwargs(self) -> dict[str, Any]:
        """Timeouts and the ACL login shared by the sync and asyncio clients."""
        kw: dict[str, Any] = {
            "socket_timeout": self.socket_timeout_s,
            "socket_connect_timeout": self.socket_timeout_s,
            "health_check_interval": 30,
        }
        if self.username is not None:
            kw["username"] = self.username
        secret = self.secret()
        if secret is not None:
            kw["password"] = secret.get_secret_value()
        return kw


def redis_client(cfg: RedisConfig) -> redis.Redis:
    """Explicit timeouts everywhere; the URL (which may hold a password) is never logged."""
    url = cfg.url.get_secret_value()
    try:
        client = redis.Redis.from_url(url, **cfg.client_kwargs())
    except ValueError as e:  # its text may quote a piece of the password
        raise ConfigError(
            f"redis.url {mask_url(url)!r} is not a Redis URL ({type(e).__name__}); "
            "percent-encode '/', '?', '#' and '@' in the password"
        ) from None
    secret = cfg.secret()
    warn_if_password_unused(
        client, url, cfg.username, secret.get_secret_value() if secret is not None else None
    )
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


def warn_if_password_unused(
    client: redis.Redis,
    url: str,
    username: str | None = None,
    password: str | None = None,
) -> bool:
    """Warn (once per server) when ``url`` (or ``password``: the config's, from ``password`` or
    ``password_file``) carries a password but the server asks for none: redis-py then connects
    without a word, and whoever reaches the server needs no password. Returns whether it warned.
    Unreachable servers are left to the caller's own error."""
    given = "redis.password_file (or password) gives one" if password else "redis.url carries one"
    try:
        parts = urlsplit(url)
        where = f"{parts.hostname}:{parts.port or 6379}"
        password = password or parts.password
        username = username or parts.username
    except ValueError:
        return False
    if not password or where in _AUTH_CHECKED:
        return False
    try:
        client.execute_command("AUTH", *([username] if username else []), password)
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
        "Redis at %s has no password set but %s: the password is not used and anyone who "
        "reaches the server needs none; set requirepass (or an ACL user) there",
        where,
        given,
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

    def recordings(self, camera_id: str) -> str:
        """Sorted set: the camera's recorded segments (member and score: start in epoch ms)."""
        return f"{self.prefix}recordings:{camera_id}"

    def recording(self, camera_id: str, start_ms: int) -> str:
        """Hash: one recorded segment (``start``, ``end``, ``path``, ``bytes``, ``frames``)."""
        return f"{self.prefix}recording:{camera_id}:{start_ms}"

    def recording_holds(self, camera_id: str) -> str:
        """Sorted set: the stretches of the camera's recordings an alert's clip needs (member:
        ``<alert id>``; score: until when, epoch s); their ranges in :meth:`recording_hold`."""
        return f"{self.prefix}recording-holds:{camera_id}"

    def recording_hold(self, camera_id: str, alert_id: str) -> str:
        """Hash: one hold (``from``, ``to``, ``until``: epoch s on the ``capture_ts`` clock)."""
        return f"{self.prefix}recording-hold:{camera_id}:{alert_id}"

    def models(self, name: str) -> str:
        """Base of the model registry's keys for model ``name`` (``...:<what>`` appended)."""
        return f"{self.prefix}models:{name}:"


def frame_key(prefix: str, camera_id: str, epoch: int, seq: int) -> str:
    return RedisKeys(prefix).frame(camera_id, epoch, seq)
