"""Rule preview: what a candidate rule would have raised on what the cameras already saw.

The recorded detection messages of a time range are read back from ``vigil.detections`` and run
through a sandboxed :class:`RuleEngine` holding only the candidate rule: nothing is written to
Redis or Kafka (Redis is only read, for the frames of the snapshots). The engine decides on
capture time alone, so the alerts, and their ids, are the ones the live service would have raised
for that rule from a fresh state at ``start``.

Reading: partitions carry cameras (records are keyed by camera id), so each partition is read in
offset order through its own engine, like the service does. A partition is read from the first
offset whose record timestamp (the capture time, in ms) is at least ``start`` (Kafka's time
index, ``offsets_for_times``) until its first record after ``end``, or its end offset as seen when
the preview began, so a live topic cannot keep a preview going. No consumer group, no commits.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from kafka import TopicPartition
from kafka.errors import KafkaError, KafkaTimeoutError

from alerts.config import AlertsConfig, AlertsSettings, RuleConfig, parse_alerts_config
from alerts.engine import RuleEngine
from alerts.envelope import check_envelope, check_epoch
from alerts.events import AlertEvent
from alerts.preview_snapshots import FrameSource, add_snapshots
from pipeline.common.contracts import CAMERA_ID
from pipeline.common.errors import UsageError
from pipeline.common.jsoncodec import decode_record
from pipeline.common.kafka import KafkaConfig, make_consumer

__all__ = ["PreviewResult", "pair_events", "preview_rule"]

log = logging.getLogger(__name__)

# Records per poll: the fixed cost of a poll is paid once per this many messages.
_MAX_POLL_RECORDS = 5000
# A poll waits at most this long for data, so the deadline is checked at least this often.
_POLL_MS = 200


@dataclass
class PreviewResult:
    """The alerts a rule would have raised over ``[start, end]`` and what it took to find them."""

    # id, camera_id, rule_id, started_at, ended_at (None: still open at the end), label,
    # track_id, count, box, severity, snapshot (JPEG bytes or None), snapshot_source ("live",
    # "recording" or None), snapshot_note (why there is no snapshot, else None); oldest first
    alerts: list[dict[str, Any]]
    messages: int  # detection messages read in the range (all cameras of the topic)
    frames: int  # messages of the rule's cameras run through the engine
    seconds: float  # wall time of the preview
    start: float
    end: float
    skipped: int = 0  # messages of the rule's cameras that were malformed (the service's DLQ)
    truncated: bool = False  # more alerts than max_alerts: the oldest max_alerts are kept


@dataclass(slots=True)
class _Pair:
    """One alert: its "started" event and, once it cleared, its "ended" one."""

    started: AlertEvent
    ended: AlertEvent | None = None

    def to_dict(self) -> dict[str, Any]:
        """The preview's entry, with the values (rounding included) of the ``vigil.alerts/v1``
        messages the live service would have sent for this alert."""
        s = self.started.to_dict()
        e = self.ended.to_dict() if self.ended is not None else None
        # crowding's "ended" carries the peak count, which says more than the count at the start
        count = e["count"] if e is not None and e["count"] is not None else s["count"]
        return {
            "id": s["id"],
            "camera_id": s["camera_id"],
            "rule_id": s["rule_id"],
            "started_at": s["started_at"],
            "ended_at": None if e is None else e["ended_at"],
            "label": s["label"],
            "track_id": s["track_id"],
            "count": count,
            "box": s["box"],
            "severity": s["severity"],
            "snapshot": None,
            "snapshot_source": None,
            "snapshot_note": None,
        }


def pair_events(events: Iterable[AlertEvent]) -> list[_Pair]:
    """Pair "started" and "ended" events by alert id, oldest alert first (ties by camera, id).

    An "ended" whose "started" is not among ``events`` is dropped: from a fresh engine state it
    cannot happen, and an alert without its start has nothing to show."""
    pairs: dict[str, _Pair] = {}
    for ev in events:
        if ev.status == "started":
            pairs.setdefault(ev.id, _Pair(ev))
        else:
            p = pairs.get(ev.id)
            if p is not None and p.ended is None:
                p.ended = ev
    return sorted(pairs.values(), key=_order)


def _order(p: _Pair) -> tuple[float, str, str]:
    return p.started.started_at, p.started.camera_id, p.started.id


def preview_rule(
    cfg: AlertsSettings,
    rule: RuleConfig,
    start: float,
    end: float,
    cameras: list[str] | None = None,
    timeout_s: float = 120.0,
    max_alerts: int = 500,
    frames_from: FrameSource | None = None,
    max_recorded: int = 50,
) -> PreviewResult:
    """Replay the detection messages captured in ``[start, end]`` (epoch seconds) through
    ``rule`` alone and return the alerts it would have raised.

    ``cameras``: the cameras to try the rule on (``"*"`` for all); None means the rule's own
    ``cameras``. The rule runs even when it is disabled (trying it before turning it on is the
    point). ``timeout_s`` bounds the whole preview: ``TimeoutError`` past it. Arguments that
    cannot be used: ``UsageError`` (a ``ValueError``).
    ``KafkaUnavailable`` when Kafka cannot be reached; Redis unreachable only costs the
    snapshots.

    Snapshots (:mod:`alerts.preview_snapshots`): the triggering frame while Redis keeps it, else
    ``frames_from(camera_id, started_at)`` (a camera's recording; at most ``max_recorded``
    decoded), drawn on while time is left before the deadline; past it the remaining alerts
    have none (``snapshot_note`` says so), the preview itself stands."""
    t0 = time.monotonic()
    deadline = t0 + timeout_s
    if not (math.isfinite(start) and math.isfinite(end)) or start < 0:
        raise UsageError(f"start and end must be epoch seconds, got {start!r}, {end!r}")
    if end < start:
        raise UsageError(f"end ({end}) is before start ({start})")
    if not timeout_s > 0:
        raise UsageError(f"timeout_s must be positive, got {timeout_s!r}")
    if max_alerts < 0:
        raise UsageError(f"max_alerts must be >= 0, got {max_alerts!r}")
    if max_recorded < 0:
        raise UsageError(f"max_recorded must be >= 0, got {max_recorded!r}")
    cams = list(rule.cameras) if cameras is None else list(cameras)
    for c in cams:
        if c != "*" and not CAMERA_ID.match(c):
            raise UsageError(f"{c!r} is not a camera id")
    if not cams:
        raise UsageError('cameras: give at least one camera id, or "*" for all cameras')
    acfg = cfg.alerts if isinstance(cfg.alerts, AlertsConfig) else parse_alerts_config(cfg.alerts)
    candidate = rule.model_copy(update={"enabled": True, "cameras": cams})
    # The service's tracker and envelope settings, the candidate as the only rule.
    sandbox = AlertsConfig(tracker=acfg.tracker, service=acfg.service, rules=[candidate])
    RuleEngine(sandbox)  # a rule type without an implementation fails here, before Kafka
    wanted = None if "*" in cams else {c.encode() for c in cams}

    scan = _Scan(sandbox, wanted, start, end, rule.id, deadline, timeout_s)
    scan.run(cfg.kafka)
    pairs = pair_events(scan.events)
    truncated = len(pairs) > max_alerts
    pairs = pairs[:max_alerts]
    alerts = [p.to_dict() for p in pairs]
    add_snapshots(
        cfg,
        pairs,
        alerts,
        acfg.service.snapshot_quality,
        deadline,
        frames_from=frames_from,
        max_recorded=max_recorded,
    )
    seconds = time.monotonic() - t0
    log.info(
        "rule preview %s: %d messages, %d frames, %d skipped, %d alert(s)%s in %.2f s",
        rule.id,
        scan.messages,
        scan.frames,
        scan.skipped,
        len(alerts),
        " (truncated)" if truncated else "",
        seconds,
    )
    return PreviewResult(
        alerts=alerts,
        messages=scan.messages,
        frames=scan.frames,
        seconds=seconds,
        start=start,
        end=end,
        skipped=scan.skipped,
        truncated=truncated,
    )


# The deadline is checked at least every this many records (a slow rule on a big batch).
_CHECK_EVERY = 256


class _Scan:
    """Reads the range partition by partition and runs each partition through its own engine."""

    def __init__(
        self,
        sandbox: AlertsConfig,
        wanted: set[bytes] | None,
        start: float,
        end: float,
        rule_id: str,
        deadline: float,
        timeout_s: float,
    ) -> None:
        self.sandbox = sandbox
        self.wanted = wanted  # record keys (camera ids) to run; None: every camera
        self.start_ms, self.end_ms = math.floor(start * 1000), math.floor(end * 1000)
        self.rule_id = rule_id
        self.deadline = deadline
        self.timeout_s = timeout_s
        self.messages = 0
        self.frames = 0
        self.skipped = 0
        self.events: list[AlertEvent] = []
        self._logged_error = False

    def timed_out(self, what: str) -> TimeoutError:
        return TimeoutError(
            f"rule preview of {self.rule_id!r} did not finish within {self.timeout_s:g} s "
            f"({what}; {self.messages} messages read): preview a shorter time range or fewer "
            "cameras, or give it more time"
        )

    def left_ms(self, what: str) -> int:
        """Milliseconds left (at least 1); ``TimeoutError`` when none."""
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise self.timed_out(what)
        return max(1, int(left * 1000))

    def run(self, kcfg: KafkaConfig) -> None:
        topic = kcfg.topics.detections
        reading = f"reading {topic}"
        consumer = make_consumer(
            _bounded(kcfg, self.left_ms("connecting to Kafka")),
            "preview",
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",  # only used if retention removes what we are reading
            allow_auto_create_topics=False,
            max_poll_records=_MAX_POLL_RECORDS,
            fetch_max_wait_ms=_POLL_MS,
            max_partition_fetch_bytes=8 * 1024 * 1024,
        )
        try:
            parts = consumer.partitions_for_topic(topic)
            if not parts:
                log.warning("rule preview: topic %s does not exist: nothing to preview", topic)
                return
            tps = [TopicPartition(topic, p) for p in sorted(parts)]
            lookup = f"looking up the offsets of {topic}"
            try:
                # End offsets first: a record appended after them is not read, whatever its time.
                ends = consumer.end_offsets(tps, timeout_ms=self.left_ms(lookup))
                firsts = consumer.offsets_for_times(
                    dict.fromkeys(tps, self.start_ms), timeout_ms=self.left_ms(lookup)
                )
            except KafkaTimeoutError:
                raise self.timed_out(lookup) from None
            todo: dict[TopicPartition, int] = {}  # partition -> its end offset as of now
            for tp in tps:
                first = firsts.get(tp)
                # None: nothing at or after start; a first record after end: nothing in range
                if first is not None and first.offset < ends[tp] and first.timestamp <= self.end_ms:
                    todo[tp] = ends[tp]
            if not todo:
                return
            consumer.assign(list(todo))
            for tp in todo:
                consumer.seek(tp, firsts[tp].offset)
            engines = {tp: RuleEngine(self.sandbox) for tp in todo}
            while todo:
                batches = consumer.poll(timeout_ms=min(_POLL_MS, self.left_ms(reading)))
                done = []
                for tp, recs in batches.items():
                    stop = todo.get(tp)
                    if stop is not None and self._partition(engines[tp], recs, stop):
                        done.append(tp)
                for tp in todo:
                    # nothing fetched: maybe past the end already (behind a transaction marker,
                    # or records removed by retention while reading)
                    if (
                        tp not in batches
                        and tp not in done
                        and consumer.position(tp, timeout_ms=self.left_ms(reading)) >= todo[tp]
                    ):
                        done.append(tp)
                for tp in done:
                    del todo[tp]
                if done:
                    consumer.pause(*done)
        except KafkaTimeoutError:
            raise self.timed_out(reading) from None
        finally:
            try:
                consumer.close(autocommit=False, timeout_ms=2000)
            except (KafkaError, OSError) as e:
                log.debug("preview consumer close: %s", e)

    def _partition(self, engine: RuleEngine, recs: list[Any], stop: int) -> bool:
        """Run one partition's fetched records in order; True when the partition is done."""
        wanted = self.wanted
        start_ms, end_ms = self.start_ms, self.end_ms
        svc = self.sandbox.service
        for i, rec in enumerate(recs):
            if rec.offset >= stop or rec.timestamp > end_ms:
                return True
            if i % _CHECK_EVERY == _CHECK_EVERY - 1 and time.monotonic() > self.deadline:
                raise self.timed_out(f"reading {rec.topic}")
            if rec.timestamp < start_ms:
                continue  # out of order, from before the range: not part of it
            self.messages += 1
            if wanted is not None and rec.key not in wanted:
                continue  # another camera: not even decoded
            try:
                msg = decode_record(rec.value)  # bounded size and depth, like the service
                # The key must be the camera id: compared here (the usual case, cheap), and by
                # the service's own check, for its error, when it is not.
                key = rec.key
                if (
                    type(msg) is not dict
                    or key is None
                    or key.decode("utf-8", "replace") != msg.get("camera_id")
                ):
                    check_envelope(rec, msg, None, None)
                _check_times(rec.timestamp, msg, svc.max_future_s, svc.max_age_s)
                if type(msg) is dict:  # the service's epoch check, at the time of recording
                    at = rec.timestamp / 1000.0 if rec.timestamp >= 0 else None
                    check_epoch(msg, svc.max_clock_skew_s, now=at)
                events = engine.process(msg)
            except ValueError:  # what the service dead-letters
                self.skipped += 1
                continue
            except Exception:  # a rule bug: the service parks the message, so do we
                self.skipped += 1
                if not self._logged_error:
                    self._logged_error = True
                    log.exception(
                        "rule preview: the engine failed on %s[%d]@%d (message skipped)",
                        rec.topic,
                        rec.partition,
                        rec.offset,
                    )
                continue
            self.frames += 1
            if events:
                self.events += events
        return bool(recs) and recs[-1].offset + 1 >= stop


def _check_times(
    record_ts_ms: int, msg: Any, max_future_s: float | None, max_age_s: float | None
) -> None:
    """The service's capture-time window (alerts/envelope.py), against the record's timestamp
    only: the service also checks its own clock, which for a recorded message was the clock of
    the time it was recorded, about the record's timestamp, never today's."""
    if record_ts_ms is None or record_ts_ms < 0 or not isinstance(msg, dict):
        return
    ts = msg.get("capture_ts")
    if type(ts) not in (int, float) or not math.isfinite(ts):
        return  # FrameEvent.from_message says what is wrong
    ref = record_ts_ms / 1000.0
    if max_future_s is not None and ts > ref + max_future_s:
        raise ValueError(f"capture_ts {ts!r} is {ts - ref:.0f} s ahead of the record's timestamp")
    if max_age_s is not None and ts < ref - max_age_s:
        raise ValueError(f"capture_ts {ts!r} is {ref - ts:.0f} s behind the record's timestamp")


def _bounded(kcfg: KafkaConfig, left_ms: int) -> KafkaConfig:
    """The Kafka settings with request and bootstrap timeouts no longer than what is left of the
    preview (at least 1 s: kafka-python needs more than its fetch wait)."""
    ms = max(1000, left_ms)
    return kcfg.model_copy(
        update={
            "request_timeout_ms": min(kcfg.request_timeout_ms, ms),
            "bootstrap_timeout_ms": min(kcfg.bootstrap_timeout_ms, ms),
        }
    )
