"""The worker's one detector: made on first use, swapped between batches (hot reload), and the
batches it runs, from submission to per-frame detections.

Every backend has one call path (:class:`~pipeline.common.contracts.FrameDetector`): ``submit``
starts a batch, ``collect`` returns its boxes, ``finish`` tracks one frame's. A detector whose
batches run in the background (``overlaps``: OpenVINO) lets the worker post-process one batch
while the next runs; :meth:`IngestWorker.process_once <pipeline.ingest.worker.IngestWorker.process_once>`
orders the steps.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipeline.common.contracts import Detection, Frame, FrameDetector
from pipeline.ingest.motion import Decision


@dataclass(slots=True, eq=False)
class Batch:
    """Frames taken together, from collection to publication."""

    frames: list[Frame]
    decisions: list[Decision | None]  # per frame; None: motion gating off for its camera
    todo: list[Frame]  # the frames that go through the detector (motion gating skips others)
    det: FrameDetector | None = None  # the detector that runs it, set when it starts
    job: Any = None  # detector.submit() handle while the batch runs in the background
    started: float = 0.0
    elapsed: float = 0.0
    results: list[list[Detection]] = field(default_factory=list)  # per frame of ``todo``
    raw: list[np.ndarray] | None = None  # per frame of ``todo``: untracked boxes


class DetectorSlot:
    """Holds the detector (``current``; made by ``factory`` on first use when none was given).

    ``lock`` is held while a batch is started and while a carried-over frame is tracked:
    :meth:`swap` (hot reload, from another thread) waits for them, the batch in flight finishes
    with the old model and the next one uses the new model.
    """

    def __init__(
        self,
        detector: FrameDetector | None = None,
        factory: Callable[[], FrameDetector] | None = None,
    ) -> None:
        self.current = detector
        self._factory = factory
        self.lock = threading.Lock()

    def get(self) -> FrameDetector:
        if self.current is None:
            if self._factory is None:
                raise RuntimeError("IngestWorker needs a detector or a detector_factory")
            self.current = self._factory()
        return self.current

    def swap(self, new: FrameDetector) -> FrameDetector | None:
        """Replace the detector between batches; returns the old one. Tracks carry over when
        both models have the same classes."""
        with self.lock:
            old = self.current
            if (
                old is not None
                and getattr(old, "trackers", None) is not None
                and getattr(new, "trackers", None) is not None
                and old.names == new.names
            ):
                new.trackers = old.trackers
            self.current = new
        return old

    def drop_tracks(self, camera_id: str) -> None:
        """The camera left the worker: its tracks go."""
        det = self.current
        if det is not None and det.trackers is not None:
            det.trackers.drop(camera_id)

    def start(self, batch: Batch) -> None:
        """Hand the batch's ``todo`` frames (at most ``max_batch``) to the current detector."""
        with self.lock:
            batch.det = det = self.get()
            if batch.todo:
                batch.started = time.perf_counter()
                batch.job = det.submit([f.image for f in batch.todo])

    @staticmethod
    def collect(batch: Batch, fps: Callable[[str], float]) -> None:
        """The detections of a started batch, tracked per camera at its ``fps``: fills
        ``results``, ``raw`` and ``elapsed``."""
        if batch.job is None:
            return
        det = batch.det
        boxes = det.collect(batch.job)
        batch.elapsed = time.perf_counter() - batch.started
        batch.raw = boxes
        batch.results = [
            det.finish(f.image, b, f.camera_id, fps(f.camera_id))
            for f, b in zip(batch.todo, boxes, strict=True)
        ]
