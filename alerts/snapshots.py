"""The picture attached to an alert: the triggering frame with the object's box and a label drawn
(for a crowding alert, every counted box).

The ingest worker keeps a JPEG of every frame with detections in Redis for a short while
(``pipeline.ingest.frame_store``); the alert service reads the one that triggered a "started" alert,
draws on it here and stores the result for ``redis.snapshot_ttl_s``.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

# BGR per severity, so an operator sees the level at a glance.
SEVERITY_COLORS: dict[str, tuple[int, int, int]] = {
    "info": (255, 200, 0),
    "low": (0, 200, 0),
    "medium": (0, 215, 255),
    "high": (0, 128, 255),
    "critical": (0, 0, 255),
}
ZONE_COLOR = (255, 255, 0)


def decode_jpeg(data: bytes) -> np.ndarray | None:
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    return img if img is not None and img.size else None


def draw_alert(
    image: np.ndarray,
    box: Sequence[float] | None,
    label: str,
    severity: str = "medium",
    zone: Sequence[Sequence[float]] | None = None,
    others: Sequence[Sequence[float]] = (),
) -> np.ndarray:
    """Draw on a copy of ``image``: the zone outline (thin), ``others`` (the objects a count is
    about, thinner), the box (thick) and ``label`` above the box (below its top edge when there
    is no room; top left without a box). Coordinates are normalised."""
    out = image.copy()
    h, w = out.shape[:2]
    thick = max(2, round(min(w, h) / 200))
    if zone:
        pts = np.array([[round(x * (w - 1)), round(y * (h - 1))] for x, y in zone], np.int32)
        cv2.polylines(out, [pts], True, ZONE_COLOR, max(1, thick // 2), cv2.LINE_AA)
    color = SEVERITY_COLORS.get(severity, SEVERITY_COLORS["medium"])
    for x1, y1, x2, y2 in others:
        p1 = (round(x1 * (w - 1)), round(y1 * (h - 1)))
        p2 = (round(x2 * (w - 1)), round(y2 * (h - 1)))
        cv2.rectangle(out, p1, p2, color, max(2, thick - 1))
    if box is not None:
        x1, y1, x2, y2 = box
        p1 = (round(x1 * (w - 1)), round(y1 * (h - 1)))
        p2 = (round(x2 * (w - 1)), round(y2 * (h - 1)))
        cv2.rectangle(out, p1, p2, color, thick)
        anchor = p1
    else:
        anchor = (0, 0)
    if label:
        scale = max(0.4, min(w, h) / 900)
        (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        x = min(max(anchor[0], 0), max(w - tw - 4, 0))
        top = anchor[1] - th - base - 4
        if top < 0:  # no room above the box: inside it
            top = anchor[1]
        cv2.rectangle(out, (x, top), (x + tw + 4, top + th + base + 4), color, cv2.FILLED)
        cv2.putText(
            out,
            label,
            (x + 2, top + th + 2),
            cv2.FONT_HERSHEY_SIMPLEX,
            scale,
            (0, 0, 0),
            1,
            cv2.LINE_AA,
        )
    return out


def alert_label(alert: dict) -> str:
    """``rule: label conf`` e.g. ``lobby-intrusion: person 0.87``; ``rule: label x count`` for a
    count without a single subject (``platform-crowd: person x 16``)."""
    parts = [str(alert.get("rule_id") or "")]
    what = alert.get("label")
    if what:
        conf = alert.get("confidence")
        count = alert.get("count")
        if isinstance(conf, int | float):
            parts.append(f"{what} {conf:.2f}")
        elif isinstance(count, int) and alert.get("box") is None:
            parts.append(f"{what} x {count}")
        else:
            parts.append(str(what))
    return ": ".join(p for p in parts if p)


def _counted_boxes(alert: dict) -> list[Sequence[float]]:
    boxes = (alert.get("details") or {}).get("boxes") or []
    return [b for b in boxes if isinstance(b, list | tuple) and len(b) == 4]


def render_snapshot(frame_jpeg: bytes, alert: dict, quality: int = 85) -> bytes | None:
    """The frame with the alert drawn on it, as JPEG; None when the frame cannot be decoded."""
    image = decode_jpeg(frame_jpeg)
    if image is None:
        return None
    return render_image(image, alert, quality)


def render_image(image: np.ndarray, alert: dict, quality: int = 85) -> bytes | None:
    """``image`` (BGR pixels) with the alert drawn on it, as JPEG (None if it cannot be
    encoded): the snapshot of a frame that is not a JPEG, e.g. one decoded from a recording."""
    drawn = draw_alert(
        image,
        alert.get("box"),
        alert_label(alert),
        str(alert.get("severity") or "medium"),
        alert.get("zone"),
        _counted_boxes(alert),
    )
    ok, buf = cv2.imencode(".jpg", drawn, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    return buf.tobytes() if ok else None
