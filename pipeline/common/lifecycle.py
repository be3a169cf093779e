"""Process lifecycle shared by every long-running command: a stop event set by Ctrl-C / SIGTERM."""

from __future__ import annotations

import logging
import signal
import threading
import time

log = logging.getLogger(__name__)


def install_signal_handlers(stop: threading.Event) -> None:
    """Ctrl-C / SIGTERM end the run loop; the worker then flushes its producer."""

    def handler(signum, _frame) -> None:
        log.info("received %s, shutting down", signal.Signals(signum).name)
        stop.set()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, handler)
        signal.signal(signal.SIGTERM, handler)


class OutageLog:
    """One log line per state change of a dependency (lost, back), not one per failed attempt.

    ``down(reason)`` logs a warning the first time and counts the failures after it; ``up()``
    logs once how long the outage lasted and how many operations failed meanwhile.
    """

    def __init__(self, logger: logging.Logger, what: str) -> None:
        self.log = logger
        self.what = what
        self.down_since: float | None = None
        self.failures = 0
        self._lock = threading.Lock()  # callbacks of client IO threads and the main loop

    @property
    def is_down(self) -> bool:
        return self.down_since is not None

    def down(self, reason: str, failed_operation: bool = True) -> None:
        with self._lock:
            self.failures += int(failed_operation)
            if self.down_since is not None:
                return
            self.down_since = time.monotonic()
        self.log.warning("%s lost: %s", self.what, reason)

    def up(self) -> None:
        with self._lock:
            if self.down_since is None:
                return
            took, failures = time.monotonic() - self.down_since, self.failures
            self.down_since, self.failures = None, 0
        self.log.info(
            "%s back after %.1f s (%d failed operations meanwhile)", self.what, took, failures
        )
