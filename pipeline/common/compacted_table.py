"""A compacted Kafka topic as a typed table: key -> the latest valid value of type ``T``.

The camera registry (``pipeline/cameras/registry.py``), the live rules
(``alerts/rules_topic.py``) and the console's live views of both write, read and follow their
topics through a :class:`CompactedTable`. What a table says is its own: the topic, how a decoded
record value becomes a ``T`` (a pydantic model's validation, ``parse_rule``), the key of a value
and its record value. What every table shares is here, once:

* a record value is decoded with :func:`~pipeline.common.jsoncodec.decode_record` (bounded size
  and depth) before it is parsed, and its key must be the value's own id;
* an unusable record (anyone can write to a topic of a single-broker setup) is skipped, counted
  and logged without flooding by :class:`~pipeline.common.records.SkippedRecords`, whatever its
  parser raised; it never stops a reader, and the last valid value of its key stays in force
  (a tombstone removes it);
* writes (:meth:`CompactedTable.put`, :meth:`CompactedTable.delete`: tombstones) return once
  Kafka acknowledged them; every call has a timeout;
* :meth:`CompactedTable.read`: the topic read from its beginning to its end offsets within a
  deadline; only the latest records of each key are validated, after the read (a rule rewritten
  many times, or a flood of copies of one record, is validated once);
* :class:`TableFollower`: a thread that assigns every partition (no consumer group), reads the
  topic to its end, keeps following it and calls back with the current mapping after each change;
  Kafka outages are retried with backoff, one log line each way.

Consumer-group ownership (the ingest workers' share of the cameras) stays with its reader, which
applies its records with :meth:`CompactedTable.apply`.
"""

from __future__ import annotations

import logging
import operator
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, Generic, TypeVar

from kafka import TopicPartition

from pipeline.common.jsoncodec import decode_record, dumps
from pipeline.common.kafka import (
    KafkaConfig,
    KafkaUnavailable,
    connection_count,
    ensure_topics,
    make_consumer,
    make_producer,
)
from pipeline.common.lifecycle import OutageLog
from pipeline.common.records import SkippedRecords, reason_of

log = logging.getLogger(__name__)
T = TypeVar("T")


class TableRecordError(ValueError):
    """A record of a table's topic that is not a usable value (skipped by every reader).
    ``reason`` is the metric label (the decoder's, else ``invalid``)."""

    reason = "invalid"

    def __init__(self, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason


def _one_line(e: BaseException) -> str:
    return "; ".join(line.strip() for line in str(e).splitlines() if line.strip())


class CompactedTable(Generic[T]):
    """One compacted topic keyed by id (tombstone = deleted), whose values are ``T``.

    ``topic_of(cfg)``: the topic's name in a Kafka config; ``parse(raw)``: the ``T`` of a decoded
    record value, or ``ValueError`` (its text, made one line, says why); ``key_of(value)``: its
    key; ``encode(value)``: its record value (a JSON value); ``check_key(key)``: ``ValueError``
    for a key no record may have; ``same(a, b)``: whether a new value changes nothing (a reader
    then reports no change). ``reader``: the metric label of the skipped records;
    ``noun``/``what``: the error texts' words ("rule" / "rule record"); ``client``: the Kafka
    client id suffix; ``create_topic``: writes create Vigil's topics when missing (compacted,
    never a broker default); ``error``: the exception type of unusable records; ``logger``: where
    skipped records are logged (the table owner's module).
    """

    def __init__(
        self,
        *,
        topic_of: Callable[[KafkaConfig], str],
        parse: Callable[[Any], T],
        key_of: Callable[[T], str],
        encode: Callable[[T], Any],
        check_key: Callable[[str], object],
        reader: str,
        noun: str,
        client: str,
        logger: logging.Logger,
        same: Callable[[T, T], bool] = operator.eq,
        error: type[TableRecordError] = TableRecordError,
        create_topic: bool = True,
    ) -> None:
        self.topic_of = topic_of
        self.parse = parse
        self.key_of = key_of
        self.encode = encode
        self.check_key = check_key
        self.reader = reader
        self.noun = noun
        self.client = client
        self.log = logger
        self.same = same
        self.error = error
        self.create_topic = create_topic

    def skipped(self, reader: str | None = None) -> SkippedRecords:
        """A fresh skip counter: each reader (a read, a watcher, a view) has its own log lines to
        spend, so a flood read by one cannot hide another's; all count in
        vigil_records_skipped_total under ``reader`` (default: the table's)."""
        return SkippedRecords(self.log, reader or self.reader)

    # -- one record ------------------------------------------------------------------------------

    def parse_record(self, key: bytes | None, value: bytes | None) -> T | None:
        """The value of one record; None for a tombstone. ``self.error`` (one line, with the
        decoder's reason) when it is not usable: not decodable, not valid, or its key is not its
        id. Whatever else ``parse`` raises goes through (readers skip it as ``error``)."""
        if value is None:
            return None
        name = key.decode(errors="replace") if key is not None else None
        what = f"{self.noun} record {name!r}"
        try:
            raw = decode_record(value)
        except ValueError as e:  # too large, nested too deeply, not UTF-8, not JSON
            raise self.error(f"{what}: not JSON ({e})", reason_of(e)) from None
        try:
            parsed = self.parse(raw)
        except ValueError as e:
            raise self.error(f"{what}: {_one_line(e)}") from None
        if name is not None and name != self.key_of(parsed):
            raise self.error(
                f"{what}: key does not match the {self.noun}'s id {self.key_of(parsed)!r}"
            )
        return parsed

    def apply(
        self,
        items: dict[str, T],
        key: bytes | None,
        value: bytes | None,
        skipped: SkippedRecords,
        topic: str,
    ) -> bool:
        """Apply one record to ``items``; True when it changed them. An unusable record is
        skipped (counted, logged) whatever its parser raised, and its key keeps the last valid
        value it had: an exception out of here would stop the reader, and every reader taking
        the topic over would read the record again."""
        if key is None:
            skipped.skip(f"of {topic}", "no_key", f"a {self.noun} record needs its id as key")
            return False
        k = key.decode(errors="replace")
        if value is None:
            return items.pop(k, None) is not None
        try:
            parsed = self.parse_record(key, value)
        except TableRecordError as e:
            skipped.skip(f"{k!r} of {topic}", e.reason, str(e))
            return False
        except Exception as e:  # noqa: BLE001 - whatever a parser raises: skip, never stop
            skipped.skip(f"{k!r} of {topic}", "error", f"{type(e).__name__}: {e}")
            return False
        assert parsed is not None
        old = items.get(k)
        items[k] = parsed
        return old is None or not self.same(old, parsed)

    # -- writes ----------------------------------------------------------------------------------

    def put(self, cfg: KafkaConfig, values: Iterable[T], timeout_s: float = 15.0) -> None:
        """Create or replace ``values``; returns once Kafka acknowledged them. Each is parsed
        again from its record value first: what is stored is what every reader will parse (a
        value built without validation must not reach the readers)."""
        items: list[tuple[str, bytes | None]] = []
        for value in values:
            record = self.encode(value)
            key = self.key_of(self.parse(record))
            self.check_key(key)
            items.append((key, dumps(record)))
        self._send(cfg, items, timeout_s)

    def delete(self, cfg: KafkaConfig, keys: Iterable[str], timeout_s: float = 15.0) -> None:
        """Delete ``keys`` (tombstones); returns once Kafka acknowledged them."""
        keys = list(keys)
        for key in keys:
            self.check_key(key)
        self._send(cfg, [(key, None) for key in keys], timeout_s)

    def _send(self, cfg: KafkaConfig, items: list[tuple[str, bytes | None]], timeout_s: float):
        if not items:
            return
        if self.create_topic:
            ensure_topics(cfg, timeout_s=timeout_s)
        # send() blocks at most timeout_s on missing metadata; get() waits as long for the ack
        producer = make_producer(cfg, self.client, max_block_ms=int(timeout_s * 1000))
        try:
            topic = self.topic_of(cfg)
            futures = [producer.send(topic, key=k, value=v) for k, v in items]
            for f in futures:
                f.get(timeout=timeout_s)
        finally:
            producer.close(timeout=timeout_s)

    # -- reads -----------------------------------------------------------------------------------

    def read(self, cfg: KafkaConfig, timeout_s: float = 15.0) -> dict[str, T]:
        """The current values by key, in key order: the topic read from its beginning to its end
        offsets, then the latest record of each key validated (after the read and outside its
        deadline: validation cannot make the read time out, and its caller retry it forever).
        Unusable records are skipped. ``TimeoutError`` when reading takes longer than
        ``timeout_s``; no topic: empty (a read never creates one)."""
        latest = self._read_latest(cfg, timeout_s)
        items: dict[str, T] = {}
        latest.apply(items)
        return dict(sorted(items.items()))

    def read_keys(self, cfg: KafkaConfig, timeout_s: float = 15.0) -> set[str]:
        """The keys that have a record, valid or not (a tombstone deletes one); nothing parsed."""
        return self._read_latest(cfg, timeout_s).keys()

    def _read_latest(self, cfg: KafkaConfig, timeout_s: float) -> _Latest[T]:
        topic = self.topic_of(cfg)
        deadline = time.monotonic() + timeout_s
        consumer = make_consumer(
            cfg,
            f"{self.client}-reader",
            group_id=None,
            enable_auto_commit=False,
            allow_auto_create_topics=False,  # reading never creates a topic (not compacted)
        )
        latest = _Latest(self, topic, self.skipped())
        try:
            parts = consumer.partitions_for_topic(topic)
            if not parts:
                return latest
            tps = [TopicPartition(topic, p) for p in sorted(parts)]
            consumer.assign(tps)
            consumer.seek_to_beginning(*tps)
            end = consumer.end_offsets(tps, timeout_ms=int(timeout_s * 1000))
            while True:
                left_ms = int((deadline - time.monotonic()) * 1000)
                if left_ms <= 0:
                    raise TimeoutError(f"reading {topic} did not finish in {timeout_s:g} s")
                if all(consumer.position(tp, timeout_ms=left_ms) >= end[tp] for tp in tps):
                    return latest
                for records in consumer.poll(timeout_ms=min(500, left_ms)).values():
                    for rec in records:
                        latest.add(rec.key, rec.value)
        finally:
            consumer.close(autocommit=False)

    def follow(
        self,
        cfg: KafkaConfig,
        on_change: Callable[[dict[str, T]], None] | None = None,
        **kw: Any,
    ) -> TableFollower[T]:
        """A :class:`TableFollower` of this table (not started)."""
        return TableFollower(self, cfg, on_change, **kw)


class _Latest(Generic[T]):
    """The records read so far, per key: the versions since its last tombstone, each distinct
    value once. Applied newest first, stopping at the first valid one, they give what applying
    every record in order gives (an invalid record leaves the value before it in force), but a
    value rewritten many times, or a flood of copies of one record, is validated once."""

    def __init__(self, table: CompactedTable[T], topic: str, skipped: SkippedRecords) -> None:
        self.table, self.topic, self.skipped = table, topic, skipped
        self.values: dict[str, tuple[bytes, dict[bytes, None]]] = {}

    def add(self, key: bytes | None, value: bytes | None) -> None:
        if key is None:
            self.table.apply({}, None, value, self.skipped, self.topic)  # skipped: no key
            return
        k = key.decode(errors="replace")
        entry = self.values.pop(k, None)  # re-inserted: the order of the latest writes
        versions: dict[bytes, None] = {} if entry is None or value is None else entry[1]
        if value is not None:
            versions.pop(value, None)
            versions[value] = None
        self.values[k] = (key, versions)

    def keys(self) -> set[str]:
        return {k for k, (_, versions) in self.values.items() if versions}

    def apply(self, items: dict[str, T]) -> None:
        """Apply the records to ``items`` (empty), then forget them."""
        for k, (key, versions) in self.values.items():
            for value in reversed(versions):
                self.table.apply(items, key, value, self.skipped, self.topic)
                if k in items:
                    break
        self.values.clear()


class TableFollower(Generic[T]):
    """Keeps the current values of a table's topic, in a thread: assigns every partition (no
    consumer group: each follower reads every record), reads from the beginning to the end
    offsets, then keeps polling. ``ready`` is set once the first read is complete;
    ``on_change(items)`` (every valid value by key, in key order) is called from the thread then,
    and after every change of the values (a record that changes nothing, or an unusable one,
    calls nothing). :meth:`wait` lets a caller that wrote wait until its own write was read.

    A missing topic is waited for; on a Kafka error (or any surprise of its client) the follower
    starts a fresh read after a backoff, keeping the values it had until that read is complete.
    """

    def __init__(
        self,
        table: CompactedTable[T],
        cfg: KafkaConfig,
        on_change: Callable[[dict[str, T]], None] | None = None,
        *,
        name: str | None = None,
        reader: str | None = None,
        client_suffix: str | None = None,
        poll_timeout_ms: int = 500,
        retry_max_s: float = 10.0,
    ) -> None:
        self.table = table
        self.cfg = cfg
        self.topic = table.topic_of(cfg)
        self.name = name or table.reader
        self._on_change = on_change
        self._suffix = client_suffix or f"{table.client}-watcher"
        self._poll_ms = poll_timeout_ms
        self._retry_max_s = retry_max_s
        self._items: dict[str, T] = {}
        self._changed = threading.Condition()
        self._stop = threading.Event()
        self._consumer = None
        self.ready = threading.Event()  # the first read is complete
        self.error: str | None = None  # why the values may not be current
        self.skipped = table.skipped(reader)
        self.kafka_state = OutageLog(
            table.log, f"Kafka at {cfg.bootstrap_servers} ({self.name} of {self.topic})"
        )
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)

    def start(self) -> TableFollower[T]:
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=timeout_s)

    @property
    def items(self) -> dict[str, T]:
        """A copy of the current values, in key order (empty before the first read)."""
        with self._changed:
            return dict(sorted(self._items.items()))

    def snapshot(self, timeout_s: float = 10.0) -> dict[str, T]:
        """The current values; ``KafkaUnavailable`` when the first read is not complete within
        ``timeout_s``."""
        if not self.ready.wait(timeout_s):
            raise KafkaUnavailable(
                f"cannot read {self.topic} from Kafka at {self.cfg.bootstrap_servers}"
                + (f" ({self.error})" if self.error else "")
            )
        return self.items

    def wait(self, predicate: Callable[[dict[str, T]], bool], timeout_s: float = 5.0) -> bool:
        """Block until ``predicate(values)`` holds (after a write), at most ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while not predicate(self._items):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(left)
        return True

    def connected(self) -> bool:
        """Whether the follower's consumer holds a broker connection now (a cheap Kafka health
        check: no new client per call)."""
        consumer = self._consumer
        if consumer is None or not self.ready.is_set():
            return False
        try:
            count = connection_count(consumer)
        except Exception:  # noqa: BLE001 - a closing consumer: not connected
            return False
        return count is None or count > 0

    def _notify(self) -> None:
        if self._on_change is None:
            return
        try:
            self._on_change(self.items)
        except Exception:  # the callback's bug must not stop the follower
            log.exception("%s: on_change failed", self.name)

    def _set(self, items: dict[str, T]) -> bool:
        """Replace the values (a read is complete); True when they changed."""
        with self._changed:
            old, self._items = self._items, items
            self._changed.notify_all()
        return old.keys() != items.keys() or any(
            not self.table.same(old[k], v) for k, v in items.items()
        )

    def _read(self, consumer) -> bool:
        """The topic from its beginning to its end offsets, into the values; False when the
        topic does not exist (yet)."""
        parts = consumer.partitions_for_topic(self.topic)
        if not parts:
            return False
        tps = [TopicPartition(self.topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        timeout_ms = self.cfg.request_timeout_ms
        end = consumer.end_offsets(tps, timeout_ms=timeout_ms)
        latest = _Latest(self.table, self.topic, self.skipped)
        while not all(consumer.position(tp, timeout_ms=timeout_ms) >= end[tp] for tp in tps):
            if self._stop.is_set():
                return True
            for records in consumer.poll(timeout_ms=self._poll_ms).values():
                for rec in records:
                    latest.add(rec.key, rec.value)
        items: dict[str, T] = {}
        latest.apply(items)
        first = not self.ready.is_set()
        changed = self._set(items)
        self.error = None
        self.ready.set()
        self.kafka_state.up()
        if first:
            self.table.log.info("%s: %s read: %d record(s)", self.name, self.topic, len(items))
        if first or changed:
            self._notify()
        return True

    def _follow(self, consumer) -> None:
        while not self._stop.is_set():
            batches = consumer.poll(timeout_ms=self._poll_ms)
            if not batches:
                continue
            changed = False
            with self._changed:
                for records in batches.values():
                    for rec in records:
                        changed |= self.table.apply(
                            self._items, rec.key, rec.value, self.skipped, self.topic
                        )
                self._changed.notify_all()
            if changed:
                self._notify()

    def _run(self) -> None:
        backoff = 0.2
        waiting_logged = False
        while not self._stop.is_set():
            consumer = None
            try:
                consumer = make_consumer(
                    self.cfg,
                    self._suffix,
                    group_id=None,
                    enable_auto_commit=False,
                    allow_auto_create_topics=False,
                )
                self._consumer = consumer
                if not self._read(consumer):
                    self.error = f"topic {self.topic} does not exist (yet)"
                    if not waiting_logged:
                        self.table.log.warning("%s: %s; waiting", self.name, self.error)
                        waiting_logged = True
                    self._stop.wait(1.0)
                    continue
                backoff = 0.2
                self._follow(consumer)
            except Exception as e:  # noqa: BLE001 - Kafka errors and its client's surprises
                self.error = f"{type(e).__name__}: {e}"
                self.kafka_state.down(self.error)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, self._retry_max_s)
            finally:
                self._consumer = None
                if consumer is not None:
                    try:
                        consumer.close(autocommit=False)
                    except Exception:  # noqa: BLE001 - closing must not hide the reason
                        log.debug("%s: consumer close failed", self.name, exc_info=True)
