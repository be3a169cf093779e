"""The camera registry is a compacted Kafka topic keyed by camera id (tombstone = removed).

Ingest workers form one consumer group on it, so Kafka's partition assignment decides which
worker owns which camera, and moves cameras when a worker dies or joins. No home-made coordinator.
The topic is the table :data:`CAMERAS` (``pipeline/common/compacted_table.py``, like the live
rules): parsing, validation and the handling of unusable records are the table's.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from kafka import ConsumerRebalanceListener, TopicPartition
from kafka.errors import KafkaError
from pydantic import ValidationError

from pipeline.cameras.spec import CameraSpec
from pipeline.common.compacted_table import CompactedTable, TableRecordError
from pipeline.common.config import format_validation_error
from pipeline.common.contracts import validate_camera_id
from pipeline.common.kafka import KafkaConfig, connection_count, make_consumer
from pipeline.common.lifecycle import OutageLog

log = logging.getLogger(__name__)


class CameraRegistryError(TableRecordError):
    """A record of the camera registry topic that is not a usable camera definition."""


def _parse_camera(raw: Any) -> CameraSpec:
    try:
        return CameraSpec.model_validate(raw)
    except ValidationError as e:
        raise ValueError(format_validation_error(e, "camera", one_line=True)) from None


# The registry as a table. Writing does not create Vigil's topics (`vigil setup` does): a
# registry writer needs no admin rights on the cluster.
CAMERAS: CompactedTable[CameraSpec] = CompactedTable(
    topic_of=lambda cfg: cfg.topics.cameras,
    parse=_parse_camera,
    key_of=lambda spec: spec.id,
    encode=lambda spec: spec.model_dump(mode="json"),
    check_key=validate_camera_id,
    reader="cameras",
    noun="camera",
    client="registry",
    logger=log,
    error=CameraRegistryError,
    create_topic=False,
)


def spec_from_record(key: bytes | None, value: bytes | None) -> CameraSpec | None:
    """Parse one registry record; None for a tombstone. Raises CameraRegistryError when malformed."""
    return CAMERAS.parse_record(key, value)


# -- management (``vigil cameras ...``) ------------------------------------------------------


def put_cameras(cfg: KafkaConfig, specs: list[CameraSpec], timeout_s: float = 15.0) -> None:
    CAMERAS.put(cfg, specs, timeout_s)


def remove_cameras(cfg: KafkaConfig, camera_ids: list[str], timeout_s: float = 15.0) -> None:
    CAMERAS.delete(cfg, camera_ids, timeout_s)


def read_registry(cfg: KafkaConfig, timeout_s: float = 15.0) -> dict[str, CameraSpec]:
    """The current cameras (in id order): the compacted topic read from the beginning to its
    end offsets; unusable records are skipped, a camera keeps its last valid definition."""
    return CAMERAS.read(cfg, timeout_s)


# -- ownership (ingest workers) ---------------------------------------------------------------


class RegistryWatcher:
    """Keeps ``owned`` = the cameras in the partitions Kafka assigned to this worker.

    ``on_change(owned)`` is called with the full owned set after every change (assignment,
    revocation, add, update, remove), from the watcher thread.

    Kafka away is not a broken registry: kafka-python raises from ``poll`` when no broker answers
    (KafkaConnectionError from a coordinator lookup). The watcher logs one line per outage and
    retries (``backoff``: first and longest pause, s); the cameras it owns keep streaming. Other
    errors stop it (``error``: the worker exits with it).
    """

    backoff = (0.5, 5.0)

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
        self._skipped = CAMERAS.skipped()
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
        # learn the topic's partitions first: a group joined while the consumer has no metadata
        # of the topic (just created) is assigned nothing, and kafka-python does not always
        # rejoin when the metadata arrives (seen: a worker that never got its cameras)
        deadline = time.monotonic() + cfg.bootstrap_timeout_ms / 1000
        try:
            while not self.consumer.partitions_for_topic(cfg.topics.cameras):
                if time.monotonic() > deadline:
                    break
                time.sleep(0.2)
        except KafkaError:
            pass  # Kafka away: the watcher's loop says so and retries
        self.consumer.subscribe([cfg.topics.cameras], listener=_Listener(self))
        self._thread = threading.Thread(target=self._run, name="registry-watcher", daemon=True)
        self.error: Exception | None = None
        self._changed = False  # owned cameras changed, not yet handed to on_change
        self.kafka_state = OutageLog(log, f"Kafka at {cfg.bootstrap_servers} (camera registry)")

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

    def _step(self) -> None:
        batches = self.consumer.poll(timeout_ms=500)
        for tp, records in batches.items():
            cams = self._by_partition.setdefault(tp.partition, {})
            for rec in records:
                self._changed |= CAMERAS.apply(cams, rec.key, rec.value, self._skipped, tp.topic)
        parts = self._new_assignment
        if parts is not None:
            self._catch_up = self.consumer.end_offsets(parts) if parts else {}
            if self._new_assignment is parts:  # (a newer one, come meanwhile, is next round's)
                self._new_assignment = None
        if self._catch_up is not None and self._caught_up():
            self._catch_up = None
            self._changed = True
        if self._changed and self._catch_up is None:
            self._changed = False
            self._on_change(self.owned)

    def _run(self) -> None:
        first, longest = self.backoff
        pause = first
        try:
            while not self._stop.is_set():
                try:
                    self._step()
                except KafkaError as e:  # Kafka away (class docstring): wait, then again
                    self.kafka_state.down(f"{type(e).__name__}")
                    self._stop.wait(pause)
                    pause = min(pause * 2, longest)
                    continue
                pause = first
                if self.kafka_state.is_down and connection_count(self.consumer):
                    self.kafka_state.up()
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
