"""Console users, sessions, API tokens and the login rate limit, all in Redis.

Passwords are argon2id hashes (argon2-cffi: the library that does it right, with its parameters
stored in the hash). Session ids and API tokens are random 256-bit values; Redis keeps only their
SHA-256, so a copy of the database does not log anyone in. Every key is built by
:class:`pipeline.common.redis.RedisKeys` (``{p}console:...``).

Each user carries a random *generation* (``gen``) that every password or role change, removal and
re-adding replaces; sessions and tokens record the generation they were made under and are refused
once it differs, so one ``vigil users add`` (or remove) ends every old session and token at once.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import redis
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from prometheus_client import Counter

from pipeline.common.errors import UserError
from pipeline.common.redis import RedisConfig, RedisKeys, redis_client

Role = Literal["viewer", "operator", "admin"]
ROLES: tuple[Role, ...] = ("viewer", "operator", "admin")
_RANK = {role: i for i, role in enumerate(ROLES)}
_USER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
_TOKEN_ID = re.compile(r"^[0-9a-f]{12}$")
MIN_PASSWORD = 8

_hasher = PasswordHasher()
# Verified against when the user does not exist, so an unknown name costs as long as a wrong
# password (no user enumeration by timing).
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))

PASSWORD_CHECKS = Counter(
    "vigil_console_password_checks_total",
    "Console password verifications (argon2, 64 MiB each) by result; refused logins are not here",
    ["result"],
)
LOGINS_REFUSED = Counter(
    "vigil_console_logins_refused_total",
    "Console logins refused before any password check (throttled: too many attempts; busy: "
    "all password-check slots taken)",
    ["reason"],
)

# Sliding-window attempt counter: one sorted set per key, members scored by time in ms. Either
# every key takes the attempt or none does, so a refused attempt does not count.
_ATTEMPT = """
local now, window, member = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
for i, key in ipairs(KEYS) do
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
  if redis.call('ZCARD', key) >= tonumber(ARGV[3 + i]) then return 0 end
end
for _, key in ipairs(KEYS) do
  redis.call('ZADD', key, now, member)
  redis.call('PEXPIRE', key, window)
end
return 1
"""

# Notes a token's last use only while the token still exists (a revoked one is not re-created).
_TOUCH = """
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('HSET', KEYS[1], 'last_used_at', ARGV[1]) end
"""


class AuthError(UserError, ValueError):
    """A user, password or role that cannot be used; the message names it."""


class LoginBusy(RuntimeError):
    """Every password-check slot stayed taken for the wait; the caller answers 503."""


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a user by session (needs the CSRF token) or by API token (does not).

    ``key`` is the Redis key of the session or token (a digest, not the secret), so a long
    response (a stream) can re-check it with :meth:`UserStore.still_valid`."""

    user: str
    role: Role
    csrf: str | None = None  # the session's CSRF token; None for API tokens
    via: Literal["session", "token"] = "session"
    key: str | None = None

    def may(self, role: Role) -> bool:
        return _RANK[self.role] >= _RANK[role]


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _text(raw: bytes | None) -> str | None:
    return None if raw is None else raw.decode()


def check_user_name(name: str) -> str:
    if not isinstance(name, str) or not _USER.match(name):
        raise AuthError(
            f"user name {name!r}: use 1-64 letters, digits, '_', '.', '@', '-', "
            "starting with a letter or digit"
        )
    return name


def check_role(role: str) -> Role:
    if role not in ROLES:
        raise AuthError(f"role {role!r}: one of {', '.join(ROLES)}")
    return role  # type: ignore[return-value]


def check_token_id(token_id: str) -> str:
    if not isinstance(token_id, str) or not _TOKEN_ID.match(token_id):
        raise AuthError(f"token id {token_id!r}: 12 hex digits, as `vigil users tokens` lists")
    return token_id


class UserStore:
    """Users (``console:user:<name>``), sessions, API tokens and the login throttle.

    ``max_verifying`` bounds the argon2 verifications running at once (each takes 64 MiB and a
    core for tens of milliseconds); ``clock`` is the wall clock (tests move it)."""

    ADDRESS_FACTOR = 4  # an address may fail for this many users' worth (offices share one)
    LOGIN_WINDOW_S = 60.0
    BUSY_WAIT_S = 1.0  # how long a login waits for a password-check slot before 503

    def __init__(
        self,
        cfg: RedisConfig,
        client: redis.Redis | None = None,
        *,
        max_verifying: int = 2,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.keys = RedisKeys(cfg.key_prefix)
        self.client = client if client is not None else redis_client(cfg)
        self.clock = clock
        self._verifying = threading.BoundedSemaphore(max_verifying)
        self._attempt = self.client.register_script(_ATTEMPT)
        self._touch = self.client.register_script(_TOUCH)

    # -- users -------------------------------------------------------------------------------

    def _user_key(self, name: str) -> str:
        return self.keys.console(f"user:{name}")

    def _tokens_key(self, name: str) -> str:
        return self.keys.console(f"tokens:{name}")

    def add(self, name: str, password: str, role: str, *, replace: bool = True) -> None:
        """Create the user, or set a new password and role (``replace``). Either way the user
        gets a new generation: every session and token made before stops working."""
        check_user_name(name)
        check_role(role)
        if not isinstance(password, str) or len(password) < MIN_PASSWORD:
            raise AuthError(f"password of {name!r}: at least {MIN_PASSWORD} characters")
        key = self._user_key(name)
        if not replace and self.client.exists(key):
            raise AuthError(f"user {name!r} exists already")
        self.client.hset(
            key,
            mapping={
                "password_hash": _hasher.hash(password),
                "role": role,
                "created_at": repr(self.clock()),
                "gen": secrets.token_hex(16),
            },
        )

    def remove(self, name: str) -> bool:
        """Delete the user and its tokens (sessions die by the generation check)."""
        check_user_name(name)
        digests = self.client.hvals(self._tokens_key(name))
        pipe = self.client.pipeline(transaction=True)
        pipe.delete(self._user_key(name))
        for digest in digests:
            pipe.delete(self.keys.console(f"token:{digest.decode()}"))
        pipe.delete(self._tokens_key(name))
        return bool(pipe.execute()[0])

    def list(self) -> list[dict[str, str]]:
        out = []
        prefix = self._user_key("")
        for key in self.client.scan_iter(match=f"{prefix}*", count=500):
            name = key.decode()[len(prefix) :]
            role = self.client.hget(key, "role")
            if role is not None:
                out.append({"user": name, "role": role.decode()})
        return sorted(out, key=lambda u: u["user"])

    def authenticate(self, name: str, password: str) -> Role | None:
        """The user's role when the password is right, else None (same cost either way).

        Raises :class:`LoginBusy` when no password-check slot frees within ``BUSY_WAIT_S``."""
        if not self._verifying.acquire(timeout=self.BUSY_WAIT_S):
            LOGINS_REFUSED.labels("busy").inc()
            raise LoginBusy("too many logins being checked at once; try again in a second")
        try:
            return self._authenticate(name, password)
        finally:
            self._verifying.release()

    def _authenticate(self, name: str, password: str) -> Role | None:
        fields = None
        if isinstance(name, str) and _USER.match(name):
            fields = self.client.hmget(self._user_key(name), "password_hash", "role")
        stored = fields[0].decode() if fields and fields[0] else _DUMMY_HASH
        try:
            _hasher.verify(stored, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            PASSWORD_CHECKS.labels("wrong").inc()
            return None
        if not fields or not fields[0] or fields[1] is None:
            PASSWORD_CHECKS.labels("wrong").inc()
            return None
        PASSWORD_CHECKS.labels("ok").inc()
        if _hasher.check_needs_rehash(stored):
            self.client.hset(self._user_key(name), "password_hash", _hasher.hash(password))
        return check_role(fields[1].decode())

    def role_of(self, name: str) -> Role | None:
        raw = self.client.hget(self._user_key(name), "role")
        return None if raw is None else check_role(raw.decode())

    def _generation(self, name: str) -> str:
        """The user's generation; users stored before generations existed get one now."""
        key = self._user_key(name)
        if not self.client.exists(key):
            raise AuthError(f"no such user {name!r}")
        self.client.hsetnx(key, "gen", secrets.token_hex(16))
        gen = self.client.hget(key, "gen")
        if gen is None:  # removed in between
            raise AuthError(f"no such user {name!r}")
        return gen.decode()

    def _resolve(self, key: str, via: Literal["session", "token"]) -> Principal | None:
        """The principal of a stored session or token when it is unexpired and of the user's
        current generation; otherwise None (and the stale record is deleted)."""
        user, gen, expires_at, csrf = (
            _text(v) for v in self.client.hmget(key, "user", "gen", "expires_at", "csrf")
        )
        if user is None:
            return None
        role, user_gen = (_text(v) for v in self.client.hmget(self._user_key(user), "role", "gen"))
        valid = (
            role in ROLES
            and gen is not None
            and user_gen is not None
            and hmac.compare_digest(gen, user_gen)
            and expires_at is not None
            and self.clock() < float(expires_at)
            and (via == "token" or csrf is not None)
        )
        if not valid:
            self._forget(key, user, via)
            return None
        return Principal(user, check_role(role), csrf, via, key)  # type: ignore[arg-type]

    def _forget(self, key: str, user: str, via: str) -> None:
        token_id = self.client.hget(key, "id") if via == "token" else None
        self.client.delete(key)
        if token_id is not None:
            self.client.hdel(self._tokens_key(user), token_id)

    def still_valid(self, who: Principal, role: Role | None = None) -> bool:
        """Whether the session or token ``who`` came with still stands (not logged out, revoked,
        expired, or outdated by a password/role change or removal) and, given ``role``, still
        has it. For responses that outlive the request check, such as streams; slides nothing."""
        if who.key is None:
            return False
        now = self._resolve(who.key, who.via)
        return now is not None and now.user == who.user and (role is None or now.may(role))

    # -- sessions ----------------------------------------------------------------------------

    def _session_key(self, session_id: str) -> str:
        return self.keys.console(f"session:{_digest(session_id)}")

    def new_session(
        self, user: str, role: Role, ttl_s: int, max_age_s: int = 12 * 3600
    ) -> tuple[str, Principal]:
        """A session that ends after ``ttl_s`` idle or ``max_age_s`` after login, whichever is
        first, or when the user's generation changes."""
        gen = self._generation(user)
        session_id = secrets.token_urlsafe(32)
        csrf = secrets.token_urlsafe(32)
        key = self._session_key(session_id)
        now = self.clock()
        pipe = self.client.pipeline(transaction=True)
        pipe.hset(
            key,
            mapping={
                "user": user,
                "csrf": csrf,
                "gen": gen,
                "created_at": repr(now),
                "expires_at": repr(now + max_age_s),
            },
        )
        pipe.expire(key, max(1, min(ttl_s, max_age_s)))
        pipe.execute()
        return session_id, Principal(user, role, csrf, "session", key)

    def session(self, session_id: str, ttl_s: int) -> Principal | None:
        """The session's principal, its idle TTL renewed (never past its absolute end); None when
        unknown, expired, or made before the user's last password/role change or removal. The
        role is the user's current one."""
        key = self._session_key(session_id)
        who = self._resolve(key, "session")
        if who is None:
            return None
        expires_at = self.client.hget(key, "expires_at")
        left = float(expires_at) - self.clock() if expires_at is not None else 0.0
        self.client.expire(key, max(1, int(min(ttl_s, left))))
        return who

    def end_session(self, session_id: str) -> None:
        self.client.delete(self._session_key(session_id))

    # -- API tokens --------------------------------------------------------------------------

    def _token_key(self, token: str) -> str:
        return self.keys.console(f"token:{_digest(token)}")

    def new_token(self, user: str, name: str, ttl_s: int) -> tuple[str, dict[str, object]]:
        """A new API token for ``user`` (it acts with the user's current role) valid ``ttl_s``;
        returns the token (show it once, it is not stored) and its listing entry."""
        gen = self._generation(user)
        token = "vgl_" + secrets.token_urlsafe(32)
        digest = _digest(token)
        token_id = secrets.token_hex(6)
        now = self.clock()
        info = {
            "id": token_id,
            "name": name[:64],
            "created_at": now,
            "expires_at": now + ttl_s,
            "last_used_at": None,
        }
        key = self.keys.console(f"token:{digest}")
        pipe = self.client.pipeline(transaction=True)
        pipe.hset(
            key,
            mapping={
                "user": user,
                "gen": gen,
                "id": token_id,
                "name": name[:64],
                "created_at": repr(now),
                "expires_at": repr(now + ttl_s),
            },
        )
        pipe.expire(key, ttl_s)
        pipe.hset(self._tokens_key(user), token_id, digest)
        pipe.execute()
        return token, info

    def token(self, token: str) -> Principal | None:
        """The token's principal when valid (its ``last_used_at`` noted, once a minute at most)."""
        key = self._token_key(token)
        who = self._resolve(key, "token")
        if who is None:
            return None
        now = self.clock()
        last = self.client.hget(key, "last_used_at")
        if last is None or now - float(last) >= 60:
            self._touch(keys=[key], args=[repr(now)])
        return who

    def tokens(self, user: str) -> list[dict[str, object]]:
        """The user's valid tokens, oldest first: id, name, created, expires, last used (never
        the secret). Expired, revoked and outdated ones are dropped from the index here."""
        check_user_name(user)
        out: list[dict[str, object]] = []
        for token_id, digest in self.client.hgetall(self._tokens_key(user)).items():
            key = self.keys.console(f"token:{digest.decode()}")
            if self._resolve(key, "token") is None:
                self.client.hdel(self._tokens_key(user), token_id)
                continue
            raw = {k.decode(): v.decode() for k, v in self.client.hgetall(key).items()}
            last = raw.get("last_used_at")
            out.append(
                {
                    "id": raw["id"],
                    "name": raw.get("name", ""),
                    "created_at": float(raw["created_at"]),
                    "expires_at": float(raw["expires_at"]),
                    "last_used_at": None if last is None else float(last),
                }
            )
        return sorted(out, key=lambda t: t["created_at"])  # type: ignore[arg-type, return-value]

    def revoke_token(self, user: str, token_id: str) -> bool:
        """Delete the user's token ``token_id``; False when the user has no such token."""
        check_user_name(user)
        check_token_id(token_id)
        digest = self.client.hget(self._tokens_key(user), token_id)
        if digest is None:
            return False
        pipe = self.client.pipeline(transaction=True)
        pipe.delete(self.keys.console(f"token:{digest.decode()}"))
        pipe.hdel(self._tokens_key(user), token_id)
        pipe.execute()
        return True

    # -- login rate limit --------------------------------------------------------------------

    def _login_keys(self, user: str, client_addr: str) -> tuple[str, str]:
        return (
            self.keys.console(f"login:user:{_digest(f'{user}|{client_addr}')[:32]}"),
            self.keys.console(f"login:addr:{_digest(client_addr)[:32]}"),
        )

    def login_attempt(self, user: str, client_addr: str, per_minute: int) -> str | None:
        """Count a login attempt *before* its password is checked, atomically: an attempt id, or
        None when the last minute (sliding) already holds ``per_minute`` attempts for this name
        from this address, or ``ADDRESS_FACTOR`` times that from the address. Per name *and*
        address, so someone guessing from elsewhere cannot lock the real user out."""
        attempt = secrets.token_hex(8)
        taken = self._attempt(
            keys=list(self._login_keys(user, client_addr)),
            args=[
                int(self.clock() * 1000),
                int(self.LOGIN_WINDOW_S * 1000),
                attempt,
                per_minute,
                per_minute * self.ADDRESS_FACTOR,
            ],
        )
        if not taken:
            LOGINS_REFUSED.labels("throttled").inc()
            return None
        return attempt

    def login_succeeded(self, user: str, client_addr: str, attempt: str) -> None:
        """The right password: this name's failures from this address are forgiven; the attempt
        no longer counts against the address."""
        by_user, by_addr = self._login_keys(user, client_addr)
        pipe = self.client.pipeline(transaction=False)
        pipe.delete(by_user)
        pipe.zrem(by_addr, attempt)
        pipe.execute()

    def login_not_checked(self, user: str, client_addr: str, attempt: str) -> None:
        """The password was never checked (no slot free): the attempt does not count."""
        pipe = self.client.pipeline(transaction=False)
        for key in self._login_keys(user, client_addr):
            pipe.zrem(key, attempt)
        pipe.execute()
