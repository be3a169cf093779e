"""What every console request shares: the config, the Redis clients, the users, the live views of
the camera registry and of the rules, and one Kafka producer; plus the request dependencies that
say who is calling and whether they may.
"""

from __future__ import annotations

import hmac
import json
import logging
import threading
from typing import TYPE_CHECKING, Any

import redis
import redis.asyncio as aredis
from fastapi import Depends, HTTPException, Request

from alerts.rules.config import RuleConfig
from alerts.rules_registry import validate_rule
from alerts.store import AlertStore
from pipeline.common.kafka import ensure_topics, make_producer
from pipeline.common.redis import RedisKeys, redis_client
from pipeline.console.auth import Principal, Role, UserStore
from pipeline.console.topic_view import TopicView
from pipeline.ingest.camera import CameraSpec
from pipeline.ingest.registry import spec_from_record

if TYPE_CHECKING:  # the root config imports this package's config section
    from pipeline.config import VigilConfig

log = logging.getLogger(__name__)

SESSION_COOKIE = "vigil_session"
CSRF_HEADER = "X-CSRF-Token"
_SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}


def _parse_camera(key: bytes | None, value: bytes) -> CameraSpec:
    spec = spec_from_record(key, value)
    if spec is None:  # not reached: tombstones are handled by the view
        raise ValueError("tombstone")
    return spec


def _parse_rule(key: bytes | None, value: bytes) -> RuleConfig:
    try:
        raw = json.loads(value)
    except ValueError as e:
        raise ValueError(f"not JSON: {e}") from None
    rule = validate_rule(raw)
    if key is not None and key.decode(errors="replace") != rule.id:
        raise ValueError(f"key {key!r} does not match the rule's id {rule.id!r}")
    return rule


class ConsoleState:
    """Created once per app; :meth:`start` connects the views, :meth:`close` stops them."""

    def __init__(self, cfg: VigilConfig) -> None:
        self.cfg = cfg
        self.keys = RedisKeys(cfg.redis.key_prefix)
        self.redis: redis.Redis = redis_client(cfg.redis)
        self.aredis: aredis.Redis = aredis.Redis.from_url(
            cfg.redis.url.get_secret_value(), **cfg.redis.client_kwargs()
        )
        self.users = UserStore(cfg.redis, self.redis)
        self.store = AlertStore(cfg.redis, client=self.redis)
        self.cameras: TopicView[CameraSpec] = TopicView(
            cfg.kafka, cfg.kafka.topics.cameras, _parse_camera, "cameras"
        )
        self.rules: TopicView[RuleConfig] = TopicView(
            cfg.kafka, cfg.kafka.topics.rules, _parse_rule, "rules"
        )
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
    return who


def require(role: Role):
    """Dependency: the caller, who must have at least ``role``."""

    def check(who: Principal = Depends(principal)) -> Principal:
        if not who.may(role):
            raise HTTPException(403, f"needs role {role} (you are {who.role})")
        return who

    return check


def client_addr(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def jsonable_rule(rule: RuleConfig) -> dict[str, Any]:
    return rule.model_dump(mode="json", exclude_none=True)


# The role checks, made once (FastAPI caches a dependency per request by its function).
as_operator = require("operator")
as_admin = require("admin")
