"""Console users, sessions, API tokens and the login rate limit, all in Redis.

Passwords are argon2id hashes (argon2-cffi: the library that does it right, with its parameters
stored in the hash). Session ids and API tokens are random 256-bit values; Redis keeps only their
SHA-256, so a copy of the database does not log anyone in. Every key is built by
:class:`pipeline.common.redis.RedisKeys` (``{p}console:...``).
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from dataclasses import dataclass
from typing import Literal

import redis
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from pipeline.common.redis import RedisConfig, RedisKeys, redis_client

Role = Literal["viewer", "operator", "admin"]
ROLES: tuple[Role, ...] = ("viewer", "operator", "admin")
_RANK = {role: i for i, role in enumerate(ROLES)}
_USER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
MIN_PASSWORD = 8

_hasher = PasswordHasher()
# Verified against when the user does not exist, so an unknown name costs as long as a wrong
# password (no user enumeration by timing).
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


class AuthError(ValueError):
    """A user, password or role that cannot be used; the message names it."""


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a user by session (needs the CSRF token) or by API token (does not)."""

    user: str
    role: Role
    csrf: str | None = None  # the session's CSRF token; None for API tokens
    via: Literal["session", "token"] = "session"

    def may(self, role: Role) -> bool:
        return _RANK[self.role] >= _RANK[role]


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


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


class UserStore:
    """Users (``console:user:<name>``), sessions and API tokens."""

    def __init__(self, cfg: RedisConfig, client: redis.Redis | None = None) -> None:
        self.keys = RedisKeys(cfg.key_prefix)
        self.client = client if client is not None else redis_client(cfg)

    # -- users -------------------------------------------------------------------------------

    def _user_key(self, name: str) -> str:
        return self.keys.console(f"user:{name}")

    def add(self, name: str, password: str, role: str, *, replace: bool = True) -> None:
        """Create the user, or set a new password and role (``replace``)."""
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
                "created_at": repr(time.time()),
            },
        )

    def remove(self, name: str) -> bool:
        return bool(self.client.delete(self._user_key(check_user_name(name))))

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
        """The user's role when the password is right, else None (same cost either way)."""
        fields = None
        if isinstance(name, str) and _USER.match(name):
            fields = self.client.hmget(self._user_key(name), "password_hash", "role")
        stored = fields[0].decode() if fields and fields[0] else _DUMMY_HASH
        try:
            _hasher.verify(stored, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return None
        if not fields or not fields[0] or fields[1] is None:
            return None
        if _hasher.check_needs_rehash(stored):
            self.client.hset(self._user_key(name), "password_hash", _hasher.hash(password))
        return check_role(fields[1].decode())

    def role_of(self, name: str) -> Role | None:
        raw = self.client.hget(self._user_key(name), "role")
        return None if raw is None else check_role(raw.decode())

    # -- sessions ----------------------------------------------------------------------------

    def _session_key(self, session_id: str) -> str:
        return self.keys.console(f"session:{_digest(session_id)}")

    def new_session(self, user: str, role: Role, ttl_s: int) -> tuple[str, Principal]:
        session_id = secrets.token_urlsafe(32)
        csrf = secrets.token_urlsafe(32)
        key = self._session_key(session_id)
        pipe = self.client.pipeline(transaction=True)
        pipe.hset(key, mapping={"user": user, "role": role, "csrf": csrf})
        pipe.expire(key, ttl_s)
        pipe.execute()
        return session_id, Principal(user, role, csrf, "session")

    def session(self, session_id: str, ttl_s: int) -> Principal | None:
        """The session's principal, its TTL renewed (idle expiry); None when unknown/expired or
        when its user was removed (its role is read from the user, so a demotion applies now)."""
        key = self._session_key(session_id)
        user, csrf = self.client.hmget(key, "user", "csrf")
        if user is None or csrf is None:
            return None
        role = self.role_of(user.decode())
        if role is None:
            self.client.delete(key)
            return None
        self.client.expire(key, ttl_s)
        return Principal(user.decode(), role, csrf.decode(), "session")

    def end_session(self, session_id: str) -> None:
        self.client.delete(self._session_key(session_id))

    # -- API tokens --------------------------------------------------------------------------

    def _token_key(self, token: str) -> str:
        return self.keys.console(f"token:{_digest(token)}")

    def new_token(self, user: str, name: str) -> str:
        """A new API token for ``user`` (it acts with the user's current role); shown once."""
        if self.role_of(user) is None:
            raise AuthError(f"no such user {user!r}")
        token = "vgl_" + secrets.token_urlsafe(32)
        self.client.hset(
            self._token_key(token),
            mapping={"user": user, "name": name[:64], "created_at": repr(time.time())},
        )
        return token

    def token(self, token: str) -> Principal | None:
        user = self.client.hget(self._token_key(token), "user")
        if user is None:
            return None
        role = self.role_of(user.decode())
        return None if role is None else Principal(user.decode(), role, None, "token")

    # -- login rate limit --------------------------------------------------------------------

    ADDRESS_FACTOR = 4  # an address may fail for this many users' worth (offices share one)

    def _login_keys(self, user: str, client_addr: str) -> list[str]:
        window = int(time.time() // 60)
        return [
            self.keys.console(f"login:user:{_digest(str(user))[:32]}:{window}"),
            self.keys.console(f"login:addr:{client_addr}:{window}"),
        ]

    def login_blocked(self, user: str, client_addr: str, per_minute: int) -> bool:
        """True when this minute's failed logins for the name reach ``per_minute``, or those
        from the address reach ``ADDRESS_FACTOR`` times that (fixed one-minute windows)."""
        by_user, by_addr = self.client.mget(self._login_keys(user, client_addr))
        return int(by_user or 0) >= per_minute or int(by_addr or 0) >= (
            per_minute * self.ADDRESS_FACTOR
        )

    def login_failed(self, user: str, client_addr: str) -> None:
        pipe = self.client.pipeline(transaction=False)
        for key in self._login_keys(user, client_addr):
            pipe.incr(key)
            pipe.expire(key, 120)
        pipe.execute()
