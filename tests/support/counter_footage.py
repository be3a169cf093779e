"""Footage whose frames carry a visible counter: frame ``n`` shows ``n`` as text (for people) and
as a row of black and white blocks (for tests: :func:`read_counter`), encoded to H.264 in MP4
like a camera's stream (a keyframe every ``gop`` frames, B frames), ready for ``vigil
camera-sim``. Made with OpenCV (drawing) and PyAV (libx264) in about a second."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

#: bits of the counter drawn as blocks, most significant first
BITS = 14
BLOCK = 40  # px: a block survives H.264 compression with a wide margin
TOP = 8  # px from the top of the frame to the blocks


def draw_frame(n: int, width: int = 640, height: int = 360) -> np.ndarray:
    """The BGR image of frame ``n``: its blocks on top, its number as text below."""
    img = np.full((height, width, 3), 96, np.uint8)
    left = (width - BITS * BLOCK) // 2
    for bit in range(BITS):
        on = (n >> (BITS - 1 - bit)) & 1
        x = left + bit * BLOCK
        cv2.rectangle(
            img,
            (x, TOP),
            (x + BLOCK - 1, TOP + BLOCK - 1),
            (255, 255, 255) if on else (0, 0, 0),
            -1,
        )
    cv2.putText(
        img,
        f"{n:05d}",
        (width // 2 - 150, height // 2 + 40),
        cv2.FONT_HERSHEY_SIMPLEX,
        3,
        (255, 255, 255),
        6,
    )
    # something that moves, so that P and B frames carry more than the counter
    cx = int((n * 17) % width)
    cv2.circle(img, (cx, height - 60), 30, (40, 160, 220), -1)
    return img


def read_counter(img: np.ndarray) -> int:
    """The counter of a decoded frame (BGR or gray, the size :func:`draw_frame` made it)."""
    gray = img if img.ndim == 2 else cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    width = gray.shape[1]
    left = (width - BITS * BLOCK) // 2
    n = 0
    for bit in range(BITS):
        x = left + bit * BLOCK + BLOCK // 2
        y = TOP + BLOCK // 2
        patch = gray[y - BLOCK // 4 : y + BLOCK // 4, x - BLOCK // 4 : x + BLOCK // 4]
        n = (n << 1) | int(patch.mean() > 128)
    return n


def make_counter_footage(
    path: Path, seconds: float = 20.0, fps: int = 10, gop: int = 10, b_frames: int = 2
) -> Path:
    """Write ``seconds`` of counter footage (640x360 H.264 in MP4, frame ``n`` shows ``n``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 640, 360, "yuv420p"
        stream.codec_context.gop_size = gop
        stream.codec_context.max_b_frames = b_frames
        stream.options = {
            "preset": "veryfast",
            "crf": "23",
            "x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0:bframes={b_frames}",
        }
        for n in range(int(seconds * fps)):
            frame = av.VideoFrame.from_ndarray(draw_frame(n), format="bgr24")
            frame.pts, frame.time_base = n, Fraction(1, fps)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path
