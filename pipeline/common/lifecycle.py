"""Process lifecycle shared by every long-running command: a stop event set by Ctrl-C / SIGTERM."""

from __future__ import annotations

import logging
import signal
import threading

log = logging.getLogger(__name__)


def install_signal_handlers(stop: threading.Event) -> None:
    """Ctrl-C / SIGTERM end the run loop; the worker then flushes its producer."""

    def handler(signum, _frame) -> None:
        log.info("received %s, shutting down", signal.Signals(signum).name)
        stop.set()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, handler)
        signal.signal(signal.SIGTERM, handler)
