"""``make demo`` makes an admin ``demo`` with a printed password: it must be gone when the demo
ends, also when it ends by Ctrl-C or an error (the demo's console context, not the whole demo)."""

from __future__ import annotations

import contextlib
import os
import signal
import time

import pytest

import pipeline.demo as demo
from pipeline.config import parse_config
from pipeline.console.auth import UserStore
from tests.support.config import REDIS_URL

pytestmark = pytest.mark.integration


class FakeConsole:
    """Stands in for the console server: what the demo starts and stops."""

    url = "http://127.0.0.1:1/"
    stopped = False

    def __init__(self, *_args) -> None:
        pass

    def start(self) -> FakeConsole:
        return self

    def stop(self) -> None:
        FakeConsole.stopped = True


@pytest.fixture
def users(monkeypatch):
    monkeypatch.setattr(demo, "ConsoleServer", FakeConsole)
    FakeConsole.stopped = False
    cfg = parse_config({"redis": {"url": REDIS_URL, "key_prefix": "tdemo-user:"}}, "test")
    store = UserStore(cfg.redis)
    try:
        yield cfg, store
    finally:
        store.remove("demo")


@pytest.mark.parametrize("ending", [None, KeyboardInterrupt, RuntimeError])
def test_demo_user_removed_when_the_demo_ends(users, capsys, ending):
    cfg, store = users
    expect = pytest.raises(ending) if ending else contextlib.nullcontext()
    with expect, demo.demo_console(cfg, 8080) as console:
        assert console is not None
        assert store.role_of("demo") == "admin"  # usable while the demo runs
        if ending:
            raise ending()
    assert store.role_of("demo") is None
    assert FakeConsole.stopped
    out = capsys.readouterr().out
    assert "console user demo removed" in out


def test_demo_user_removed_on_sigterm(users):
    cfg, store = users
    with pytest.raises(KeyboardInterrupt), demo.demo_console(cfg, 8080):
        assert store.role_of("demo") == "admin"
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # not reached: the signal ends the demo
    assert store.role_of("demo") is None
    assert signal.getsignal(signal.SIGTERM) is not signal.default_int_handler  # restored


def test_demo_user_removed_when_the_console_cannot_start(users, monkeypatch):
    cfg, store = users

    class Busy(FakeConsole):
        def start(self):
            raise RuntimeError("port 8080 in use")

    monkeypatch.setattr(demo, "ConsoleServer", Busy)
    with demo.demo_console(cfg, 8080) as console:
        assert console is None
    assert store.role_of("demo") is None
