"""Guards for the long-lived responses (SSE alert stream, MJPEG live view): a per-user cap on
open streams, and a re-check of the caller's session or token while the stream runs, so a
logout, a removed user or a demotion ends it within ``console.stream_recheck_s`` instead of
when the browser tab closes."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from fastapi import HTTPException, Request
from fastapi.responses import StreamingResponse

from pipeline.console.auth import Principal
from pipeline.console.state import ConsoleState

if TYPE_CHECKING:
    from starlette.types import Receive, Scope, Send

log = logging.getLogger(__name__)


def still_allowed(st: ConsoleState, request: Request, who: Principal) -> bool:
    """Whether the session or token the stream was opened with still stands for ``who`` with at
    least the role it had then (logout, revocation, expiry, a password or role change and
    removal all end it). Does not renew the session's idle time: an open stream is not activity."""
    return st.users.still_valid(who, who.role)


class StreamSlots:
    """Open streams per user, at most ``limit`` each (one process: the console is one)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._open: dict[str, int] = {}
        self._lock = threading.Lock()

    def acquire(self, user: str) -> Slot:
        with self._lock:
            n = self._open.get(user, 0)
            if n >= self.limit:
                raise HTTPException(
                    429,
                    f"{user} has {n} live streams open (console.max_streams_per_user); "
                    "close one and retry",
                )
            self._open[user] = n + 1
        return Slot(self, user)

    def _release(self, user: str) -> None:
        with self._lock:
            n = self._open.get(user, 0) - 1
            if n > 0:
                self._open[user] = n
            else:
                self._open.pop(user, None)

    def open(self, user: str) -> int:
        with self._lock:
            return self._open.get(user, 0)


class Slot:
    """One open stream; :meth:`release` is idempotent (the response and its body both call it)."""

    def __init__(self, slots: StreamSlots, user: str) -> None:
        self._slots, self._user, self._held = slots, user, True

    def release(self) -> None:
        if self._held:
            self._held = False
            self._slots._release(self._user)


class Guard:
    """What a stream loop asks each turn: :meth:`ok` is False once the client went away or,
    checked every ``console.stream_recheck_s``, the credentials no longer allow the stream."""

    def __init__(self, st: ConsoleState, request: Request, who: Principal) -> None:
        self.st, self.request, self.who = st, request, who
        self.interval = st.cfg.console.stream_recheck_s
        self._checked = time.monotonic()

    async def ok(self) -> bool:
        if await self.request.is_disconnected():
            return False
        if time.monotonic() - self._checked < self.interval:
            return True
        self._checked = time.monotonic()
        try:
            allowed = await asyncio.to_thread(still_allowed, self.st, self.request, self.who)
        except Exception:  # noqa: BLE001 - Redis away: end it, the client reconnects and is asked
            log.warning("console: stream of %s ended: its session check failed", self.who.user)
            return False
        if not allowed:
            log.info("console: stream of %s ended: session or role changed", self.who.user)
        return allowed


class GuardedStream(StreamingResponse):
    """A StreamingResponse that gives its slot back however it ends (also when the body was
    never started because the client had gone)."""

    def __init__(self, content: AsyncIterator[bytes], slot: Slot, **kwargs) -> None:
        super().__init__(content, **kwargs)
        self.slot = slot

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.slot.release()


def open_stream(st: ConsoleState, request: Request, who: Principal) -> tuple[Slot, Guard]:
    """A slot (429 beyond the cap) and the guard for a new stream of ``who``."""
    slots: StreamSlots = request.app.state.stream_slots
    return slots.acquire(who.user), Guard(st, request, who)
