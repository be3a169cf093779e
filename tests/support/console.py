"""The console as its HTTP tests meet it: the real app served by uvicorn on a free port against
the test Kafka and Redis, users of each role, and logged-in httpx clients.

A test module keeps a thin fixture around :func:`console_stack`, giving it the module's own
``console:`` settings (and any other config section); the stack's Redis keys are deleted when the
module is done. The server is real (not a TestClient) because the tests need what only a socket
gives: a client address per connection (login limits per address), streams read while the
session changes, TLS."""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

from pipeline.common.kafka import ensure_topics
from pipeline.config import VigilConfig, parse_config
from pipeline.console.auth import UserStore
from pipeline.console.server import ConsoleServer
from tests.support.config import make_config_dict
from tests.support.net import free_port

PASSWORD = "correct horse battery"
ROLES = ("viewer", "operator", "admin")


def wait_ready(base: str, timeout_s: float = 60.0) -> None:
    """Until /readyz says Kafka and Redis are reachable (the console connects in the background)."""
    deadline = time.monotonic() + timeout_s
    while httpx.get(f"{base}/readyz", timeout=10).status_code != 200:
        assert time.monotonic() < deadline, "console not ready"
        time.sleep(0.2)


@dataclass(repr=False)
class ConsoleStack:
    """One running console: its config (the object the app reads, so a test may change a setting
    for a while), the server, the YAML it was made from (for ``vigil ... -c``), and a
    :class:`UserStore` of the test's own (its own Redis client)."""

    cfg: VigilConfig
    server: ConsoleServer
    users: UserStore
    config_file: str

    @property
    def base(self) -> str:
        return self.server.url.rstrip("/")

    def __repr__(self) -> str:  # short, in assertion messages
        return f"ConsoleStack({self.base}, prefix {self.cfg.redis.key_prefix!r})"

    @property
    def server_users(self) -> UserStore:
        """The app's own user store: its ``clock`` is the one sessions and login limits use."""
        return self.server.app.state.console.users

    def client(
        self, addr: str | None = None, token: str | None = None, **client_args
    ) -> httpx.Client:
        """A client, not logged in; from the local address ``addr`` (any 127.x address reaches
        the server on loopback) and with the API ``token`` when given."""
        args: dict = {"base_url": self.base, "timeout": 30, **client_args}
        if token is not None:
            args["headers"] = {**args.get("headers", {}), "Authorization": f"Bearer {token}"}
        if addr is not None:
            args["transport"] = httpx.HTTPTransport(local_address=addr)
        return httpx.Client(**args)

    def login(
        self, user: str, password: str = PASSWORD, *, addr: str | None = None, **client_args
    ) -> httpx.Client:
        """A client logged in as ``user`` that sends the session's CSRF token on every request."""
        c = self.client(addr, **client_args)
        r = c.post("/api/login", json={"username": user, "password": password})
        assert r.status_code == 200, r.text
        c.headers["X-CSRF-Token"] = r.json()["csrf_token"]
        return c

    def new_user(self, role: str = "viewer", password: str = PASSWORD) -> str:
        """A user of its own for one test (a random name)."""
        name = f"u{uuid.uuid4().hex[:8]}"
        self.users.add(name, password, role)
        return name


@contextlib.contextmanager
def console_stack(
    bootstrap: str,
    tmp_dir: Path,
    *,
    console: dict | None = None,
    roles: Sequence[str] = ROLES,
    ready: bool = True,
    **sections: dict,
) -> Iterator[ConsoleStack]:
    """A console on a free port with the given ``console:`` settings (and other config
    ``sections``), a user named after each of ``roles`` with that role and :data:`PASSWORD`,
    its config written to ``tmp_dir``/vigil.yaml; waits for /readyz unless ``ready`` is False."""
    data = make_config_dict(bootstrap, console={"port": free_port(), **(console or {})}, **sections)
    cfg = parse_config(data, "test")
    ensure_topics(cfg.kafka)
    config_file = Path(tmp_dir) / "vigil.yaml"
    config_file.write_text(yaml.safe_dump(data))
    users = UserStore(cfg.redis)
    for role in roles:
        users.add(role, PASSWORD, role)
    server = ConsoleServer(cfg).start()
    try:
        stack = ConsoleStack(cfg, server, users, str(config_file))
        if ready:
            wait_ready(stack.base)
        yield stack
    finally:
        server.stop()
        for key in users.client.scan_iter(match=f"{cfg.redis.key_prefix}*", count=1000):
            users.client.delete(key)


class FrozenClock:
    """A clock that stands still until told: ``now`` seconds, moved with :meth:`advance`."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def freeze_clock(stack: ConsoleStack, monkeypatch: pytest.MonkeyPatch, at: float) -> FrozenClock:
    """The app's user store reads ``at`` as the time (sessions' ends, login windows) until the
    test moves it; undone with the test's ``monkeypatch``."""
    clock = FrozenClock(at)
    monkeypatch.setattr(stack.server_users, "clock", clock)
    return clock
