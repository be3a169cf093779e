"""What every console request shares: the config, the Redis clients, the users, the live views of
the camera registry and of the rules, and one Kafka producer; plus the request dependencies that
say who is calling and whether they may.
"""

from __future__ import annotations

import hmac
import logging
import re
import threading
from typing import TYPE_CHECKING, Any

import redis
import redis.asyncio as aredis
from fastapi import Depends, HTTPException, Request
from fastapi.concurrency import run_in_threadpool

from alerts.rules.config import RuleConfig
from alerts.rules_topic import RULES
from alerts.store import AlertStore
from pipeline.cameras.registry import CAMERAS
from pipeline.cameras.spec import CameraSpec
from pipeline.common.config import ConfigError
from pipeline.common.kafka import ensure_topics, make_producer
from pipeline.common.redis import RedisKeys, warn_if_password_unused
from pipeline.common.urls import mask_url
from pipeline.console.auth import Principal, Role, UserStore
from pipeline.console.topic_view import TopicView
from pipeline.record.index import SegmentIndex

if TYPE_CHECKING:  # the root config imports this package's config section
    from pipeline.config import VigilConfig

log = logging.getLogger(__name__)

SESSION_COOKIE = "vigil_session"
CSRF_HEADER = "X-CSRF-Token"
_SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}


def console_client_name(key_prefix: str) -> str:
    """The name the console's Redis connections carry (CLIENT LIST tells them from the
    pipeline's); Redis refuses spaces and non-ASCII in names, so those become '_'."""
    return "vigil-console@" + re.sub(r"[^!-~]", "_", key_prefix)


def _bounded_clients(cfg: VigilConfig) -> tuple[redis.Redis, aredis.Redis]:
    """The console's own Redis clients, each on a BlockingConnectionPool of at most
    ``console.redis_max_connections`` (a caller waits ``redis_pool_timeout_s`` for a free one,
    then gets 503): open streams and busy pages cannot take the connections Redis allows the
    pipeline, even when the console runs inside ``vigil run``."""
    rc, cc = cfg.redis, cfg.console
    url = rc.url.get_secret_value()
    kwargs: dict[str, Any] = {
        **rc.client_kwargs(),  # timeouts and the console's ACL login
        "max_connections": cc.redis_max_connections,
        "timeout": cc.redis_pool_timeout_s,
        "client_name": console_client_name(rc.key_prefix),
    }
    try:
        sync = redis.Redis(connection_pool=redis.BlockingConnectionPool.from_url(url, **kwargs))
        async_ = aredis.Redis(connection_pool=aredis.BlockingConnectionPool.from_url(url, **kwargs))
    except ValueError as e:  # its text may quote a piece of the password
        raise ConfigError(
            f"redis.url {mask_url(url)!r} is not a Redis URL ({type(e).__name__}); "
            "percent-encode '/', '?', '#' and '@' in the password"
        ) from None
    secret = rc.secret()
    warn_if_password_unused(
        sync, url, rc.username, secret.get_secret_value() if secret is not None else None
    )
    return sync, async_


class ConsoleState:
    """Created once per app; :meth:`start` connects the views, :meth:`close` stops them."""

    def __init__(self, cfg: VigilConfig) -> None:
        self.cfg = cfg
        self.keys = RedisKeys(cfg.redis.key_prefix)
        self.redis, self.aredis = _bounded_clients(cfg)
        self.users = UserStore(cfg.redis, self.redis, max_verifying=cfg.console.login_concurrency)
        self.store = AlertStore(cfg.redis, client=self.redis)
        self.segments = SegmentIndex(self.redis, self.keys)  # the recordings' index
        self.cameras: TopicView[CameraSpec] = TopicView(cfg.kafka, CAMERAS, "cameras")
        self.rules: TopicView[RuleConfig] = TopicView(cfg.kafka, RULES, "rules")
        self._producer = None
        self._producer_lock = threading.Lock()
        self._started = False
        self._closed = False

    def start(self) -> ConsoleState:
        if self._started:
            return self
        self._started = True

        def topics_then_views() -> None:  # off the event loop: Kafka may be slow or away
            try:
                ensure_topics(self.cfg.kafka)
            except Exception as e:  # noqa: BLE001 - the views retry; /readyz reports it
                log.warning("console: cannot create Vigil's topics now (%s)", e)
            with self._producer_lock:
                if self._closed:  # closed while Kafka was slow: start nothing
                    return
                self.cameras.start()
                self.rules.start()

        threading.Thread(target=topics_then_views, name="console-start", daemon=True).start()
        return self

    def kafka_ready(self) -> bool:
        return self.cameras.connected() and self.rules.connected()

    def producer(self):
        """One producer for the console's writes (alerts' review events), made on first use."""
        with self._producer_lock:
            if self._producer is None:
                self._producer = make_producer(self.cfg.kafka, "console", max_block_ms=10_000)
            return self._producer

    def rules_for(self, camera_id: str) -> list[RuleConfig]:
        rules = self.rules.items.values() if self.rules.ready.is_set() else self.cfg.alerts.rules
        return [r for r in rules if r.enabled and r.applies_to(camera_id)]

    def close(self) -> None:
        with self._producer_lock:
            self._closed = True
        self.cameras.stop()
        self.rules.stop()
        if self._producer is not None:
            try:
                self._producer.close(timeout=5)
            except Exception:  # noqa: BLE001 - shutting down
                log.debug("console producer close failed", exc_info=True)
        self.redis.close()


# -- request dependencies ------------------------------------------------------------------------


def state(request: Request) -> ConsoleState:
    return request.app.state.console


def _principal(request: Request, st: ConsoleState) -> Principal | None:
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return st.users.token(auth[7:].strip())
    sid = request.cookies.get(SESSION_COOKIE)
    if sid:
        return st.users.session(sid, st.cfg.console.session_ttl_s)
    return None


def principal(request: Request, st: ConsoleState = Depends(state)) -> Principal:
    """The caller; 401 when not logged in; 403 when a cookie-authenticated request that changes
    something lacks the session's CSRF token."""
    who = _principal(request, st)
    if who is None:
        raise HTTPException(401, "not logged in (POST /api/login, or an API token)")
    if who.via == "session" and request.method not in _SAFE_METHODS:
        sent = request.headers.get(CSRF_HEADER, "")
        if not who.csrf or not hmac.compare_digest(sent, who.csrf):
            raise HTTPException(403, f"CSRF token missing or wrong (header {CSRF_HEADER})")
    request.state.principal = who  # the audit trail's "who" (pipeline/console/audit.py)
    return who


def require(role: Role):
    """Dependency: the caller, who must have at least ``role``."""

    def check(who: Principal = Depends(principal)) -> Principal:
        if not who.may(role):
            raise HTTPException(403, f"needs role {role} (you are {who.role})")
        return who

    return check


async def session_still_valid(st: ConsoleState, who: Principal, role: Role = "viewer") -> bool:
    """Whether the session or token that opened a long response (SSE, MJPEG) still stands and
    still has ``role``: streams call it now and then, as a logout, revocation, password or role
    change or removal must end them too. The Redis reads run off the event loop."""
    return await run_in_threadpool(st.users.still_valid, who, role)


def client_addr(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def jsonable_rule(rule: RuleConfig) -> dict[str, Any]:
    return rule.model_dump(mode="json", exclude_none=True)


# The role checks, made once (FastAPI caches a dependency per request by its function).
as_operator = require("operator")
as_admin = require("admin")
