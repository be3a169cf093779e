"""The recorder's motion follower: motion spells on ``vigil.motion`` start recordings of the
cameras in ``record.mode: events``.

Ingest publishes a camera's motion spells (``pipeline.common.motion_spells``: started, renewed
every few seconds, ended). Each recorder process runs one follower in a consumer group of its
own (``<recordings.group_id>-motion``), so every message is read by one recorder; for a camera
recorded in mode events it writes a hold (:class:`HoldStore`, the same mechanism as alerts):

    [started_at - pre_s, last_at + post_s]

which the camera's recorder, wherever it runs, reads twice a second (``events.py``) and
records. A spell's holds matter only while it is recorded: they expire :data:`KEEP_S` after
their end (a camera in mode events keeps all its segments ``retain.event_days`` anyway). A new
group starts at the latest record (old motion is not recorded any more); a record that is not a
spell, or one ending far in the future, is skipped and counted, never fatal.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from kafka import TopicPartition
from kafka.structs import OffsetAndMetadata

from pipeline.cameras.settings import RecordConfig
from pipeline.common.consumer_loop import ConsumerHandler, ConsumerLoop, Records
from pipeline.common.jsoncodec import decode_record
from pipeline.common.kafka import KafkaConfig
from pipeline.common.motion_spells import parse_motion
from pipeline.common.records import SkippedRecords, reason_of
from pipeline.record.holds import HoldStore

log = logging.getLogger(__name__)

READER = "recorder_motion"
#: A spell's hold is kept this long after its range ends.
KEEP_S = 60.0
#: A spell said to go on later than this past the recorder's clock is not believed.
MAX_AHEAD_S = 30.0


class MotionFollower(ConsumerHandler):
    """Consumes ``vigil.motion`` and writes holds (module docstring). ``record_of(camera_id)``:
    the camera's ``record:`` settings when it is recorded, else None."""

    def __init__(
        self,
        kafka: KafkaConfig,
        holds: HoldStore,
        record_of: Callable[[str], RecordConfig | None],
        *,
        group_id: str,
        session_timeout_ms: int = 10000,
        poll_timeout_ms: int = 500,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.holds = holds
        self.record_of = record_of
        self.clock = clock
        self._poll_timeout_ms = poll_timeout_ms
        self.skipped = SkippedRecords(log, READER)
        self.held = 0  # holds written
        self._next: dict[TopicPartition, int] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.loop = ConsumerLoop(
            self,
            kafka,
            kafka.topics.motion,
            client="record-motion",
            group_id=group_id,
            session_timeout_ms=session_timeout_ms,
            max_records=500,
            logger=log,
            name="recorder motion follower",
            backoff=(0.5, 10.0),
            consumer_kw={"auto_offset_reset": "latest"},
            producer_close_s=1,
            unexpected_error="unexpected error in the recorder's motion follower",
            learn_partitions=True,  # a member without partitions would miss the spells
        )

    def start(self) -> MotionFollower:
        self._stop.clear()
        self._thread = threading.Thread(
            target=self.loop.run, args=(self._stop,), name="record-motion", daemon=True
        )
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 15.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None

    # -- the loop's callbacks -------------------------------------------------------------------
    def on_started(self) -> None:
        log.info("recorder: following %s (group %s)", self.loop.topic, self.loop.group_id)

    def poll_timeout_ms(self) -> int:
        return self._poll_timeout_ms

    def handle_batch(self, batch: Records, fresh: set[TopicPartition]) -> int:
        n = 0
        for tp in sorted(batch, key=lambda t: t.partition):
            for rec in batch[tp]:
                self.handle(rec.value, f"{tp.topic}[{tp.partition}]@{rec.offset}")
                self._next[tp] = rec.offset + 1
                n += 1
        return n

    def on_revoked(self, tps: set[TopicPartition]) -> None:
        for tp in tps:
            self._next.pop(tp, None)

    def commit(self) -> None:
        if self.loop.consumer is not None and self._next:
            self.loop.consumer.commit(
                {tp: OffsetAndMetadata(off, "", -1) for tp, off in self._next.items()}
            )
            self._next.clear()

    # -- one record -----------------------------------------------------------------------------
    def handle(self, raw: Any, where: str) -> bool:
        """Hold what the spell in ``raw`` asks for; True when a hold was written."""
        now = self.clock()
        try:
            spell = parse_motion(decode_record(raw))
            if spell.last_at > now + MAX_AHEAD_S:
                raise ValueError(f"last_at: more than {MAX_AHEAD_S:g} s ahead of this clock")
        except Exception as e:  # noqa: BLE001 - hostile input costs one record, never the loop
            self.skipped.skip(where, reason_of(e), str(e)[:200])
            return False
        rec = self.record_of(spell.camera_id)
        if rec is None or rec.mode != "events":
            return False
        start, end = spell.started_at - rec.pre_s, spell.last_at + rec.post_s
        if end + KEEP_S <= now:
            return False  # an old spell read again: long past
        self.holds.hold(spell.camera_id, spell.key, start, end, end + KEEP_S)
        self.held += 1
        log.debug("recorder: motion hold of %s [%.3f, %.3f]", spell.camera_id, start, end)
        return True
