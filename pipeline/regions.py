"""Motion-region detection: when the new motion is small, the detector sees only a crop around it.

Motion gating (:mod:`pipeline.motion`) decides *whether* a frame needs the detector; this module
decides *how much* of it. When the motion that sent a frame to the detector fits a small square,
the detector runs on that square only, letterboxed at the scale the whole frame would have had
(objects keep their size in pixels, so the model sees them as in a full-frame run), in a
``192x192`` or ``320x320`` input instead of ``640x384`` at ``imgsz=640``. Outside the square
nothing moved: the camera's last detections there are carried over as they were.

Guards keep the result the full-frame one:

* a last-detected box that the square would cut is taken in whole (the square is placed around
  it too), or, when it does not fit, the whole frame goes to the detector;
* the crop run must account for the motion that caused it: a detection overlapping it. A crop
  sees a partly visible or distant person less well than the whole frame does (confidence just
  under the threshold without the rest of the picture), and motion nobody explains would send
  every following frame to the detector again;
* a new detection touching an inner edge of the square is an object the crop cut;
* a last-detected box inside the square that the crop run does not find again: a crop may add
  and move objects, but only the whole frame may remove one.

When one of the last three fails, :func:`merge` returns None and the worker runs the whole frame
as well (``vigil_camera_region_retries_total``).

On the demo's office footage 40 of the 181 gated detector calls ran on a crop (13 % less
detector CPU than gating alone), with the same alerts (BENCHMARKS.md, "Motion gating").
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: Crop sides as fractions of ``imgsz`` (rounded up to the stride): 192 and 320 at 640.
REGION_FRACTIONS = (0.3, 0.5)
#: Model pixels of picture kept around the motion. The network needs context, and an object
#: coming into view moves only in part: with 16, a person entering the office footage was found
#: one frame later than by the whole-frame run (BENCHMARKS.md); with 32, never.
CONTEXT_PX = 32
#: A detection this close (frame pixels) to an inner edge of the crop was cut by it.
EDGE_PX = 2
#: A last box inside the crop counts as found again by a crop detection overlapping it this much.
REFOUND_IOU = 0.3

Box = tuple[float, float, float, float]


@dataclass(frozen=True, slots=True)
class Window:
    """A square of the frame (pixels) and the letterbox size it is detected at."""

    x1: int
    y1: int
    x2: int
    y2: int
    size: int
    motion: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)  # what moved, pixels

    def crop(self, image: np.ndarray) -> np.ndarray:
        return image[self.y1 : self.y2, self.x1 : self.x2]

    def normalised(self, height: int, width: int) -> list[float]:
        return [self.x1 / width, self.y1 / height, self.x2 / width, self.y2 / height]


def region_sizes(imgsz: int, stride: int = 32) -> tuple[int, ...]:
    """The crop input sizes tried, smallest first (each a multiple of ``stride``)."""
    sizes = {max(stride, math.ceil(imgsz * f / stride) * stride) for f in REGION_FRACTIONS}
    return tuple(sorted(s for s in sizes if s < imgsz))


def warm_up(det) -> None:
    """Run each crop size once, so that the backend prepares those input shapes now (OpenVINO
    compiles one model per shape, a fraction of a second) and not on a camera's frame."""
    for size in region_sizes(det.config.imgsz):
        det.infer([np.zeros((size, size, 3), np.uint8)], [size])


def _cut(boxes: np.ndarray, x1: float, y1: float, x2: float, y2: float) -> np.ndarray:
    """Rows of ``boxes`` (pixels) that overlap the rectangle without lying inside it."""
    if not len(boxes):
        return np.zeros(0, bool)
    b = boxes[:, :4]
    overlap = (b[:, 2] > x1) & (b[:, 0] < x2) & (b[:, 3] > y1) & (b[:, 1] < y2)
    inside = (b[:, 0] >= x1) & (b[:, 1] >= y1) & (b[:, 2] <= x2) & (b[:, 3] <= y2)
    return overlap & ~inside


def choose_window(
    motion: Sequence[Box], last: np.ndarray, height: int, width: int, imgsz: int, stride: int = 32
) -> Window | None:
    """The smallest square (of :func:`region_sizes`) holding the new ``motion`` (normalised
    boxes), context around it and every ``last`` box (pixels, ``(n, >=4)``) it touches; None
    when none fits and the whole frame should be detected."""
    if not motion:
        return None
    gain = min(imgsz / height, imgsz / width)
    pad = CONTEXT_PX / gain
    moved = (
        min(b[0] for b in motion) * width,
        min(b[1] for b in motion) * height,
        max(b[2] for b in motion) * width,
        max(b[3] for b in motion) * height,
    )
    x1, y1, x2, y2 = moved[0] - pad, moved[1] - pad, moved[2] + pad, moved[3] + pad
    last = np.asarray(last, np.float32).reshape(-1, 6)
    for _ in range(len(last)):  # take in the boxes the motion touches (and those they touch)
        cut = _cut(last, x1, y1, x2, y2)
        if not cut.any():
            break
        b = last[cut, :4]
        x1, y1 = min(x1, float(b[:, 0].min())), min(y1, float(b[:, 1].min()))
        x2, y2 = max(x2, float(b[:, 2].max())), max(y2, float(b[:, 3].max()))
    for size in region_sizes(imgsz, stride):
        side = round(size / gain)
        if side >= min(height, width):
            return None
        if x2 - x1 > side or y2 - y1 > side:
            continue
        left = int(min(max((x1 + x2 - side) / 2, 0), width - side))
        top = int(min(max((y1 + y2 - side) / 2, 0), height - side))
        if _cut(last, left, top, left + side, top + side).any():
            continue  # centring it cut another box: try the larger square
        return Window(left, top, left + side, top + side, size, moved)
    return None


def merge(
    window: Window, found: np.ndarray, last: np.ndarray, height: int, width: int
) -> np.ndarray | None:
    """Whole-frame boxes after a crop run: ``found`` (the crop's ``(n, 6)`` boxes, crop pixels)
    moved to frame pixels, plus the ``last`` boxes outside the window; None when the guards of
    the module docstring fail (run the whole frame instead)."""
    found = np.array(found, np.float32, copy=True).reshape(-1, 6)
    found[:, [0, 2]] += window.x1
    found[:, [1, 3]] += window.y1
    e = EDGE_PX
    cut = (
        ((found[:, 0] <= window.x1 + e) & (window.x1 > 0))
        | ((found[:, 1] <= window.y1 + e) & (window.y1 > 0))
        | ((found[:, 2] >= window.x2 - e) & (window.x2 < width))
        | ((found[:, 3] >= window.y2 - e) & (window.y2 < height))
    )
    mx1, my1, mx2, my2 = window.motion
    explained = (
        (found[:, 2] > mx1) & (found[:, 0] < mx2) & (found[:, 3] > my1) & (found[:, 1] < my2)
    )
    if cut.any() or not explained.any():
        return None
    last = np.asarray(last, np.float32).reshape(-1, 6)
    b = last[:, :4]
    outside = (
        (b[:, 2] <= window.x1)
        | (b[:, 0] >= window.x2)
        | (b[:, 3] <= window.y1)
        | (b[:, 1] >= window.y2)
    )
    inside = last[~outside]
    if len(inside) and (not len(found) or (_iou(inside, found).max(1) < REFOUND_IOU).any()):
        return None  # an object the crop lost: only the whole frame may say it is gone
    return np.concatenate([found, last[outside]]) if outside.any() else found


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``(len(a), len(b))`` IoU of two ``(n, >=4)`` xyxy box arrays."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:4], b[None, :, 2:4])
    inter = np.clip(rb - lt, 0, None).prod(2)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)
