"""Which cameras' frames go into the next detector batch.

One frame per camera per batch (a reader keeps only its newest), cameras served longest ago first
so none starves when there are more cameras than ``detector.max_batch``; frames older than
``ingest.max_frame_age_s`` when their turn comes are dropped and counted (stale), so latency stays
bounded; a batch short of cameras waits up to ``detector.max_wait_ms`` for the others.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Collection
from typing import TYPE_CHECKING, Protocol

from pipeline.common.contracts import Frame
from pipeline.ingest import metrics

if TYPE_CHECKING:
    from pipeline.ingest.capture import ReaderStats


class FrameSource(Protocol):
    """What the scheduler needs of a camera reader (:class:`pipeline.ingest.capture.CameraReader`):
    its newest frame, taken once, and its state."""

    camera_id: str
    stats: ReaderStats

    def take(self) -> Frame | None: ...


class BatchScheduler:
    """Takes the frames of the next batch from ``sources()`` (the worker's readers, in the order
    they were started). ``wake`` is set by a reader when it has a new frame."""

    def __init__(
        self,
        sources: Callable[[], list[FrameSource]],
        wake: threading.Event,
        max_frame_age_s: float,
    ) -> None:
        self._sources = sources
        self.wake = wake
        self.max_frame_age_s = max_frame_age_s
        self._rr = 0  # round-robin start, so no camera starves when batches are full
        self._served: dict[str, float] = {}  # camera -> when its last frame was taken
        self.stale_frames = 0  # frames dropped because they were too old when their turn came

    def collect(self, max_batch: int, exclude: Collection[str] = frozenset()) -> list[Frame]:
        """Up to ``max_batch`` new frames, one per camera, cameras served longest ago first."""
        readers = self._sources()
        if not readers:
            return []
        start = self._rr % len(readers)
        self._rr += 1
        order = readers[start:] + readers[:start]  # ties (never served) in round-robin order
        order.sort(key=lambda r: self._served.get(r.camera_id, 0.0))
        frames: list[Frame] = []
        now = time.time()
        for reader in order:
            if reader.camera_id in exclude:
                continue
            frame = reader.take()
            if frame is None:
                continue
            self._served[reader.camera_id] = time.monotonic()
            if now - frame.capture_ts > self.max_frame_age_s:
                metrics.FRAMES_STALE.labels(frame.camera_id).inc()
                self.stale_frames += 1
                continue
            frames.append(frame)
            if len(frames) >= max_batch:
                break
        return frames

    def fill(self, frames: list[Frame], max_batch: int, wait_s: float) -> list[Frame]:
        """Wait up to ``wait_s`` for frames of the other streaming cameras (``max_wait_ms``)."""
        if wait_s <= 0 or len(frames) >= max_batch:
            return frames
        streaming = sum(1 for r in self._sources() if r.stats.state == "streaming")
        want = min(max_batch, streaming)
        deadline = time.monotonic() + wait_s
        while len(frames) < want and (left := deadline - time.monotonic()) > 0:
            self.wake.wait(left)
            self.wake.clear()
            frames += self.collect(max_batch - len(frames), {f.camera_id for f in frames})
        return frames

    def idle(self, timeout_s: float) -> None:
        """No camera had a frame: sleep until one has (or ``timeout_s``)."""
        self.wake.wait(timeout_s)
        self.wake.clear()

    def forget(self, camera_id: str) -> None:
        """The camera left this worker."""
        self._served.pop(camera_id, None)
