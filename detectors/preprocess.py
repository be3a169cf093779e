"""Letterboxing a batch of mixed-resolution BGR frames into one model input, and back.

The geometry is ultralytics' ``LetterBox`` (scale to fit ``imgsz`` keeping the aspect ratio,
``cv2.INTER_LINEAR``, grey 114 padding split evenly, ``round(pad - 0.1)`` on the top/left side) so
a frame gives the same boxes here as through ``YOLO.predict``. What differs is the batch:

* every frame is resized once, straight into a reused ``(B, H, W, 3)`` uint8 canvas (no per-frame
  padded copy, no ``np.stack``);
* the canvas is the smallest stride-aligned rectangle that holds every frame's letterbox (16:9
  cameras of any resolution share ``640x384`` at ``imgsz=640``, like ``predict`` on one frame;
  a 4:3 camera in the batch makes it ``640x480``), so cameras of different resolutions share a
  batch without paying for a square ``640x640``;
* colour (BGR to RGB), layout (HWC to CHW) and scaling to ``[0, 1]`` run once for the whole batch
  as three vectorised numpy operations (or on the GPU, see :mod:`detectors.backends`).

Boxes come back with :func:`scale_boxes`, the inverse of each frame's own letterbox.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

PAD_VALUE = 114

#: ``alloc(nbytes) -> 1-D uint8 array``; the CUDA backend passes one that returns pinned memory.
Allocator = Callable[[int], np.ndarray]


@dataclass(frozen=True, slots=True)
class Placement:
    """Where one frame sits in the canvas: ``canvas = frame * gain + pad`` (per axis)."""

    height: int  # original frame size
    width: int
    new_h: int  # resized size inside the canvas
    new_w: int
    top: int
    left: int

    @property
    def gain_x(self) -> float:
        return self.new_w / self.width

    @property
    def gain_y(self) -> float:
        return self.new_h / self.height


def resized_shape(height: int, width: int, imgsz: int) -> tuple[int, int]:
    """``(new_h, new_w)`` of a frame scaled to fit ``imgsz`` (up or down), as LetterBox rounds it."""
    r = min(imgsz / height, imgsz / width)
    return max(round(height * r), 1), max(round(width * r), 1)


def canvas_shape(
    shapes: Sequence[tuple[int, int]], imgsz: int, stride: int = 32, rect: bool = True
) -> tuple[int, int]:
    """``(H, W)`` of the batch: the stride-aligned box around every frame's resized size.

    With ``rect=False`` it is always ``(imgsz, imgsz)``.
    """
    if not rect:
        return imgsz, imgsz
    hs, ws = zip(*(resized_shape(h, w, imgsz) for h, w in shapes), strict=True)
    return (
        min(imgsz, math.ceil(max(hs) / stride) * stride),
        min(imgsz, math.ceil(max(ws) / stride) * stride),
    )


def placement(height: int, width: int, canvas_h: int, canvas_w: int, imgsz: int) -> Placement:
    new_h, new_w = resized_shape(height, width, imgsz)
    dh, dw = (canvas_h - new_h) / 2, (canvas_w - new_w) / 2
    return Placement(height, width, new_h, new_w, round(dh - 0.1), round(dw - 0.1))


class Letterboxer:
    """Builds letterboxed batches in reused buffers.

    The arrays it returns are views of its buffers: valid until the next call. One caller at a
    time (the detector holds a lock around a whole batch).
    """

    def __init__(
        self, imgsz: int, stride: int = 32, rect: bool = True, alloc: Allocator | None = None
    ) -> None:
        self.imgsz = int(imgsz)
        self.stride = int(stride)
        self.rect = rect
        self._alloc = alloc or (lambda n: np.empty(n, np.uint8))
        self._canvas = np.empty(0, np.uint8)
        self._input = np.empty(0, np.float32)

    def _buffer(self, n: int) -> np.ndarray:
        if self._canvas.size < n:
            self._canvas = self._alloc(n)
        return self._canvas[:n]

    def letterbox(self, frames: Sequence[np.ndarray]) -> tuple[np.ndarray, list[Placement]]:
        """``(canvas (B, H, W, 3) uint8 BGR, placements)`` for BGR ``HxWx3`` uint8 frames."""
        shapes = [(int(f.shape[0]), int(f.shape[1])) for f in frames]
        H, W = canvas_shape(shapes, self.imgsz, self.stride, self.rect)
        canvas = self._buffer(len(frames) * H * W * 3).reshape(len(frames), H, W, 3)
        places = []
        for i, frame in enumerate(frames):
            p = placement(*shapes[i], H, W, self.imgsz)
            places.append(p)
            dst = canvas[i]
            if (p.new_h, p.new_w) != (H, W):
                dst.fill(PAD_VALUE)
            region = dst[p.top : p.top + p.new_h, p.left : p.left + p.new_w]
            if (p.new_h, p.new_w) == shapes[i]:
                region[...] = frame
            elif region.flags.c_contiguous:  # full-width rows: resize straight into the canvas
                out = cv2.resize(
                    frame, (p.new_w, p.new_h), dst=region, interpolation=cv2.INTER_LINEAR
                )
                if out is not region and not np.shares_memory(out, region):
                    region[...] = out
            else:
                region[...] = cv2.resize(frame, (p.new_w, p.new_h), interpolation=cv2.INTER_LINEAR)
        return canvas, places

    def to_input(self, canvas: np.ndarray, dtype: type = np.float32) -> np.ndarray:
        """BGR ``(B, H, W, 3)`` uint8 -> RGB ``(B, 3, H, W)`` in ``[0, 1]``, one pass per channel."""
        b, h, w, _ = canvas.shape
        n = b * 3 * h * w
        if self._input.size < n or self._input.dtype != dtype:
            self._input = np.empty(n, dtype)
        out = self._input[:n].reshape(b, 3, h, w)
        scale = dtype(1.0 / 255.0)
        for c in range(3):
            np.multiply(canvas[..., 2 - c], scale, out=out[:, c], casting="unsafe")
        return out


def scale_boxes(boxes: np.ndarray, p: Placement) -> np.ndarray:
    """Canvas-pixel ``xyxy`` (in place, ``(n, >=4)`` float array) -> original pixels, clipped."""
    boxes[:, [0, 2]] -= p.left
    boxes[:, [1, 3]] -= p.top
    boxes[:, [0, 2]] /= p.gain_x
    boxes[:, [1, 3]] /= p.gain_y
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, p.width)
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, p.height)
    return boxes
