"""The console's pictures: a camera's newest frame with its boxes and its rules' zones and lines.

The ingest worker stores the frame undrawn (``{p}live:<camera>``) with its detections, so the
console draws what the operator needs now, including zones saved a second ago.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import cv2
import numpy as np

from alerts.snapshots import SEVERITY_COLORS, decode_jpeg

BOX_COLOR = (80, 220, 80)
ZONE_COLOR = (255, 255, 0)
LINE_COLOR = (255, 0, 255)


def _px(x: float, y: float, w: int, h: int) -> tuple[int, int]:
    return round(x * (w - 1)), round(y * (h - 1))


def draw_live(
    jpeg: bytes, detections: Iterable[dict[str, Any]], rules: Iterable[Any], quality: int = 80
) -> bytes | None:
    """JPEG of the frame with each detection's box and label, and each rule's zone (polygon) or
    line; None when the frame cannot be decoded."""
    image = decode_jpeg(jpeg)
    if image is None:
        return None
    h, w = image.shape[:2]
    thick = max(1, round(min(w, h) / 300))
    for rule in rules:
        zone: Sequence[Sequence[float]] | None = getattr(rule, "zone", None)
        line = getattr(rule, "line", None)
        if zone:
            pts = np.array([_px(x, y, w, h) for x, y in zone], np.int32)
            color = SEVERITY_COLORS.get(getattr(rule, "severity", ""), ZONE_COLOR)
            cv2.polylines(image, [pts], True, color, thick, cv2.LINE_AA)
            cv2.putText(image, rule.id, tuple(pts[0]), cv2.FONT_HERSHEY_SIMPLEX, 0.45, color, 1)
        if line:
            p1, p2 = _px(*line[0], w, h), _px(*line[1], w, h)
            cv2.line(image, p1, p2, LINE_COLOR, thick + 1, cv2.LINE_AA)
            cv2.putText(image, rule.id, p1, cv2.FONT_HERSHEY_SIMPLEX, 0.45, LINE_COLOR, 1)
    for det in detections:
        box = det.get("box")
        if not box or len(box) != 4:
            continue
        p1, p2 = _px(box[0], box[1], w, h), _px(box[2], box[3], w, h)
        cv2.rectangle(image, p1, p2, BOX_COLOR, thick + 1)
        label = f"{det.get('label', '')} {float(det.get('confidence') or 0):.2f}"
        cv2.putText(
            image, label, (p1[0], max(p1[1] - 4, 10)), cv2.FONT_HERSHEY_SIMPLEX, 0.45, BOX_COLOR, 1
        )
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    return buf.tobytes() if ok else None
