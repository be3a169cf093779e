"""Prometheus metrics of the recording stage (docs/metrics.md). Labels carry camera ids and fixed
reasons, never URLs or paths."""

from __future__ import annotations

import errno

from prometheus_client import Counter, Gauge

RECORDING_PAUSED = Gauge(
    "vigil_recording_paused",
    "1 while the camera's recording is paused because its segments cannot be written",
    ["camera"],
)
RECORDING_PAUSES = Counter(
    "vigil_recording_pauses_total",
    "Times the camera's recording paused, by reason (disk_full, not_writable)",
    ["camera", "reason"],
)
RECORDING_UNRECORDABLE = Gauge(
    "vigil_recording_unrecordable",
    "1 when the camera's recording stopped because its stream cannot be recorded (no video, or "
    "a video codec MP4 segments cannot hold)",
    ["camera"],
)
RECORDINGS_BYTES = Gauge(
    "vigil_recordings_bytes",
    "Bytes of the camera's segments after the last retention pass",
    ["camera"],
)
RECORDINGS_FREE_BYTES = Gauge(
    "vigil_recordings_free_bytes", "Free bytes on recordings.dir's file system after the last pass"
)
RECORDINGS_DELETED = Counter(
    "vigil_recordings_deleted_total",
    "Segments deleted by retention, by reason (days, disk_budget, free_space)",
    ["reason"],
)
RECORDINGS_DELETED_BYTES = Counter(
    "vigil_recordings_deleted_bytes_total", "Bytes of the segments deleted by retention", ["reason"]
)

_DISK_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}


def pause_reason(e: BaseException) -> str:
    """``disk_full`` (no space, quota) or ``not_writable`` (permissions, a read-only or missing
    folder, anything else)."""
    return "disk_full" if getattr(e, "errno", None) in _DISK_FULL else "not_writable"
