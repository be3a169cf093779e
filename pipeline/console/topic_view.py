"""A live in-memory view of a compacted Kafka topic (the camera registry, the live rules).

Reading a compacted topic from the beginning for every page load would cost a consumer start and
a full read per request; the console keeps one consumer per topic instead, assigned to every
partition (no group), and serves reads from its dict. Writes go to Kafka; :meth:`TopicView.wait`
lets a request that wrote wait until the view has read its own write (read-your-writes).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

from kafka import TopicPartition

from pipeline.common.kafka import KafkaConfig, KafkaUnavailable, connection_count, make_consumer
from pipeline.common.lifecycle import OutageLog
from pipeline.common.records import SkippedRecords, reason_of

log = logging.getLogger(__name__)
T = TypeVar("T")


def _reason(error: Exception) -> str:
    """The metric label of a parser's error (the registries' errors carry the decoder's)."""
    reason = getattr(error, "reason", None)
    return reason if isinstance(reason, str) else reason_of(error)


class TopicView(Generic[T]):
    """``items``: key -> parsed value of the latest record per key (tombstones remove it).

    ``parse(key, value)`` returns the parsed value, or raises ``ValueError`` for a record that
    is not usable (logged once, skipped: the last good value stays).
    """

    def __init__(
        self,
        cfg: KafkaConfig,
        topic: str,
        parse: Callable[[bytes | None, bytes], T],
        name: str,
    ) -> None:
        self.cfg = cfg
        self.topic = topic
        self.parse = parse
        self.name = name
        self.items: dict[str, T] = {}
        self.error: str | None = None  # why the view is not current, for a 503
        self.ready = threading.Event()  # caught up with the topic at least once
        self._changed = threading.Condition()
        self._version = 0
        self._stop = threading.Event()
        self._consumer = None
        self._thread = threading.Thread(target=self._run, name=f"console-{name}", daemon=True)
        self.kafka_state = OutageLog(log, f"Kafka at {cfg.bootstrap_servers} (console {name})")
        self.skipped = SkippedRecords(log, f"console_{name}")

    def start(self) -> TopicView[T]:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.ident is not None:  # started (the console starts views in background)
            self._thread.join(timeout=10)

    def connected(self) -> bool:
        """Whether this view's consumer holds a broker connection now (a cheap Kafka health
        check: no new client per request)."""
        consumer = self._consumer
        if consumer is None or not self.ready.is_set():
            return False
        try:
            count = connection_count(consumer)
        except Exception:  # noqa: BLE001 - a closing consumer: not connected
            return False
        return count is None or count > 0

    def require_connected(self) -> None:
        """Raise KafkaUnavailable at once when Kafka is away, instead of a write that hangs."""
        if not self.connected():
            raise KafkaUnavailable(
                f"Kafka at {self.cfg.bootstrap_servers} is unreachable"
                + (f" ({self.error})" if self.error else "")
                + "; nothing was changed"
            )

    def snapshot(self, timeout_s: float = 10.0) -> dict[str, T]:
        """The current items; raises KafkaUnavailable when the view never caught up."""
        if not self.ready.wait(timeout_s):
            raise KafkaUnavailable(
                f"cannot read {self.topic} from Kafka at {self.cfg.bootstrap_servers}"
                + (f" ({self.error})" if self.error else "")
            )
        return dict(self.items)

    def wait(self, predicate: Callable[[dict[str, T]], bool], timeout_s: float = 5.0) -> bool:
        """Block until ``predicate(items)`` holds (after a write), at most ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while not predicate(self.items):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(left)
        return True

    def _apply(self, key: bytes | None, value: bytes | None) -> None:
        """Apply one record. An unusable one is skipped, counted and logged, whatever its parser
        raised: an exception out of here would restart the view's read forever (every edit
        answering 503), and the last good value of its key stays."""
        if key is None:
            self.skipped.skip(f"of {self.topic}", "no_key", "a record needs a key")
            return
        k = key.decode(errors="replace")
        if value is None:
            self.items.pop(k, None)
            return
        try:
            self.items[k] = self.parse(key, value)
        except Exception as e:  # noqa: BLE001 - see above; the decoder's own errors included
            self.skipped.skip(f"{k!r} of {self.topic}", _reason(e), f"{type(e).__name__}: {e}")

    def _run(self) -> None:
        backoff = 0.5
        while not self._stop.is_set():
            consumer = None
            try:
                consumer = make_consumer(
                    self.cfg,
                    f"console-{self.name}",
                    enable_auto_commit=False,
                )
                parts = consumer.partitions_for_topic(self.topic)
                if not parts:
                    raise KafkaUnavailable(f"topic {self.topic} does not exist (yet)")
                self._consumer = consumer
                tps = [TopicPartition(self.topic, p) for p in sorted(parts)]
                consumer.assign(tps)
                consumer.seek_to_beginning(*tps)
                end = consumer.end_offsets(tps)
                fresh: dict[str, T] = {}
                self.items, live = fresh, False
                while not self._stop.is_set():
                    batches = consumer.poll(timeout_ms=500)
                    with self._changed:
                        for records in batches.values():
                            for rec in records:
                                self._apply(rec.key, rec.value)
                        if not live and all(consumer.position(tp) >= end[tp] for tp in tps):
                            live = True
                            self.error = None
                            self.ready.set()
                            self.kafka_state.up()
                        if batches:
                            self._version += 1
                            self._changed.notify_all()
                    backoff = 0.5
            except Exception as e:  # noqa: BLE001 - Kafka errors and its client's surprises alike
                self.error = f"{type(e).__name__}: {e}"
                self.kafka_state.down(self.error)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)
            finally:
                self._consumer = None
                if consumer is not None:
                    try:
                        consumer.close(autocommit=False)
                    except Exception:  # noqa: BLE001 - closing must not hide the reason
                        log.debug("console %s consumer close failed", self.name, exc_info=True)
