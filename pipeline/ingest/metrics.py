"""Prometheus metrics of the ingest side. Labels carry camera ids, never URLs (they hold secrets)."""

from __future__ import annotations

import logging
import os

from prometheus_client import Counter, Gauge, Histogram, start_http_server

log = logging.getLogger(__name__)

FRAMES_DECODED = Gauge(
    "vigil_camera_frames_decoded", "Frames decoded since the reader started", ["camera"]
)
FRAMES_PROCESSED = Counter(
    "vigil_camera_frames_processed_total",
    "Frames published (detector run or, with motion gating, detections carried over)",
    ["camera"],
)
FRAMES_MOTION_SKIPPED = Counter(
    "vigil_camera_frames_motion_skipped_total",
    "Frames published without a detector run (no motion: last detections carried over)",
    ["camera"],
)
DECODE_FPS = Gauge(
    "vigil_camera_decode_fps", "Frames decoded per second (last interval)", ["camera"]
)
PROCESSED_FPS = Gauge(
    "vigil_camera_processed_fps", "Frames published per second (last interval)", ["camera"]
)
FRAMES_DROPPED = Gauge(
    "vigil_camera_frames_dropped", "Frames replaced before the detector took them", ["camera"]
)
FRAMES_STALE = Counter(
    "vigil_camera_frames_stale_total", "Frames too old when the detector got to them", ["camera"]
)
DECODE_CPU = Gauge(
    "vigil_camera_decode_cpu_seconds",
    "CPU seconds spent reading and decoding the stream since the reader started",
    ["camera"],
)
RECONNECTS = Gauge("vigil_camera_reconnects", "Reconnects since the reader started", ["camera"])
CAMERA_UP = Gauge("vigil_camera_up", "1 while the camera is streaming", ["camera"])
INFERENCE_SECONDS = Histogram(
    "vigil_inference_seconds",
    "Detector time per batch",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 3.2),
)
BATCH_SIZE = Histogram(
    "vigil_inference_batch_size", "Frames per detector batch", buckets=(1, 2, 4, 8, 16, 32)
)
DETECTOR_INFO = Gauge(
    "vigil_detector_info",
    "The loaded detector (value 1)",
    ["model", "version", "backend", "device"],
)
PUBLISH_SECONDS = Histogram(
    "vigil_publish_seconds",
    "Kafka acknowledgement latency",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5),
)
PUBLISH_ERRORS = Counter("vigil_publish_errors_total", "Detection messages Kafka did not accept")
CAPTURE_TO_PUBLISH_SECONDS = Histogram(
    "vigil_capture_to_publish_seconds",
    "Frame capture to Kafka acknowledgement",
    buckets=(0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4),
)

_started: set[int] = set()


def serve(port: int | None, addr: str | None = None) -> None:
    """Start the /metrics endpoint once per process; port 0/None disables it."""
    # 127.0.0.1 unless told otherwise: in a container set VIGIL_METRICS_ADDR=0.0.0.0
    addr = addr or os.environ.get("VIGIL_METRICS_ADDR", "127.0.0.1")
    if not port or port in _started:
        return
    start_http_server(port, addr=addr)
    _started.add(port)
    log.info("metrics on http://%s:%d/metrics", addr, port)
