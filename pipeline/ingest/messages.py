"""The detection message: one JSON object per processed frame on ``vigil.detections``.

``pipeline/common/schemas/detection.v1.json`` is the contract (docs/messages.md explains it).
"""

from __future__ import annotations

import time
from typing import Any

from pipeline.common.contracts import (
    DETECTION_SCHEMA_VERSION,
    Detection,
    Frame,
    load_schema,
    validate_detection_message,
)

__all__ = ["detection_message", "load_schema", "validate_detection_message"]


def detection_message(
    frame: Frame,
    detections: list[Detection],
    model_name: str,
    model_version: str,
    worker_id: str,
    inference_ms: float,
) -> dict[str, Any]:
    return {
        "schema_version": DETECTION_SCHEMA_VERSION,
        "camera_id": frame.camera_id,
        "seq": frame.seq,
        "epoch": frame.epoch,
        "capture_ts": round(frame.capture_ts, 6),
        "publish_ts": round(time.time(), 6),
        "frame": {"width": frame.width, "height": frame.height},
        "model": {"name": model_name, "version": model_version},
        "worker_id": worker_id,
        "inference_ms": round(inference_ms, 3),
        "detections": [d.to_dict() for d in detections],
    }
