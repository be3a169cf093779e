"""The worker's detector slot alone: made on first use, swapped between batches with tracks
carried over, batches started and collected through the one call path."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from pipeline.common.contracts import Detection, Frame
from pipeline.ingest.detection import Batch, DetectorSlot


class Tracks:
    def __init__(self) -> None:
        self.dropped: list[str] = []

    def drop(self, stream: str) -> None:
        self.dropped.append(stream)


class Det:
    """Records the call path: submit -> collect -> finish per frame."""

    overlaps = False

    def __init__(self, names=None, trackers=None) -> None:
        self.name, self.version = "m", "1"
        self.names = names or {0: "person"}
        self.trackers = trackers
        self.submitted: list[list[tuple[int, ...]]] = []
        self.finished: list[tuple[str, float]] = []

    def submit(self, frames):
        self.submitted.append([f.shape for f in frames])
        return len(frames)

    def wait(self, job, timeout_s=60.0):
        return True

    def collect(self, job):
        return [np.full((1, 6), k, np.float32) for k in range(job)]

    def finish(self, image, boxes, stream=None, frame_rate=10.0):
        self.finished.append((stream, frame_rate))
        return [Detection(0, "person", float(boxes[0, 4]), (0, 0, 1, 1))]


def frame(cid: str, shape=(4, 6, 3)) -> Frame:
    return Frame(cid, 1, 1, 0.0, np.zeros(shape, np.uint8))


def test_the_detector_is_made_once_on_first_use():
    made: list[Det] = []
    slot = DetectorSlot(factory=lambda: made.append(Det()) or made[-1])
    assert slot.current is None and made == []
    assert slot.get() is slot.get() is made[0]
    given = Det()
    assert DetectorSlot(given, factory=lambda: pytest.fail("made one")).get() is given
    with pytest.raises(RuntimeError, match="detector_factory"):
        DetectorSlot().get()


def test_swap_carries_tracks_over_only_between_models_of_the_same_classes():
    tracks = Tracks()
    old = Det(trackers=tracks)
    slot = DetectorSlot(old)
    same = Det(trackers=Tracks())
    assert slot.swap(same) is old and slot.current is same and same.trackers is tracks
    other = Det(names={0: "car"}, trackers=Tracks())
    slot.swap(other)
    assert other.trackers is not tracks
    untracked = Det(trackers=None)
    slot.swap(untracked)
    assert untracked.trackers is None


def test_swap_waits_for_the_batch_being_started():
    slot = DetectorSlot(Det())
    new = Det()
    with slot.lock:  # a batch is being started
        t = threading.Thread(target=slot.swap, args=(new,), daemon=True)
        t.start()
        t.join(0.05)
        assert t.is_alive() and slot.current is not new
    t.join(30)
    assert slot.current is new


def test_drop_tracks_of_a_camera_that_left():
    tracks = Tracks()
    DetectorSlot(Det(trackers=tracks)).drop_tracks("door")
    DetectorSlot(Det()).drop_tracks("door")  # tracking off
    DetectorSlot(factory=Det).drop_tracks("door")  # no detector yet: none is made for it
    assert tracks.dropped == ["door"]


def test_a_batch_from_start_to_detections():
    det = Det()
    slot = DetectorSlot(det)
    a, b, skipped = frame("a", (4, 6, 3)), frame("b", (8, 10, 3)), frame("c")
    batch = Batch([a, skipped, b], [None, None, None], [a, b])
    slot.start(batch)
    assert batch.det is det and det.submitted == [[(4, 6, 3), (8, 10, 3)]]
    slot.collect(batch, {"a": 5.0, "b": 12.5}.__getitem__)
    assert det.finished == [("a", 5.0), ("b", 12.5)]
    assert [r[0].confidence for r in batch.results] == [0.0, 1.0]  # each frame's own boxes
    assert len(batch.raw) == 2 and batch.elapsed >= 0.0


def test_a_batch_with_nothing_to_detect_never_calls_the_detector():
    det = Det()
    slot = DetectorSlot(det)
    batch = Batch([frame("a")], [None], [])
    slot.start(batch)
    slot.collect(batch, lambda cid: 5.0)
    assert batch.det is det and batch.job is None
    assert det.submitted == [] and det.finished == [] and batch.results == []
