"""Motion gating: skip the detector for frames in which nothing moved (Frigate's lesson).

A cheap per-camera motion detector runs on a small grey copy of each frame (``width`` pixels
wide, about 0.3 ms): it blurs it, compares it with a running-average background, thresholds the
difference and measures the largest changed region. A frame *needs the detector* when

* a changed region covers at least ``min_area`` of the frame and is not explained by an object
  the detector already reported: motion entirely inside a last-detected box (grown by
  ``object_margin``) that changes less than ``object_fraction`` of that box is a person standing
  and gesturing, a flag in the wind: the boxes are still right. A larger change inside a box
  (the object left, sat down, was covered) goes to the detector, or
* the camera's last detector run is ``force_every_s`` or more ago (objects that arrive or leave
  too slowly to register, drift of the background model), or
* the camera has no detector result yet (first frame, after a restart).

Otherwise the worker publishes the camera's last detections again, flagged ``carried_over``
(docs/messages.md): tracks keep their ids and zone rules keep seeing the objects that are still
there, so alerts do not change; only the detector call is saved. A change of most of the picture
at once (lights switched on, camera moved) counts as motion and resets the background.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydantic import Field

from pipeline.common.config import StrictModel

#: More than this fraction of the picture changed at once: a lighting change or a moved camera.
RESET_FRACTION = 0.6


class MotionConfig(StrictModel):
    """``ingest.motion`` (defaults for every camera) and ``cameras[].motion`` (per camera)."""

    enabled: bool = Field(False, description="skip the detector for frames without motion")
    threshold: int = Field(
        30, ge=1, le=255, description="grey-level change (0-255) that counts as changed"
    )
    min_area: float = Field(
        0.002, gt=0, le=1, description="smallest moving region, as a fraction of the frame"
    )
    force_every_s: float = Field(
        10.0, gt=0, le=3600, description="run the detector at least this often per camera"
    )
    width: int = Field(160, ge=32, le=1920, description="width of the grey copy (pixels)")
    alpha: float = Field(0.2, gt=0, le=1, description="background learning rate per analysed frame")
    object_margin: float | None = Field(
        0.1,
        ge=0,
        le=1,
        description="motion inside a last-detected box grown by this fraction of its size does "
        "not need the detector; null: every motion does",
    )
    object_fraction: float = Field(
        0.4,
        gt=0,
        le=1,
        description="...unless it changes at least this fraction of the box (the object moved)",
    )


Box = tuple[float, float, float, float]  # normalised x1, y1, x2, y2


@dataclass(frozen=True, slots=True)
class Region:
    box: Box  # bounding box of the changed pixels, normalised
    area: float  # changed pixels, fraction of the frame


@dataclass(slots=True)
class Decision:
    motion: bool  # a region of at least min_area changed since the background was updated
    detect: bool  # the frame goes to the detector (new motion, forced, or no result yet)
    area: float  # largest changed region, fraction of the frame
    regions: list[Region]  # changed regions of at least min_area


def _explained(region: Region, boxes: list[Box], margin: float, fraction: float) -> bool:
    """A small change entirely inside one of ``boxes`` (each grown by ``margin``)."""
    x1, y1, x2, y2 = region.box
    for bx1, by1, bx2, by2 in boxes:
        bw, bh = bx2 - bx1, by2 - by1
        mx, my = bw * margin, bh * margin
        inside = x1 >= bx1 - mx and y1 >= by1 - my and x2 <= bx2 + mx and y2 <= by2 + my
        if inside and region.area < fraction * bw * bh:
            return True
    return False


class MotionDetector:
    """Running-average background of one camera; :meth:`check` one frame at a time."""

    def __init__(self, config: MotionConfig | None = None) -> None:
        self.config = config or MotionConfig(enabled=True)
        self._bg: np.ndarray | None = None
        self._shape: tuple[int, int] | None = None
        self._last_detect: float | None = None
        self._kernel = np.ones((3, 3), np.uint8)

    def reset(self) -> None:
        self._bg = None
        self._last_detect = None

    def _grey(self, frame: np.ndarray) -> np.ndarray:
        import cv2  # noqa: PLC0415 (cv2: the config models above load with the CLI)

        h, w = frame.shape[:2]
        sw = min(self.config.width, w)
        sh = max(1, round(h * sw / w))
        small = cv2.resize(frame, (sw, sh), interpolation=cv2.INTER_AREA)
        grey = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY) if small.ndim == 3 else small
        return cv2.GaussianBlur(grey, (5, 5), 0)

    def measure(self, frame: np.ndarray) -> tuple[float, list[Region]]:
        """``(largest changed area, regions of at least min_area)`` against the background,
        which it then updates; areas are fractions of the frame, regions normalised boxes.

        The whole frame (area 1.0) for the first frame, after a reset or a change of resolution.
        """
        import cv2  # noqa: PLC0415 (cv2: the config models above load with the CLI)

        whole = (1.0, [Region((0.0, 0.0, 1.0, 1.0), 1.0)])
        grey = self._grey(frame)
        if self._bg is None or self._shape != grey.shape:
            self._bg = grey.astype(np.float32)
            self._shape = grey.shape
            return whole
        diff = cv2.absdiff(grey, cv2.convertScaleAbs(self._bg))
        _, mask = cv2.threshold(diff, self.config.threshold, 255, cv2.THRESH_BINARY)
        total = mask.size
        changed = cv2.countNonZero(mask)
        if changed > RESET_FRACTION * total:  # the whole picture changed: start over
            self._bg = grey.astype(np.float32)
            return whole
        cv2.accumulateWeighted(grey, self._bg, self.config.alpha)
        if not changed:
            return 0.0, []
        mask = cv2.dilate(mask, self._kernel, iterations=2)
        n, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
        if n <= 1:
            return 0.0, []
        h, w = mask.shape
        areas = stats[1:, cv2.CC_STAT_AREA] / total
        regions = [
            Region((x / w, y / h, (x + bw) / w, (y + bh) / h), a)
            for (x, y, bw, bh, _), a in zip(stats[1:].tolist(), areas.tolist(), strict=True)
            if a >= self.config.min_area
        ]
        return float(areas.max()), regions

    def check(self, frame: np.ndarray, ts: float, objects: list[Box] | None = None) -> Decision:
        """Whether ``frame`` (captured at ``ts``, seconds) needs the detector.

        ``objects``: the camera's last detected boxes (normalised); motion entirely inside one
        of them (grown by ``object_margin``), changing less than ``object_fraction`` of it, does
        not need the detector.
        """
        area, regions = self.measure(frame)
        motion = bool(regions)
        margin = self.config.object_margin
        new = regions
        if regions and objects and margin is not None:
            frac = self.config.object_fraction
            new = [r for r in regions if not _explained(r, objects, margin, frac)]
        due = self._last_detect is None or ts - self._last_detect >= self.config.force_every_s
        detect = bool(new) or due
        if detect:
            self._last_detect = ts
        return Decision(motion, detect, area, regions)
