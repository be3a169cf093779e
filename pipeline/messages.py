"""The detection message: one JSON object per processed frame on ``vigil.detections``.

``pipeline/schemas/detection.v1.json`` is the contract (docs/messages.md explains it).
"""

from __future__ import annotations

import json
import time
from functools import cache
from pathlib import Path
from typing import Any

from detectors.types import Detection
from pipeline.capture import Frame

SCHEMA_VERSION = 1
SCHEMA_DIR = Path(__file__).parent / "schemas"


def detection_message(
    frame: Frame,
    detections: list[Detection],
    model_name: str,
    model_version: str,
    worker_id: str,
    inference_ms: float,
) -> dict[str, Any]:
    return {
        "schema_version": SCHEMA_VERSION,
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


@cache
def load_schema(name: str = "detection.v1.json") -> dict[str, Any]:
    return json.loads((SCHEMA_DIR / name).read_text())


def validate_detection_message(msg: Any) -> None:
    """Raise ``jsonschema.ValidationError`` naming the first offending field."""
    import jsonschema

    jsonschema.validate(msg, load_schema())
