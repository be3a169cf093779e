"""The boxes of a clip: the detection messages of one camera over a time range, read back from
``vigil.detections`` (the only place the detections of every processed frame are kept; Redis
holds the newest frame's only), for the console to draw over the alert's clip.

Records are keyed by camera id, so one partition holds a camera's messages (the producer's
default partitioner: murmur2 of the key). It is read from the first offset whose timestamp (the
capture time, ms) is at or after the start (Kafka's time index) to the first record after the end,
or its end offset as seen when the read began. Bounded: at most :data:`MAX_RANGE_S` from the
start, :data:`MAX_FRAMES` frames, and ``timeout_s``; what was cut short says so. Records are
hostile input: only well-formed boxes (four numbers in ``[0, 1]``) of this camera come back.
Detections older than the topic's retention (24 h by default) are gone: the answer is empty and
says why.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any

from kafka import TopicPartition
from kafka.errors import KafkaError
from kafka.partitioner.default import murmur2

from pipeline.common.jsoncodec import RecordRejected, decode_record
from pipeline.common.kafka import KafkaConfig, make_consumer

log = logging.getLogger(__name__)

MAX_RANGE_S = 600.0  # detections of at most this much of a clip, from its start
MAX_FRAMES = 12000  # frames answered at most
MAX_BOXES = 100  # boxes per frame at most
_POLL_MS = 200


@dataclass
class ClipDetections:
    """The frames with detections in ``[start, end]``: ``(capture_ts, boxes)``, oldest first."""

    start: float
    end: float
    # every frame processed, with its boxes (none: nothing detected in it)
    frames: list[tuple[float, list[dict[str, Any]]]] = field(default_factory=list)
    truncated: str | None = None  # why the answer stops early, when it does


def partition_of(camera_id: str, partitions: list[int]) -> int:
    """The partition the producers' default partitioner puts ``camera_id``'s records in."""
    ordered = sorted(partitions)
    return ordered[(murmur2(camera_id.encode()) & 0x7FFFFFFF) % len(ordered)]


def _box(d: Any) -> dict[str, Any] | None:
    if not isinstance(d, dict):
        return None
    box = d.get("box")
    if not (isinstance(box, list) and len(box) == 4):
        return None
    if not all(isinstance(v, int | float) and math.isfinite(v) and 0 <= v <= 1 for v in box):
        return None
    conf = d.get("confidence")
    track = d.get("track_id")
    return {
        "box": [round(float(v), 5) for v in box],
        "label": str(d.get("label", ""))[:40],
        "confidence": round(float(conf), 3) if isinstance(conf, int | float) else None,
        "track_id": track if isinstance(track, int) and not isinstance(track, bool) else None,
    }


def _frame(msg: Any, camera_id: str, t0: float, t1: float) -> tuple[float, list] | None:
    if not isinstance(msg, dict) or msg.get("camera_id") != camera_id:
        return None
    ts = msg.get("capture_ts")
    if not isinstance(ts, int | float) or not math.isfinite(ts) or not t0 <= ts <= t1:
        return None
    dets = msg.get("detections")
    if not isinstance(dets, list):
        return None
    boxes = [b for b in (_box(d) for d in dets[:MAX_BOXES]) if b is not None]
    return float(ts), boxes


def read_detections(
    kcfg: KafkaConfig, camera_id: str, t0: float, t1: float, timeout_s: float = 5.0
) -> ClipDetections:
    """The detections of ``camera_id`` between ``t0`` and ``t1`` (at most :data:`MAX_RANGE_S`).
    Raises KafkaError (or :class:`~pipeline.common.kafka.KafkaUnavailable`) when Kafka cannot
    be read; a timeout returns what was read, marked truncated."""
    end = min(t1, t0 + MAX_RANGE_S)
    out = ClipDetections(t0, end)
    if end < t1:
        out.truncated = f"boxes of the first {MAX_RANGE_S:.0f} s only"
    deadline = time.monotonic() + timeout_s
    ms = max(1000, int(timeout_s * 1000))
    bounded = kcfg.model_copy(
        update={
            "request_timeout_ms": min(kcfg.request_timeout_ms, ms),
            "bootstrap_timeout_ms": min(kcfg.bootstrap_timeout_ms, ms),
        }
    )
    topic = kcfg.topics.detections
    consumer = make_consumer(
        bounded,
        "clip-boxes",
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        allow_auto_create_topics=False,
        fetch_max_wait_ms=_POLL_MS,
    )
    try:
        parts = consumer.partitions_for_topic(topic)
        if not parts:
            return out
        tp = TopicPartition(topic, partition_of(camera_id, list(parts)))
        stop = consumer.end_offsets([tp], timeout_ms=ms)[tp]
        first = consumer.offsets_for_times({tp: math.floor(t0 * 1000)}, timeout_ms=ms).get(tp)
        if first is None or first.offset >= stop:
            return out
        end_ms = math.floor(end * 1000)
        key = camera_id.encode()
        consumer.assign([tp])
        consumer.seek(tp, first.offset)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                out.truncated = f"read for {timeout_s:g} s, stopped there"
                break
            recs = consumer.poll(timeout_ms=min(_POLL_MS, max(1, int(left * 1000)))).get(tp, [])
            if not recs and consumer.position(tp, timeout_ms=ms) >= stop:
                break
            done = False
            for rec in recs:
                if rec.offset >= stop or rec.timestamp > end_ms + 1000:
                    done = True  # capture_ts may be a little before the record's timestamp
                    break
                if rec.key != key:
                    continue
                try:
                    got = _frame(decode_record(rec.value), camera_id, t0, end)
                except RecordRejected:
                    continue
                if got is None:
                    continue
                out.frames.append(got)
                if len(out.frames) >= MAX_FRAMES:
                    out.truncated = f"the first {MAX_FRAMES} frames only"
                    done = True
                    break
            if done:
                break
    finally:
        try:
            consumer.close(autocommit=False, timeout_ms=2000)
        except (KafkaError, OSError) as e:
            log.debug("clip boxes consumer close: %s", e)
    out.frames.sort(key=lambda f: f[0])
    return out
