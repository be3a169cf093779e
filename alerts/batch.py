"""A batch of the alert service (:mod:`alerts.service`) on its way to Redis: each alert event
with its alert.v1 message encoded once and what the console's review keeps with it
(:class:`BatchAlert`), and the idempotent Redis write with the snapshot and source frame of each
started alert (:class:`BatchStore`, a part of :class:`alerts.service.AlertService`, which sets
the attributes it declares)."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from alerts import metrics as m
from alerts.config import AlertServiceConfig
from alerts.events import AlertEvent, FrameEvent
from alerts.snapshots import render_snapshot
from alerts.store import AlertStore, AlertWrite
from pipeline.common.jsoncodec import dumps, dumps_text

log = logging.getLogger(__name__)


@dataclass(slots=True)
class BatchAlert:
    event: AlertEvent
    message: dict[str, Any]
    capture_ts: float
    payload: bytes  # the message as JSON, encoded once: stored in Redis and published as is
    # started events: every detection of the triggering frame as JSON, for the console's review
    frame_detections: str | None = None

    @classmethod
    def of(cls, event: AlertEvent, capture_ts: float, frame_detections: str | None = None):
        d = event.to_dict()
        return cls(event, d, capture_ts, dumps(d), frame_detections)


def frame_detections(frame: FrameEvent) -> str:
    """All the frame's detections as JSON (``{label, confidence, box, track_id}``, the shape of
    the console's live view), with the track ids the engine gave them, rounded like alerts."""
    return dumps_text(
        [
            {
                "label": d.label,
                "confidence": round(d.confidence, 4),
                "box": [round(v, 5) for v in d.box],
                "track_id": d.track_id,
            }
            for d in frame.detections
        ]
    )


class BatchStore:
    # set by AlertService.__init__
    scfg: AlertServiceConfig
    store: AlertStore
    stats: dict[str, int]
    _stop: threading.Event

    def _await_late_frames(
        self, started: list[BatchAlert], sources: list[tuple[bytes | None, bool]]
    ) -> None:
        """Fill in frames that were not in Redis yet: the worker's frame store writes in the
        background, so the newest detection may beat its frame by a few ms. One short wait per
        batch, only for alerts of frames captured in the last few seconds (a replay of old
        messages finds its frames expired, waiting would not help)."""
        wait = self.scfg.snapshot_wait_s
        if wait <= 0:
            return
        now = time.time()
        late = [
            i
            for i, (frame, already) in enumerate(sources)
            if frame is None and not already and now - started[i].capture_ts < wait + 5.0
        ]
        if not late:
            return
        self._stop.wait(wait)
        again = self.store.snapshot_sources(
            [
                (a.event.id, a.event.camera_id, a.event.epoch, a.event.frame_seq)
                for a in (started[i] for i in late)
            ]
        )
        for i, found in zip(late, again, strict=True):
            sources[i] = found

    def _store(self, alerts: list[BatchAlert]) -> list[BatchAlert]:
        """Write to Redis; returns the alerts Kafka has not acknowledged yet."""
        t0 = time.perf_counter()
        started = [a for a in alerts if a.event.status == "started"]
        sources = self.store.snapshot_sources(
            [(a.event.id, a.event.camera_id, a.event.epoch, a.event.frame_seq) for a in started]
        )
        self._await_late_frames(started, sources)
        snaps: dict[int, bytes | None] = {}
        for a, (frame, already) in zip(started, sources, strict=True):
            if frame is not None and not already:
                try:
                    snaps[id(a)] = render_snapshot(frame, a.message, self.scfg.snapshot_quality)
                except Exception as e:  # a bad JPEG must not block the alert
                    log.warning("snapshot of alert %s failed: %s", a.event.id, e)
        # the frame as the camera saw it, for the console's review (kept like the snapshot)
        source = {
            id(a): frame
            for a, (frame, already) in zip(started, sources, strict=True)
            if frame is not None and not already
        }
        results = self.store.write_alerts(
            [
                AlertWrite(
                    a.message,
                    a.capture_ts,
                    snaps.get(id(a)),
                    a.payload,
                    source=source.get(id(a)),
                    frame_detections=a.frame_detections,
                )
                for a in alerts
            ]
        )
        now = time.time()
        m.REDIS_WRITE_SECONDS.observe(time.perf_counter() - t0)
        todo = []
        for a, (written, published) in zip(alerts, results, strict=True):
            if written:
                self.stats["alerts_written"] += 1
                m.ALERTS_WRITTEN.labels(a.event.rule_id, a.event.status).inc()
                m.CAPTURE_TO_REDIS_SECONDS.observe(max(0.0, now - a.capture_ts))
            else:
                self.stats["alerts_replayed"] += 1
                m.ALERTS_REPLAYED.inc()
            if not published:
                todo.append(a)
        return todo
