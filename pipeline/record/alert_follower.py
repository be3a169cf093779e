"""The recorder's alert follower: learns of alerts on ``vigil.alerts`` and holds the recordings
their clips need.

Each recorder process runs one (inside :class:`~pipeline.record.service.RecorderService`), in a
consumer group of its own (``<recordings.group_id>-alerts``), so every alert message is read by
one recorder. For each ``started`` or ``ended`` message of a camera with recording on (the
camera's ``record:`` settings from the registry), it writes a hold (:class:`HoldStore`):

    [started_at - pre_s, (ended_at or started_at) + post_s]  until  (ended_at or started_at)
    + retain.event_days

The ``ended`` message replaces the ``started`` one's hold (same alert id). Messages of other
statuses, and alerts of cameras that are not recorded, write nothing. A record is hostile input:
one that is not JSON, too large, too deep, or lacks a usable id, camera, status or time is
skipped (counted in ``vigil_records_skipped_total{reader="recorder_alerts"}``), never fatal.
The recording stage never imports the alerts package: the few fields it needs are parsed here.

Clip availability: after an ``ended`` message, once the segment index has the camera's recording
up to the hold's end (``ended_at + post_s``: recorded and its segment closed), the follower
writes ``clip_from``, ``clip_to`` and ``clip_until`` into the alert's hash (only when the hash
exists) and publishes a follow-up on ``vigil.clips`` (``kafka.topics.clips``, keyed like the
alert: by camera id): the ended message with ``status: "clip"`` and ``clip: {from, to, until,
path}``. Never on ``vigil.alerts``: a recorder reads alerts but may not write them (the cluster's
ACLs, docs/security.md), and the notifier takes nothing but clip announcements from
``vigil.clips``. A recording that does not get there within
``clip_wait_s`` after the alert's end (camera down, recording paused) announces no clip.

Nothing waiting is lost by a restart: the offset committed for a partition never passes the
oldest ``ended`` message whose clip is still pending, so the next recorder to own the partition
reads it again and waits for the clip itself. A clip already announced (``clip_from`` in the
alert's hash) is not announced twice when its messages are read again.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kafka import TopicPartition
from kafka.structs import OffsetAndMetadata

from pipeline.cameras.settings import RecordConfig
from pipeline.common.consumer_loop import ConsumerHandler, ConsumerLoop, Records
from pipeline.common.contracts import validate_camera_id
from pipeline.common.jsoncodec import decode_record
from pipeline.common.kafka import KafkaConfig
from pipeline.common.records import SkippedRecords, reason_of
from pipeline.record.holds import HoldStore
from pipeline.record.index import SegmentIndex

log = logging.getLogger(__name__)

READER = "recorder_alerts"
FOLLOWED = ("started", "ended")
_ALERT_ID = re.compile(r"^[0-9a-f]{20}$")
DAY_S = 86400.0
CLIP_STATUS = "clip"
CHECK_INTERVAL_S = 0.5  # how often pending clips are looked up in the index
DEFAULT_CLIP_WAIT_S = 300.0

# KEYS: 1 alert hash; ARGV: field/value pairs. Writes only into an alert that exists (an expired
# or unknown alert is never recreated without its TTL). Returns 1 if written.
_CLIP_LUA = """
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
redis.call('HSET', KEYS[1], unpack(ARGV))
return 1
"""


def store_clip(client: Any, key: str, start: float, end: float, until: float) -> bool:
    """``clip_from``, ``clip_to``, ``clip_until`` into the alert hash ``key`` when it exists;
    False (nothing written) when it does not."""
    script = client.register_script(_CLIP_LUA)
    args = ["clip_from", repr(start), "clip_to", repr(end), "clip_until", repr(until)]
    return bool(script(keys=[key], args=args))


def clip_path(alert_id: str) -> str:
    """The console's path of the alert's clip."""
    return f"/api/alerts/{alert_id}/clip.mp4"


def _time(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name}: not a time in seconds")
    return float(value)


@dataclass(frozen=True)
class AlertRange:
    """The fields of an alert message the recorder uses."""

    id: str
    camera_id: str
    status: str
    started_at: float
    ended_at: float | None

    @property
    def last(self) -> float:
        """When the alert's condition was last seen: its end, or its start while it runs."""
        return self.ended_at if self.ended_at is not None else self.started_at


def parse_alert(msg: Any) -> AlertRange:
    """The alert's range from a decoded ``vigil.alerts`` message; ``ValueError`` saying why when
    it is not one (the rest of the message is not looked at)."""
    if not isinstance(msg, dict):
        raise ValueError("not a JSON object")
    alert_id, status = msg.get("id"), msg.get("status")
    if not isinstance(alert_id, str) or not _ALERT_ID.match(alert_id):
        raise ValueError("id: not an alert id")
    if not isinstance(status, str) or len(status) > 64:
        raise ValueError("status: not a string")
    camera_id = validate_camera_id(msg.get("camera_id"))  # type: ignore[arg-type]
    started = _time(msg.get("started_at"), "started_at")
    ended_raw = msg.get("ended_at")
    ended = None if ended_raw is None else _time(ended_raw, "ended_at")
    if ended is not None and ended < started:
        raise ValueError("ended_at before started_at")
    return AlertRange(alert_id, camera_id, status, started, ended)


@dataclass
class PendingClip:
    """An ended alert whose clip waits for its recording."""

    alert: AlertRange
    message: dict[str, Any]
    key: bytes | None
    start: float
    end: float
    until: float
    give_up_at: float  # wall clock
    tp: TopicPartition | None = None  # where its ended message is: commits stay behind it
    offset: int = -1


class AlertFollower(ConsumerHandler):
    """Consumes ``vigil.alerts`` and writes holds (module docstring).

    ``record_of(camera_id)``: the camera's ``record:`` settings when it is recorded (enabled,
    ``record.enabled``), else None."""

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
        index: SegmentIndex | None = None,
        clip_wait_s: float = DEFAULT_CLIP_WAIT_S,
    ) -> None:
        self.holds = holds
        self.clips_topic = kafka.topics.clips  # where clips are announced (never the alerts)
        self.index = index  # None: no clip announcements
        self.clip_wait_s = clip_wait_s
        self._pending: dict[str, PendingClip] = {}
        self._checked_at = 0.0
        self.clips = 0  # clips announced
        self.record_of = record_of
        self.clock = clock
        self._poll_timeout_ms = poll_timeout_ms
        self.skipped = SkippedRecords(log, READER)
        self.held = 0  # holds written
        self._next: dict[TopicPartition, int] = {}  # next offset to read, per partition handled
        self._committed: dict[TopicPartition, int] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.loop = ConsumerLoop(
            self,
            kafka,
            kafka.topics.alerts,
            client="record-alerts",
            group_id=group_id,
            session_timeout_ms=session_timeout_ms,
            max_records=500,
            logger=log,
            name="recorder alert follower",
            backoff=(0.5, 10.0),
            # a new group starts at the oldest alert: holds of alerts whose clip is still kept
            consumer_kw={"auto_offset_reset": "earliest"},
            producer_close_s=5,
            unexpected_error="unexpected error in the recorder's alert follower",
            learn_partitions=True,
        )

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> AlertFollower:
        self._stop.clear()
        self._thread = threading.Thread(
            target=self.loop.run, args=(self._stop,), name="record-alerts", daemon=True
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
                where = f"{tp.topic}[{tp.partition}]@{rec.offset}"
                self.handle(rec.value, where, rec.key, tp=tp, offset=rec.offset)
                self._next[tp] = rec.offset + 1
                n += 1
        return n

    def on_revoked(self, tps: set[TopicPartition]) -> None:
        """The partitions' next owner reads their pending alerts again (from the commits).
        Those given straight back to this recorder by the same rebalance keep their state (the
        consumer resumes where it was)."""
        consumer = self.loop.consumer
        gone = set(tps) - (consumer.assignment() if consumer is not None else set())
        for alert_id, p in list(self._pending.items()):
            if p.tp in gone:
                del self._pending[alert_id]
        for tp in gone:
            self._next.pop(tp, None)
            self._committed.pop(tp, None)

    def commit_offsets(self) -> dict[TopicPartition, int]:
        """The offset to commit per partition handled: the next one to read, or the oldest
        pending clip's message while one waits (so a restart reads it again)."""
        out = dict(self._next)
        for p in self._pending.values():
            if p.tp is not None and p.tp in out:
                out[p.tp] = min(out[p.tp], p.offset)
        return out

    def commit(self) -> None:
        if self.loop.consumer is None:
            return
        offsets = {
            tp: off for tp, off in self.commit_offsets().items() if self._committed.get(tp) != off
        }
        if offsets:
            self.loop.consumer.commit(
                {tp: OffsetAndMetadata(off, "", -1) for tp, off in offsets.items()}
            )
            self._committed.update(offsets)

    def after_step(self) -> None:
        now = time.monotonic()
        if self._pending and now - self._checked_at >= CHECK_INTERVAL_S:
            self._checked_at = now
            self.check_clips()

    def on_close(self) -> None:
        if self.loop.consumer is not None:
            try:
                self.commit()
            except Exception as e:  # noqa: BLE001 - the next owner reads them again: holds repeat
                log.debug("recorder alert follower: last commit: %s", e)

    # -- one record -----------------------------------------------------------------------------
    def handle(
        self,
        raw: Any,
        where: str,
        key: bytes | None = None,
        *,
        tp: TopicPartition | None = None,
        offset: int = -1,
    ) -> bool:
        """Hold what the alert message in ``raw`` needs; True when a hold was written."""
        try:
            msg = decode_record(raw)
            alert = parse_alert(msg)
        except Exception as e:  # noqa: BLE001 - hostile input costs one record, never the loop
            self.skipped.skip(where, reason_of(e), str(e)[:200])
            return False
        if alert.status not in FOLLOWED:
            return False
        rec = self.record_of(alert.camera_id)
        if rec is None:
            return False
        start = alert.started_at - rec.pre_s
        end = alert.last + rec.post_s
        until = alert.last + rec.retain.event_days * DAY_S
        if until <= self.clock():
            return False  # an old alert read again: its clip is no longer kept
        # a started alert's hold is open: a recorder in mode events records until it ends
        self.holds.hold(
            alert.camera_id, alert.id, start, end, until, open=alert.status == "started"
        )
        self.held += 1
        log.debug("recorder: hold %s of %s [%.3f, %.3f]", alert.id, alert.camera_id, start, end)
        if alert.status == "ended" and self.index is not None and not self._announced(alert.id):
            self._pending[alert.id] = PendingClip(
                alert, msg, key, start, end, until, self.clock() + self.clip_wait_s, tp, offset
            )
        return True

    @property
    def waiting(self) -> int:
        """Ended alerts whose clip waits for its recording."""
        return len(self._pending)

    def _announced(self, alert_id: str) -> bool:
        """Whether the alert's clip was announced already (its message read again)."""
        return bool(self.holds.client.hexists(self.holds.keys.alert(alert_id), "clip_from"))

    # -- clips ----------------------------------------------------------------------------------
    def check_clips(self) -> None:
        """Announce the pending clips whose range is recorded; forget those waited on too long."""
        assert self.index is not None
        now = self.clock()
        for alert_id, p in list(self._pending.items()):
            segs = self.index.segments(p.alert.camera_id, p.start, p.end)
            if segs and max(s.end for s in segs) >= p.end:
                self.announce(p)
                del self._pending[alert_id]
            elif now >= p.give_up_at:
                log.warning(
                    "recorder: no clip for alert %s of %s: its recording did not reach %.3f "
                    "within %g s",
                    alert_id,
                    p.alert.camera_id,
                    p.end,
                    self.clip_wait_s,
                )
                del self._pending[alert_id]

    def announce(self, p: PendingClip) -> None:
        """The clip fields in the alert's hash (if it exists), then the ``clip`` message."""
        a = p.alert
        store_clip(self.holds.client, self.holds.keys.alert(a.id), p.start, p.end, p.until)
        msg = dict(p.message)
        msg.pop("review", None)
        msg["status"] = CLIP_STATUS
        msg["clip"] = {"from": p.start, "to": p.end, "until": p.until, "path": clip_path(a.id)}
        producer = self.loop.producer
        assert producer is not None
        producer.send(self.clips_topic, key=a.camera_id, value=msg).get(timeout=30)
        self.clips += 1
        log.info("recorder: clip of alert %s (%s) available", a.id, a.camera_id)
