"""The camera registry is a compacted Kafka topic keyed by camera id (tombstone = removed).

Ingest workers form one consumer group on it, so Kafka's partition assignment decides which
worker owns which camera, and moves cameras when a worker dies or joins. No home-made coordinator.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from kafka import ConsumerRebalanceListener, TopicPartition
from pydantic import ValidationError

from pipeline.common.config import format_validation_error
from pipeline.common.contracts import validate_camera_id
from pipeline.common.jsoncodec import decode_record
from pipeline.common.kafka import KafkaConfig, make_consumer, make_producer
from pipeline.common.records import SkippedRecords, reason_of
from pipeline.ingest.camera import CameraSpec

log = logging.getLogger(__name__)


def _skipped() -> SkippedRecords:
    """Each reader of the registry (a read, a watcher) has its own log lines to spend, so a
    flood read by one cannot hide another's; all count in vigil_records_skipped_total."""
    return SkippedRecords(log, "cameras")


class CameraRegistryError(ValueError):
    """A record of the camera registry topic that is not a usable camera definition."""

    reason = "invalid"


def spec_from_record(key: bytes | None, value: bytes | None) -> CameraSpec | None:
    """Parse one registry record; None for a tombstone. Raises CameraRegistryError when malformed."""
    if value is None:
        return None
    try:
        raw = decode_record(value)
    except ValueError as e:  # too large, nested too deeply, not UTF-8, not JSON
        err = CameraRegistryError(f"malformed camera definition for key {key!r}: {e}")
        err.reason = reason_of(e)
        raise err from None
    try:
        spec = CameraSpec.model_validate(raw)
    except ValidationError as e:
        detail = format_validation_error(e, "camera", one_line=True)
        raise CameraRegistryError(
            f"malformed camera definition for key {key!r}: {detail}"
        ) from None
    except ValueError as e:
        raise CameraRegistryError(f"malformed camera definition for key {key!r}: {e}") from None
    if key is not None and key.decode(errors="replace") != spec.id:
        raise CameraRegistryError(
            f"camera definition key {key!r} does not match its id {spec.id!r}"
        )
    return spec


# -- management (``vigil cameras ...``) ------------------------------------------------------


def put_cameras(cfg: KafkaConfig, specs: list[CameraSpec], timeout_s: float = 15.0) -> None:
    producer = make_producer(cfg, "registry")
    try:
        futures = [
            producer.send(cfg.topics.cameras, key=s.id, value=s.model_dump(mode="json"))
            for s in specs
        ]
        for f in futures:
            f.get(timeout=timeout_s)
    finally:
        producer.close(timeout=timeout_s)


def remove_cameras(cfg: KafkaConfig, camera_ids: list[str], timeout_s: float = 15.0) -> None:
    for cid in camera_ids:
        validate_camera_id(cid)
    producer = make_producer(cfg, "registry")
    try:
        futures = [producer.send(cfg.topics.cameras, key=cid, value=None) for cid in camera_ids]
        for f in futures:
            f.get(timeout=timeout_s)
    finally:
        producer.close(timeout=timeout_s)


def read_registry(cfg: KafkaConfig, timeout_s: float = 15.0) -> dict[str, CameraSpec]:
    """The current cameras: read the compacted topic from the beginning to its end offsets."""
    consumer = make_consumer(
        cfg, "registry-reader", enable_auto_commit=False, consumer_timeout_ms=1000
    )
    try:
        parts = consumer.partitions_for_topic(cfg.topics.cameras) or set()
        tps = [TopicPartition(cfg.topics.cameras, p) for p in parts]
        if not tps:
            return {}
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        end = consumer.end_offsets(tps)
        cameras: dict[str, CameraSpec] = {}
        skipped = _skipped()
        deadline = time.monotonic() + timeout_s
        while any(consumer.position(tp) < end[tp] for tp in tps):
            if time.monotonic() > deadline:
                raise TimeoutError(f"reading {cfg.topics.cameras} did not finish in {timeout_s}s")
            for records in consumer.poll(timeout_ms=500).values():
                for rec in records:
                    _apply(cameras, rec.key, rec.value, skipped)
        return cameras
    finally:
        consumer.close()


def _apply(
    cameras: dict[str, CameraSpec],
    key: bytes | None,
    value: bytes | None,
    skipped: SkippedRecords,
) -> str | None:
    """Apply one record; the camera id it changed, or None. An unusable record is skipped,
    counted and logged: it must not stop the reader (every worker taking the partition over
    would read it again), and the cameras already read stay as they are."""
    try:
        spec = spec_from_record(key, value)
    except CameraRegistryError as e:
        skipped.skip(repr(key), e.reason, str(e))
        return None
    except Exception as e:  # noqa: BLE001 - whatever a parser raises, the record is skipped
        skipped.skip(repr(key), "error", f"{type(e).__name__}: {e}")
        return None
    if spec is None:
        if key is not None:
            cid = key.decode(errors="replace")
            cameras.pop(cid, None)
            return cid
        return None
    cameras[spec.id] = spec
    return spec.id


# -- ownership (ingest workers) ---------------------------------------------------------------


class RegistryWatcher:
    """Keeps ``owned`` = the cameras in the partitions Kafka assigned to this worker.

    ``on_change(owned)`` is called with the full owned set after every change (assignment,
    revocation, add, update, remove), from the watcher thread.
    """

    def __init__(
        self,
        cfg: KafkaConfig,
        group_id: str,
        on_change: Callable[[dict[str, CameraSpec]], None],
        session_timeout_ms: int = 10000,
        client_suffix: str = "ingest",
    ) -> None:
        self.cfg = cfg
        self._on_change = on_change
        self._by_partition: dict[int, dict[str, CameraSpec]] = {}
        self._catch_up: dict[TopicPartition, int] | None = None
        self._new_assignment: list[TopicPartition] | None = None
        self._stop = threading.Event()
        self._skipped = _skipped()
        self.consumer = make_consumer(
            cfg,
            client_suffix,
            group_id=group_id,
            enable_auto_commit=False,  # ownership is re-read from the beginning on every assignment
            auto_offset_reset="earliest",
            session_timeout_ms=session_timeout_ms,
            heartbeat_interval_ms=max(1000, session_timeout_ms // 4),
            max_poll_interval_ms=300_000,
        )
        self.consumer.subscribe([cfg.topics.cameras], listener=_Listener(self))
        self._thread = threading.Thread(target=self._run, name="registry-watcher", daemon=True)
        self.error: Exception | None = None

    def start(self) -> RegistryWatcher:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        try:
            self.consumer.close(autocommit=False)
        except Exception:  # noqa: BLE001 - closing on shutdown must not mask the real error
            log.debug("registry consumer close failed", exc_info=True)

    @property
    def owned(self) -> dict[str, CameraSpec]:
        out: dict[str, CameraSpec] = {}
        for cams in self._by_partition.values():
            out.update(cams)
        return out

    def _assigned(self, partitions: list[TopicPartition]) -> None:
        # Eager rebalancing revokes everything first; cameras that stay here keep streaming
        # because the worker only reconciles once the new partitions are read to their end.
        # Called on the client's IO thread: no blocking calls here, end offsets are read in _run.
        self._by_partition = {tp.partition: {} for tp in partitions}
        if partitions:
            self.consumer.seek_to_beginning(*partitions)
        self._new_assignment = list(partitions)
        log.info("registry: assigned partitions %s", sorted(tp.partition for tp in partitions))

    def _revoked(self, partitions: list[TopicPartition]) -> None:
        log.info("registry: revoked partitions %s", sorted(tp.partition for tp in partitions))

    def _caught_up(self) -> bool:
        return all(self.consumer.position(tp) >= end for tp, end in self._catch_up.items())

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                batches = self.consumer.poll(timeout_ms=500)
                changed = False
                for tp, records in batches.items():
                    cams = self._by_partition.setdefault(tp.partition, {})
                    for rec in records:
                        changed |= _apply(cams, rec.key, rec.value, self._skipped) is not None
                if self._new_assignment is not None:
                    parts, self._new_assignment = self._new_assignment, None
                    self._catch_up = self.consumer.end_offsets(parts) if parts else {}
                if self._catch_up is not None and self._caught_up():
                    self._catch_up = None
                    changed = True
                if changed and self._catch_up is None:
                    self._on_change(self.owned)
        except Exception as e:  # surfaced to the worker, which exits with a clear message
            log.exception("registry watcher failed")
            self.error = e


class _Listener(ConsumerRebalanceListener):
    def __init__(self, watcher: RegistryWatcher) -> None:
        self.w = watcher

    def on_partitions_revoked(self, revoked):
        self.w._revoked(list(revoked))

    def on_partitions_assigned(self, assigned):
        self.w._assigned(list(assigned))
