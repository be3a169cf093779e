"""Detection messages (detection.v1.json) and their frames, as the ingest worker publishes them."""

from __future__ import annotations

import cv2
import numpy as np
from kafka.partitioner.default import murmur2

ZONE = [[0.0, 0.0], [0.5, 0.0], [0.5, 1.0], [0.0, 1.0]]
IN_BOX = [0.1, 0.2, 0.3, 0.8]
OUT_BOX = [0.7, 0.2, 0.9, 0.8]


def cameras(n_partitions: int = 4) -> list[str]:
    """One camera per partition of a 4-partition topic (two per partition of a 2-partition one),
    chosen with Kafka's default partitioner, so every consumer of a group gets cameras."""
    found: dict[int, str] = {}
    i = 0
    while len(found) < n_partitions:
        name = f"cam-{i}"
        found.setdefault((murmur2(name.encode()) & 0x7FFFFFFF) % n_partitions, name)
        i += 1
    return [found[p] for p in range(n_partitions)]


CAMERAS = cameras()


def det_message(camera: str, epoch: int, seq: int, ts: float, dets: list[dict]) -> dict:
    return {
        "schema_version": 1,
        "camera_id": camera,
        "seq": seq,
        "epoch": epoch,
        "capture_ts": round(ts, 6),
        "publish_ts": round(ts + 0.05, 6),
        "frame": {"width": 160, "height": 90},
        "model": {"name": "yolov5n", "version": "0123456789ab"},
        "worker_id": "test",
        "inference_ms": 5.0,
        "detections": dets,
    }


def scripted(
    cameras: list[str],
    frames: int,
    t0: float,
    fps: float = 5.0,
    period: int = 20,
    inside: int = 12,
) -> list[tuple[str, dict]]:
    """A person walks into the zone, stays ``inside`` frames, walks out, and a new one comes every
    ``period`` frames. Even cameras send ingest track ids, odd ones none (the alert service's
    own IoU tracker numbers them). Cameras interleaved frame by frame, like live ones."""
    out = []
    for seq in range(frames):
        for ci, cam in enumerate(cameras):
            epoch = int(t0 * 1000) + ci
            phase = seq % period
            jitter = 0.002 * (seq % 3)
            box = [v + jitter for v in (IN_BOX if phase < inside else OUT_BOX)]
            det = {"class_id": 0, "label": "person", "confidence": 0.9, "box": box}
            if ci % 2 == 0:
                det["track_id"] = 1 + seq // period
            out.append((cam, det_message(cam, epoch, seq, t0 + seq / fps, [det])))
    return out


def frame_jpeg(value: int = 100) -> bytes:
    img = np.full((90, 160, 3), value, np.uint8)
    cv2.putText(img, "cam", (5, 80), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (200, 200, 200), 1)
    return cv2.imencode(".jpg", img)[1].tobytes()
