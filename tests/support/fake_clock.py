"""A clock that moves only when told, for code that reads ``time.monotonic()`` / ``time.time()``
through its module's ``time`` and waits on an injected ``threading.Event``: a test patches the
module's ``time`` with a :class:`FakeClock` and hands it a :class:`ClockedEvent`, so backoffs,
budgets and probe intervals play out at once and in order, whatever the machine's load."""

from __future__ import annotations

import threading

TICK_S = 1e-6  # the shortest wait a ClockedEvent lets pass


class FakeClock:
    """``monotonic()`` and ``time()``, advanced by :meth:`advance` (and by a ClockedEvent's
    waits) only."""

    def __init__(self, start: float = 1000.0) -> None:
        self._now = start
        self._lock = threading.Lock()

    def monotonic(self) -> float:
        with self._lock:
            return self._now

    def time(self) -> float:
        return 1_700_000_000.0 + self.monotonic()

    def perf_counter(self) -> float:
        return self.monotonic()

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += seconds


class ClockedEvent(threading.Event):
    """A stop/halt event whose timed ``wait`` does not sleep: it records the timeout, moves the
    clock on by it and answers whether the event is set (as a real wait that timed out would)."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__()
        self.clock = clock
        self.waits: list[float] = []

    def wait(self, timeout: float | None = None) -> bool:
        if timeout is None or self.is_set():
            return super().wait(timeout)
        self.waits.append(timeout)
        # a real wait lasts at least a timer tick: a caller that computes a wait of 1e-17 s
        # from rounding (a token bucket) must see the clock move, as it would for real
        self.clock.advance(max(timeout, TICK_S))
        return self.is_set()
