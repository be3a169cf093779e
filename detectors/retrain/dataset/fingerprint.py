"""The ``phash`` and ``thumb`` fields of a manifest record: encoding them, and deciding whether
two frames are near-duplicates.

:mod:`detectors.retrain.sampling` computes both from the pixels when it keeps a frame (with
OpenCV); splitting compares them so that near-identical frames never straddle splits. Everything
here is plain numpy, so reading a dataset does not need OpenCV.
"""

from __future__ import annotations

import base64

import numpy as np

THUMB_SIZE = (32, 18)  # (w, h): cells of ~24x24 px on 768x432 footage


def hamming(a: int, b: int) -> int:
    return (a ^ b).bit_count()


def encode_thumb(thumb: np.ndarray) -> str:
    return base64.b64encode(thumb.tobytes()).decode()


def decode_thumb(text: str | None) -> np.ndarray | None:
    if not text:
        return None
    try:
        data = np.frombuffer(base64.b64decode(text), np.uint8)
    except (ValueError, TypeError):
        return None
    w, h = THUMB_SIZE
    return data.reshape(h, w) if data.size == w * h else None


def near_duplicate(
    hash_a: int,
    thumb_a: np.ndarray | None,
    hash_b: int,
    thumb_b: np.ndarray | None,
    distance: int,
    pixel_delta: int,
) -> bool:
    """Same picture for retraining purposes: perceptual hashes within ``distance`` bits *and* no
    thumbnail cell brighter or darker by more than ``pixel_delta`` grey levels.

    The perceptual hash alone is too coarse for fixed cameras: a person crossing a large static
    scene barely moves it, so the thumbnail check keeps such frames apart.
    """
    if distance <= 0 or hamming(hash_a, hash_b) > distance:
        return False
    if thumb_a is None or thumb_b is None:
        return True
    diff = np.abs(np.subtract(thumb_a, thumb_b, dtype=np.int16))  # cv2.absdiff for uint8
    return int(diff.max()) <= pixel_delta
