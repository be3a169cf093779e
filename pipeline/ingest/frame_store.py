"""Recent frames as JPEG in Redis, so the alert service can attach a snapshot to an alert.

Bounded twice: in this process a small queue (full = the frame is skipped, never waited for), and
in Redis a TTL per frame, so a camera holds at most ``fps x frame_ttl_s`` JPEGs there (5 fps x 120 s
x ~40 KB = ~24 MB at 768x432). Only frames with at least one detection are stored: a frame without
detections cannot trigger an alert that needs a picture of the object.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading

import cv2
import numpy as np
import redis

from pipeline.common.contracts import Frame
from pipeline.common.redis import RedisConfig, frame_key, redis_client

log = logging.getLogger(__name__)


def encode_jpeg(image: np.ndarray, max_width: int = 960, quality: int = 85) -> bytes:
    if image.shape[1] > max_width:
        scale = max_width / image.shape[1]
        image = cv2.resize(
            image, (max_width, int(image.shape[0] * scale)), interpolation=cv2.INTER_AREA
        )
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return buf.tobytes()


class FrameStore:
    def __init__(self, cfg: RedisConfig, max_queue: int = 16) -> None:
        self.cfg = cfg
        self.ttl_s = cfg.frame_ttl_s
        self._client = redis_client(cfg)
        self._queue: queue.Queue[Frame | None] = queue.Queue(maxsize=max_queue)
        self._thread = threading.Thread(target=self._run, name="frame-store", daemon=True)
        self.stored = 0
        self.skipped = 0
        self.errors = 0
        self._warned = False

    def start(self) -> FrameStore:
        self._thread.start()
        return self

    def put(self, frame: Frame) -> None:
        try:
            self._queue.put_nowait(frame)
        except queue.Full:
            self.skipped += 1

    def close(self, timeout_s: float = 5.0) -> None:
        with contextlib.suppress(queue.Full):
            self._queue.put(None, timeout=timeout_s)
        self._thread.join(timeout_s)
        self._client.close()

    def _run(self) -> None:
        while True:
            frame = self._queue.get()
            if frame is None:
                return
            key = frame_key(self.cfg.key_prefix, frame.camera_id, frame.epoch, frame.seq)
            try:
                self._client.set(key, encode_jpeg(frame.image), ex=self.ttl_s)
                self.stored += 1
                self._warned = False
            except redis.RedisError as e:
                self.errors += 1
                if not self._warned:  # once per outage, not once per frame
                    log.warning(
                        "frame store: Redis unavailable (%s); snapshots skipped", type(e).__name__
                    )
                    self._warned = True
            except ValueError as e:
                self.errors += 1
                log.warning("camera %s: %s", frame.camera_id, e)
