"""Draw the console's app icons (the nav's brand mark: a blue eye on the nav's dark ground) into
pipeline/console/static/: icon-192.png and icon-512.png (purpose "any": the mark fills the
square) and icon-maskable-512.png (purpose "maskable": the mark inside the central 80 % circle,
the ground to the edges, so a launcher may crop it to any shape). Run again after a change:

    python deploy/console/make_icons.py
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

STATIC = Path(__file__).resolve().parents[2] / "pipeline" / "console" / "static"
NAV = (0x27, 0x18, 0x11)  # #111827 as BGR
ACCENT = (0xEB, 0x63, 0x25)  # #2563eb
LIGHT = (0xFD, 0xC5, 0x93)  # #93c5fd
WHITE = (0xFF, 0xFF, 0xFF)


def icon(size: int, mark: float, rounded: bool) -> np.ndarray:
    """A ``size`` square BGRA picture; the mark's radius is ``mark`` of half the side; with
    ``rounded`` the ground is a rounded square on transparency, else it fills the picture."""
    s = 4  # drawn 4x larger and scaled down: smooth edges
    n = size * s
    img = np.zeros((n, n, 4), np.uint8)
    if rounded:
        r = n // 5
        ground = np.zeros((n, n), np.uint8)
        cv2.rectangle(ground, (r, 0), (n - 1 - r, n - 1), 255, -1)
        cv2.rectangle(ground, (0, r), (n - 1, n - 1 - r), 255, -1)
        for cx in (r, n - 1 - r):
            for cy in (r, n - 1 - r):
                cv2.circle(ground, (cx, cy), r, 255, -1)
        img[ground > 0] = (*NAV, 255)
    else:
        img[:] = (*NAV, 255)
    c = (n // 2, n // 2)
    radius = mark * n / 2
    cv2.circle(img, c, round(radius), (*LIGHT, 255), -1)
    cv2.circle(img, c, round(radius * 0.60 / 0.66), (*ACCENT, 255), -1)
    cv2.circle(img, c, round(radius * 0.22 / 0.66), (*WHITE, 255), -1)
    return cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)


def main() -> None:
    for name, picture in {
        "icon-192.png": icon(192, 0.72, rounded=True),
        "icon-512.png": icon(512, 0.72, rounded=True),
        "icon-maskable-512.png": icon(512, 0.56, rounded=False),
    }.items():
        ok, buf = cv2.imencode(".png", picture, [cv2.IMWRITE_PNG_COMPRESSION, 9])
        assert ok, name
        (STATIC / name).write_bytes(buf.tobytes())
        print(f"{STATIC / name}: {len(buf)} bytes")


if __name__ == "__main__":
    main()
