"""Alert events as the rules engine writes them (alert.v1), and plain JPEG frames."""

from __future__ import annotations

import cv2
import numpy as np

from alerts.events import AlertEvent


def alert_event(
    status: str = "started", aid: str = "0123456789abcdef0123", camera: str = "cam-a", **kw
) -> dict:
    ev = AlertEvent(
        id=aid,
        camera_id=camera,
        rule_id="lobby",
        rule_type="zone_intrusion",
        status=status,  # type: ignore[arg-type]
        severity="high",
        started_at=1000.0,
        updated_at=1002.5 if status == "ended" else 1000.0,
        ended_at=1002.0 if status == "ended" else None,
        frame_seq=7,
        epoch=123,
        label="person",
        track_id=4,
        box=(0.1, 0.2, 0.3, 0.9),
        confidence=0.87,
        zone=[[0.0, 0.0], [0.5, 0.0], [0.5, 1.0]],
        details={"reason": "cleared"} if status == "ended" else {"frames": 3},
        **kw,
    )
    return ev.to_dict()


def plain_jpeg(w: int = 160, h: int = 90, value: int = 128) -> bytes:
    """A uniform grey ``w`` x ``h`` JPEG."""
    return cv2.imencode(".jpg", np.full((h, w, 3), value, np.uint8))[1].tobytes()
