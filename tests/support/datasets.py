"""Small retraining datasets made from the shared footage, labelled by hand (no teacher model)."""

from __future__ import annotations

import cv2
import numpy as np

from detectors.retrain import dataset as ds
from detectors.retrain.config import CollectionPolicy
from detectors.retrain.sampling import Collector
from pipeline.common.assets import footage
from tests.support.assets import require

HALL = footage("one-by-one-person-detection.mp4")
CLASSROOM = footage("classroom.mp4")


def frames(path, n: int, step: int = 1) -> list[np.ndarray]:
    """Up to ``n`` frames of the clip at ``path``, one every ``step`` (a missing clip fails the
    test)."""
    require(path)
    cap = cv2.VideoCapture(str(path))
    out = []
    i = 0
    while len(out) < n:
        ok, img = cap.read()
        if not ok:
            break
        if i % step == 0:
            out.append(img)
        i += 1
    cap.release()
    return out


def make_dataset(root, n_per_cam: int = 24) -> None:
    """Two cameras, one frame per 2 s, a box per frame; data.yaml with one class."""
    c = Collector(root, CollectionPolicy(dedup_distance=0))
    for cam, path, step in (("hall", HALL, 20), ("room", CLASSROOM, 1)):
        for i, img in enumerate(frames(path, n_per_cam, step)):
            rel = c.offer(cam, img, 1_000_000.0 + 2.0 * i, ["periodic"])
            ds.write_labels(ds.label_path(root, rel), [ds.Box(0, 0.5, 0.5, 0.2, 0.4)])
            c.manifest.update(rel, label_source="human")
    c.close()
    ds.write_data_yaml(root, {0: "person"})
