"""What an alert snapshot promises, checked region by region: the box outline where the object
was, a filled label band in the severity colour above it (inside the box when there is no room),
and the untouched frame everywhere else.

The regions are computed from the alert's own inputs (box, label text, image size, OpenCV's font
metrics), never from fixed pixels, so a new OpenCV whose font is wider moves the band and the
oracle with it.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

SEVERITY_BGR = {
    "info": (255, 200, 0),
    "low": (0, 200, 0),
    "medium": (0, 215, 255),
    "high": (0, 128, 255),
    "critical": (0, 0, 255),
}
# JPEG ringing reaches a few pixels past a sharp edge; a drawn region is widened by this much
# before the rest of the frame is compared with the original.
MARGIN = 3
TOLERANCE = 20


def _px(v: float, size: int) -> int:
    return round(v * (size - 1))


def box_rect(box: Sequence[float], shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    h, w = shape[:2]
    x1, y1, x2, y2 = box
    return _px(x1, w), _px(y1, h), _px(x2, w), _px(y2, h)


def label_rect(
    label: str, box: Sequence[float] | None, shape: tuple[int, ...]
) -> tuple[int, int, int, int]:
    """The label band's (x1, y1, x2, y2): text size from OpenCV's metrics at the snapshot's
    scale, above the box's top-left corner, or inside the box when the top edge leaves no room."""
    h, w = shape[:2]
    scale = max(0.4, min(w, h) / 900)
    (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    ax, ay = box_rect(box, shape)[:2] if box is not None else (0, 0)
    x = min(max(ax, 0), max(w - tw - 4, 0))
    top = ay - th - base - 4
    if top < 0:
        top = ay
    return x, top, x + tw + 4, top + th + base + 4


def _near(pixels: np.ndarray, bgr: Sequence[int], tol: int = 60) -> np.ndarray:
    return (np.abs(pixels.astype(int) - np.array(bgr)).max(axis=-1) < tol).reshape(-1)


def assert_snapshot(
    img: np.ndarray,
    frame: np.ndarray,
    box: Sequence[float] | None,
    label: str,
    severity: str,
    zone: Sequence[Sequence[float]] | None = None,
) -> None:
    """``img`` (the decoded snapshot) is ``frame`` with ``box``, ``label`` and the ``zone``
    outline drawn as promised."""
    assert img.shape == frame.shape, (img.shape, frame.shape)
    h, w = img.shape[:2]
    color = SEVERITY_BGR[severity]
    drawn = np.zeros((h, w), bool)
    if zone:
        # The zone's outline, thin, in its own colour: only masked here (its colour is a style).
        pts = np.array([[_px(x, w), _px(y, h)] for x, y in zone], np.int32)
        outline = np.zeros((h, w), np.uint8)
        cv2.polylines(outline, [pts], True, 1, 1 + 2 * MARGIN)
        drawn |= outline.astype(bool)

    if box is not None:
        x1, y1, x2, y2 = box_rect(box, img.shape)
        # Every side of the outline, at its middle, is in the severity colour.
        ym, xm = (y1 + y2) // 2, (x1 + x2) // 2
        for name, patch in {
            "left": img[ym - 2 : ym + 3, x1 - 1 : x1 + 2],
            "right": img[ym - 2 : ym + 3, x2 - 1 : x2 + 2],
            "bottom": img[y2 - 1 : y2 + 2, xm - 2 : xm + 3],
        }.items():
            assert _near(patch, color).mean() > 0.6, (name, patch.reshape(-1, 3).mean(axis=0))
        drawn[max(y1 - MARGIN, 0) : y2 + MARGIN + 1, max(x1 - MARGIN, 0) : x2 + MARGIN + 1] = True
        # The inside of the box (below the label band) is the frame: the box is an outline.
        inner = np.zeros((h, w), bool)
        inner[y1 + MARGIN + 1 : y2 - MARGIN, x1 + MARGIN + 1 : x2 - MARGIN] = True
    else:
        inner = np.zeros((h, w), bool)

    if label:
        lx1, ly1, lx2, ly2 = label_rect(label, box, img.shape)
        band = img[max(ly1, 0) : ly2, lx1:lx2]
        assert band.size, (lx1, ly1, lx2, ly2)
        # Filled in the severity colour, the text in black on it.
        assert _near(band, color).mean() > 0.5, band.reshape(-1, 3).mean(axis=0)
        assert _near(band, (0, 0, 0), 80).mean() > 0.02, "no text in the label band"
        lab = np.zeros((h, w), bool)
        lab[max(ly1 - MARGIN, 0) : ly2 + MARGIN, max(lx1 - MARGIN, 0) : lx2 + MARGIN] = True
        drawn |= lab
        inner &= ~lab

    if zone:
        inner &= ~outline.astype(bool)
    untouched = ~drawn | inner
    diff = np.abs(img.astype(int) - frame.astype(int)).max(axis=-1)
    share = float((diff[untouched] < TOLERANCE).mean())
    assert share > 0.99, f"only {share:.3f} of the undrawn pixels are the frame"
