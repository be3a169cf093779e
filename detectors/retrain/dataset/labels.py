"""Reading images and YOLO label files: every malformed line is reported with file and line."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from detectors.retrain.dataset.layout import Problem, atomic_write


def check_image(path: Path) -> str | None:
    """None when ``path`` decodes as a complete image, else why not."""
    import cv2  # noqa: PLC0415 (cv2: ~0.2 s, and this package loads with the CLI)

    try:
        data = path.read_bytes()
    except OSError as e:
        return f"cannot read image ({e.strerror or e})"
    if not data:
        return "empty image file"
    suffix = path.suffix.lower()
    if suffix in (".jpg", ".jpeg") and not data.rstrip(b"\x00").endswith(b"\xff\xd9"):
        return "corrupt image (truncated JPEG: no end-of-image marker)"
    if suffix == ".png" and b"IEND" not in data[-16:]:
        return "corrupt image (truncated PNG)"
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if img is None or img.size == 0:
        return "corrupt image (cannot be decoded)"
    return None


@dataclass
class Box:
    cls: int
    cx: float
    cy: float
    w: float
    h: float

    def xyxy(self) -> tuple[float, float, float, float]:
        return (
            self.cx - self.w / 2,
            self.cy - self.h / 2,
            self.cx + self.w / 2,
            self.cy + self.h / 2,
        )

    def line(self) -> str:
        return f"{self.cls} {self.cx:.6f} {self.cy:.6f} {self.w:.6f} {self.h:.6f}"


def read_labels(path: Path, nc: int, shown: str | None = None) -> tuple[list[Box], list[Problem]]:
    """Boxes of a YOLO label file and one :class:`Problem` per malformed line (skipped)."""
    shown = shown or str(path)
    boxes: list[Box] = []
    problems: list[Problem] = []
    try:
        text = path.read_text()
    except FileNotFoundError:
        return [], []
    except (OSError, UnicodeDecodeError) as e:
        return [], [Problem(shown, f"cannot read label file ({e})")]
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) != 5:
            problems.append(
                Problem(shown, f"expected 5 values 'class cx cy w h', got {len(parts)}", n)
            )
            continue
        try:
            cls = int(parts[0])
        except ValueError:
            problems.append(Problem(shown, f"class id {parts[0]!r} is not an integer", n))
            continue
        try:
            cx, cy, w, h = (float(p) for p in parts[1:])
        except ValueError:
            problems.append(Problem(shown, "box values must be numbers", n))
            continue
        if not 0 <= cls < nc:
            problems.append(
                Problem(shown, f"class id {cls} out of range (data.yaml has {nc} classes)", n)
            )
            continue
        if not all(np.isfinite((cx, cy, w, h))) or w <= 0 or h <= 0:
            problems.append(Problem(shown, "box width and height must be positive", n))
            continue
        eps = 1e-3
        if (
            not (-eps <= cx - w / 2 and cx + w / 2 <= 1 + eps and -eps <= cy - h / 2)
            or not cy + h / 2 <= 1 + eps
        ):
            problems.append(Problem(shown, "box outside the image (coordinates are 0..1)", n))
            continue
        boxes.append(Box(cls, cx, cy, w, h))
    return boxes, problems


def write_labels(path: Path, boxes: Iterable[Box]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, "".join(b.line() + "\n" for b in boxes))
