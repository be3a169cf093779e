"""Publishing a batch's alert events and dead letters to Kafka, waiting for every acknowledgement.

What fails is sent again, with the service's backoff, until the broker has acknowledged all of
it (or the service is stopped: :class:`~pipeline.common.retry.Stopped`).
"""

from __future__ import annotations

import threading
from typing import Any

from kafka.errors import KafkaError, KafkaTimeoutError

from pipeline.common.retry import Retrier, Stopped


def publish(
    producer: Any,
    sends: list[tuple[str, Any, Any]],
    stop: threading.Event,
    retrier: Retrier,
) -> None:
    """Send ``(topic, key, value)`` s and wait for every acknowledgement; resend what failed, with
    backoff."""
    assert producer is not None
    pending = sends
    delay = retrier.initial_s
    op = "Kafka publish"
    while True:
        futures: list[tuple[Any, Any]] = []
        send = producer.send
        for s in pending:
            try:
                futures.append((s, send(s[0], key=s[1], value=s[2])))
            except KafkaError as e:
                futures.append((s, e))
        flush(producer, stop)
        failed, error = [], None
        for s, fut in futures:
            if isinstance(fut, Exception):
                failed.append(s)
                error = fut
                continue
            while True:
                try:
                    fut.get(timeout=1.0)
                    break
                except KafkaTimeoutError as e:
                    if fut.is_done:
                        failed.append(s)
                        error = e
                        break
                    if stop.is_set():
                        raise Stopped from None
                except KafkaError as e:
                    failed.append(s)
                    error = e
                    break
        if not failed:
            retrier.recovered(op)
            return
        retrier.failed(op, error)
        if stop.wait(delay):
            raise Stopped
        delay = min(delay * 2, retrier.max_s)
        pending = failed


def flush(producer: Any, stop: threading.Event) -> None:
    """Send what the producer holds now rather than after ``linger_ms``, and wait until it is
    acknowledged or failed; the per-send results are read afterwards (a failure here only
    means some are not done yet: they are waited for one by one)."""
    while True:
        try:
            producer.flush(timeout=1.0)
            return
        except KafkaTimeoutError:
            if stop.is_set():
                raise Stopped from None
        except KafkaError:
            return
