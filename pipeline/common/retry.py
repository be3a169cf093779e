"""Retrying with backoff until a stop event, and reporting each outage once.

An operation that fails is retried with exponential backoff (``initial_s`` doubling up to
``max_s``) until it succeeds or the stop event is set (:class:`Stopped`). With a
:class:`Retrier`, the first failure of an operation logs a warning and its recovery an info
line: once per outage, not once per attempt. Error texts are scrubbed of a secret (the Redis
password) before they are logged.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TypeVar

import redis

log = logging.getLogger(__name__)

T = TypeVar("T")


class Stopped(Exception):
    """The stop event was set while a step was waiting to retry."""


def retry_with_backoff(
    fn: Callable[[], T],
    stop: threading.Event,
    errors: tuple[type[BaseException], ...],
    initial_s: float,
    max_s: float,
    on_failure: Callable[[BaseException], None],
    on_success: Callable[[], None],
) -> T:
    """``fn()``, retried with backoff while it raises one of ``errors`` (each one reported to
    ``on_failure``); ``on_success`` once it returns. :class:`Stopped` when ``stop`` is set
    during a wait."""
    delay = initial_s
    while True:
        try:
            result = fn()
        except errors as e:
            on_failure(e)
            if stop.wait(delay):
                raise Stopped from None
            delay = min(delay * 2, max_s)
            continue
        on_success()
        return result


class Retrier:
    """Backoff settings plus the operations failing now (name -> since when). ``on_retry``
    counts every failed attempt that is retried, by operation (a metric)."""

    def __init__(
        self,
        initial_s: float,
        max_s: float,
        secret: str | None = None,
        *,
        on_retry: Callable[[str], None] | None = None,
    ) -> None:
        self.initial_s = initial_s
        self.max_s = max_s
        self._secret = secret
        self._on_retry = on_retry
        self._failing: dict[str, float] = {}

    def retry(
        self,
        op: str,
        fn: Callable[[], T],
        stop: threading.Event,
        errors: tuple[type[BaseException], ...] = (redis.RedisError,),
    ) -> T:
        """``fn()``, retried with backoff while it raises one of ``errors``."""
        return retry_with_backoff(
            fn,
            stop,
            errors,
            self.initial_s,
            self.max_s,
            lambda e: self.failed(op, e),
            lambda: self.recovered(op),
        )

    def failed(self, op: str, error: BaseException | None, retried: bool = True) -> None:
        if retried and self._on_retry is not None:
            self._on_retry(op)
        if op not in self._failing:  # once per outage, not once per attempt
            self._failing[op] = time.monotonic()
            log.warning(
                "%s failed (%s: %s); %s",
                op,
                type(error).__name__,
                self.scrub(error),
                "retrying with backoff" if retried else "will try again with the next batch",
            )

    def recovered(self, op: str) -> None:
        since = self._failing.pop(op, None)
        if since is not None:
            log.info("%s recovered after %.1f s", op, time.monotonic() - since)

    def scrub(self, error: object) -> str:
        text = str(error)
        return text.replace(self._secret, "***") if self._secret else text
