"""Retrying with backoff for the alert service, and reporting each outage once.

An operation that fails is retried with exponential backoff (``retry_initial_s`` doubling up to
``retry_max_s``) until it succeeds or the service's stop event is set (:class:`Stopped`). The
first failure of an operation logs a warning, its recovery an info line: once per outage, not
once per attempt. Error texts are scrubbed of the Redis password.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TypeVar
from urllib.parse import urlsplit

import redis

from alerts import metrics as m

log = logging.getLogger(__name__)

T = TypeVar("T")


class Stopped(Exception):
    """The stop event was set while a step was waiting to retry."""


class Retrier:
    """Backoff settings plus the operations failing now (name -> since when)."""

    def __init__(self, initial_s: float, max_s: float, secret: str | None = None) -> None:
        self.initial_s = initial_s
        self.max_s = max_s
        self._secret = secret
        self._failing: dict[str, float] = {}

    def retry(
        self,
        op: str,
        fn: Callable[[], T],
        stop: threading.Event,
        errors: tuple[type[BaseException], ...] = (redis.RedisError,),
    ) -> T:
        """``fn()``, retried with backoff while it raises one of ``errors``."""
        delay = self.initial_s
        while True:
            try:
                result = fn()
            except errors as e:
                self.failed(op, e)
                if stop.wait(delay):
                    raise Stopped from None
                delay = min(delay * 2, self.max_s)
                continue
            self.recovered(op)
            return result

    def failed(self, op: str, error: BaseException | None, retried: bool = True) -> None:
        if retried:
            m.RETRIES.labels(op).inc()
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


def url_password(url: str) -> str | None:
    try:
        return urlsplit(url).password or None
    except ValueError:
        return None
