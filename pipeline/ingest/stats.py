"""What the detection loop counts, and the per-camera figures it exports about once a second.

Counters (frames detected, carried over) are plain ints read by the bench and the tests; the
Prometheus metrics (:mod:`pipeline.ingest.metrics`, docs/metrics.md) and the camera status rows
of the console (:func:`pipeline.ingest.live.camera_status`) are derived here from the readers'
own counters and the frames the loop published.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from pipeline.common.contracts import Frame, FrameDetector
from pipeline.ingest import metrics
from pipeline.ingest.live import CameraStatus, camera_status

if TYPE_CHECKING:
    from pipeline.ingest.capture import CameraReader

StatusListener = Callable[[list[CameraStatus]], None]


class WorkerStats:
    """The loop's counters; :meth:`export` turns them and the readers' into metrics and rows."""

    def __init__(self) -> None:
        self.detector_frames = 0  # frames that went through the detector
        self.skipped_frames = 0  # frames published with carried-over detections (no motion)
        self.processed: dict[str, int] = {}  # camera -> frames published
        self.frame_ts: dict[str, float] = {}  # camera -> capture time of its newest frame out
        self._fps_state: dict[str, tuple[float, int, int]] = {}  # camera -> (t, decoded, processed)

    def detected(self, frames: int, elapsed_s: float) -> None:
        """A detector batch of ``frames`` frames finished after ``elapsed_s``."""
        metrics.INFERENCE_SECONDS.observe(elapsed_s)
        metrics.BATCH_SIZE.observe(frames)
        self.detector_frames += frames

    def carried(self, camera_id: str) -> None:
        """A frame skipped the detector (no motion)."""
        self.skipped_frames += 1
        metrics.FRAMES_MOTION_SKIPPED.labels(camera_id).inc()

    def frame_out(self, frame: Frame) -> None:
        """``frame``'s message is about to be published."""
        self.processed[frame.camera_id] = self.processed.get(frame.camera_id, 0) + 1
        self.frame_ts[frame.camera_id] = frame.capture_ts

    def frame_sent(self, frame: Frame) -> None:
        """``frame``'s message went to the producer."""
        metrics.FRAMES_PROCESSED.labels(frame.camera_id).inc()

    def forget(self, camera_id: str) -> None:
        """The camera left this worker (its published count stays: it is a running total)."""
        self._fps_state.pop(camera_id, None)
        self.frame_ts.pop(camera_id, None)

    def export(
        self,
        readers: Iterable[CameraReader],
        detector: FrameDetector | None,
        listeners: list[StatusListener],
    ) -> None:
        """Set the gauges of the detector and each camera; hand one status row per camera to
        ``listeners`` (called from the detection loop: they must not block)."""
        if detector is not None:
            metrics.DETECTOR_INFO.labels(
                detector.name,
                detector.version,
                getattr(detector, "backend_name", "ultralytics"),
                str(getattr(detector, "device", "")),
            ).set(1)
        now = time.monotonic()
        rows: list[CameraStatus] = []
        for r in readers:
            s = r.stats
            processed = self.processed.get(r.camera_id, 0)
            prev = self._fps_state.get(r.camera_id)
            decode_fps = processed_fps = 0.0
            if prev is not None and now > prev[0]:
                dt = now - prev[0]
                decode_fps = (s.frames_decoded - prev[1]) / dt
                processed_fps = (processed - prev[2]) / dt
                metrics.DECODE_FPS.labels(r.camera_id).set(decode_fps)
                metrics.PROCESSED_FPS.labels(r.camera_id).set(processed_fps)
            self._fps_state[r.camera_id] = (now, s.frames_decoded, processed)
            metrics.FRAMES_DECODED.labels(r.camera_id).set(s.frames_decoded)
            metrics.FRAMES_DROPPED.labels(r.camera_id).set(s.frames_dropped)
            metrics.DECODE_CPU.labels(r.camera_id).set(s.decode_cpu_s)
            metrics.RECONNECTS.labels(r.camera_id).set(s.reconnects)
            metrics.CAMERA_UP.labels(r.camera_id).set(1 if s.state == "streaming" else 0)
            if listeners:
                fts = self.frame_ts.get(r.camera_id)
                rows.append(
                    camera_status(r.camera_id, r.spec.url, s, decode_fps, processed_fps, fts)
                )
        for listener in listeners:
            listener(rows)
