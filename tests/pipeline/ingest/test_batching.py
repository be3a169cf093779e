"""The worker's batching loop: fair shares, bounded latency, mixed resolutions, flat memory.

Readers, detector and producer are in-process fakes here (the real ones are covered by
test_capture, test_backends and test_ingest_e2e), so each property is checked exactly.
"""

from __future__ import annotations

import threading
import time
from collections import Counter

import numpy as np
import pytest

from pipeline.cameras.spec import CameraSpec
from pipeline.common.contracts import Frame
from pipeline.config import parse_config
from pipeline.ingest import metrics
from pipeline.ingest.capture import ReaderStats
from pipeline.ingest.worker import IngestWorker


class FakeReader:
    """Always (or on demand) has a new frame, like a camera faster than the detector."""

    def __init__(self, cid: str, shape=(270, 480, 3), fps: float = 30.0, age_s: float = 0.0):
        self.camera_id = cid
        self.spec = CameraSpec(id=cid, url="rtsp://127.0.0.1/x")
        self.interval = 1.0 / fps
        self.stats = ReaderStats(state="streaming")
        self.shape = shape
        self.age_s = age_s
        self.seq = 0
        self.ready = True
        self.image = np.zeros(shape, np.uint8)

    def take(self) -> Frame | None:
        if not self.ready:
            return None
        self.seq += 1
        self.stats.frames_decoded += 1
        self.stats.frames_delivered += 1
        return Frame(self.camera_id, self.seq, 1, time.time() - self.age_s, self.image)

    def stop(self, join_timeout=0.0) -> None:
        self.stats.state = "stopped"

    def join(self, timeout_s: float) -> None:  # the worker waits for its readers at close()
        pass

    @property
    def alive(self) -> bool:
        return self.stats.state != "stopped"


class FakeDetector:
    """Synchronous like the ultralytics path: submit() runs the batch. ``calls`` holds, per
    detector call, (camera, frame shape) of each frame (the camera as finish() learns it)."""

    name, version, trackers = "fake", "0", None
    overlaps = False

    def __init__(self) -> None:
        self.calls: list[list[tuple[str, tuple[int, ...]]]] = []

    def submit(self, frames):
        self.calls.append([])
        return len(frames)

    def wait(self, job, timeout_s=60.0):
        return True

    def collect(self, job):
        return [np.zeros((0, 6), np.float32) for _ in range(job)]

    def finish(self, frame, boxes, stream=None, frame_rate=10.0):
        self.calls[-1].append((stream, frame.shape))
        return []


class FakeBatchedDetector(FakeDetector):
    """Like OpenVINO: submit() starts a batch, collect() returns it; logs the order of calls."""

    overlaps = True

    def __init__(self, max_batch: int = 8) -> None:
        super().__init__()
        self.config = parse_config({"detector": {"max_batch": max_batch}}, "t").detector
        self.log: list[tuple[str, int]] = []
        self._jobs = 0

    def submit(self, frames):
        self._jobs += 1
        self.log.append(("submit", self._jobs))
        self.calls.append([("?", f.shape) for f in frames])
        return (self._jobs, len(frames))

    def wait(self, job, timeout_s=60.0):
        self.log.append(("wait", job[0]))
        return True

    def collect(self, job):
        self.log.append(("collect", job[0]))
        return [np.zeros((0, 6), np.float32) for _ in range(job[1])]

    def finish(self, frame, boxes, stream=None, frame_rate=10.0):
        return []


class FakeFuture:
    def add_callback(self, fn, *a):
        fn(*a, None)
        return self

    def add_errback(self, fn, *a):
        return self


class FakeProducer:
    def __init__(self) -> None:
        self.sent: list[dict] = []

    def send(self, topic, key=None, value=None, timestamp_ms=None):
        self.sent.append(value)
        return FakeFuture()

    def flush(self, timeout=None) -> None:
        pass

    def close(self, timeout=None) -> None:
        pass


def make_worker(readers, **detector) -> tuple[IngestWorker, FakeDetector, FakeProducer]:
    cfg = parse_config({"detector": {"max_wait_ms": 0, **detector}}, "test")
    det = FakeDetector()
    worker = IngestWorker(cfg, detector=det, worker_id="w")
    worker.producer = FakeProducer()
    worker._readers = {r.camera_id: r for r in readers}
    return worker, det, worker.producer


def test_no_camera_starves_when_cameras_outnumber_the_batch():
    readers = [FakeReader(f"c{i}") for i in range(6)]
    worker, det, _ = make_worker(readers, max_batch=4)
    for _ in range(30):
        assert worker.process_once() == 4
    served = Counter(cid for call in det.calls for cid, _ in call)
    assert set(served) == {f"c{i}" for i in range(6)}
    assert max(served.values()) - min(served.values()) <= 1  # 120 frames / 6 cameras = 20 each
    assert all(len({cid for cid, _ in call}) == len(call) for call in det.calls)  # 1 per camera


def test_fair_share_holds_when_some_cameras_are_slower():
    fast = [FakeReader(f"f{i}") for i in range(3)]
    slow = FakeReader("slow")
    worker, det, _ = make_worker([*fast, slow], max_batch=2)
    for k in range(40):
        slow.ready = k % 2 == 0  # a frame every other batch
        worker.process_once()
    served = Counter(cid for call in det.calls for cid, _ in call)
    assert served["slow"] >= 15  # it gets its frames through: ~20 offered
    assert min(served[f"f{i}"] for i in range(3)) >= 18


def test_stale_frames_are_dropped_and_counted():
    old = FakeReader("old", age_s=5.0)
    new = FakeReader("new")
    worker, det, prod = make_worker([old, new])
    before = metrics.FRAMES_STALE.labels("old")._value.get()
    assert worker.process_once() == 1
    assert [cid for cid, _ in det.calls[0]] == ["new"]
    assert worker.stale_frames == 1
    assert metrics.FRAMES_STALE.labels("old")._value.get() == before + 1
    assert [m["camera_id"] for m in prod.sent] == ["new"]


def test_cameras_of_different_resolutions_share_one_detector_call():
    readers = [
        FakeReader("a", (432, 768, 3)),
        FakeReader("b", (270, 480, 3)),
        FakeReader("c", (360, 640, 3)),
    ]
    worker, det, prod = make_worker(readers, max_batch=8)
    assert worker.process_once() == 3
    assert len(det.calls) == 1
    assert {shape for _, shape in det.calls[0]} == {(432, 768, 3), (270, 480, 3), (360, 640, 3)}
    assert {(m["frame"]["width"], m["frame"]["height"]) for m in prod.sent} == {
        (768, 432),
        (480, 270),
        (640, 360),
    }


class LateReader(FakeReader):
    """No frame until ``arrive()``; ``asked`` is set once the worker looked and found none."""

    def __init__(self, cid: str) -> None:
        super().__init__(cid)
        self.ready = False
        self.asked = threading.Event()
        self.polls = 0

    def take(self) -> Frame | None:
        if not self.ready:
            self.polls += 1
            self.asked.set()
        return super().take()


def _in_thread(fn) -> tuple[threading.Thread, list]:
    out: list = []
    t = threading.Thread(target=lambda: out.append(fn()), daemon=True)
    t.start()
    return t, out


def test_max_wait_fills_the_batch_with_a_late_camera():
    """The batch waits for the late camera and leaves as soon as its frame is there, long before
    max_wait: the wait is ten minutes here (beyond what a config may say), so returning at all
    shows it did not run out."""
    early, late = FakeReader("early"), LateReader("late")
    worker, det, _ = make_worker([early, late], max_batch=4, max_wait_ms=300)
    long_wait = worker.cfg.detector.model_copy(update={"max_wait_ms": 600_000})
    worker.cfg = worker.cfg.model_copy(update={"detector": long_wait})
    t, out = _in_thread(worker.process_once)
    assert late.asked.wait(30), "the worker never looked for the late camera"
    assert t.is_alive(), "the batch left without waiting for the late camera"
    late.ready = True  # its frame comes in, and the reader wakes the worker as a real one does
    worker._wake.set()
    t.join(30)
    assert not t.is_alive(), "the batch kept waiting after every camera had a frame"
    assert out == [2]
    assert {cid for cid, _ in det.calls[0]} == {"early", "late"}

    late.ready = False
    worker2, det2, _ = make_worker([FakeReader("early"), late], max_batch=4, max_wait_ms=0)
    assert worker2.process_once() == 1  # no waiting at all


def test_max_wait_is_bounded_when_nothing_else_comes():
    """Nothing else arrives: the batch leaves with the one frame after max_wait (never before
    it), having slept through the wait rather than polling the silent camera."""
    lone, silent = FakeReader("lone"), LateReader("silent")
    worker, det, _ = make_worker([lone, silent], max_wait_ms=40)
    t0 = time.monotonic()
    t, out = _in_thread(worker.process_once)
    t.join(60)
    waited = time.monotonic() - t0
    assert not t.is_alive(), "the batch waited for a camera that never came"
    assert out == [1] and [cid for cid, _ in det.calls[0]] == ["lone"]
    assert waited >= 0.04, waited  # a lower bound: no machine is too fast for it
    assert silent.polls <= 3, f"looked for the silent camera {silent.polls} times"


def test_memory_stays_flat_under_overload():
    """Readers always have a frame, the loop never catches up: nothing may accumulate."""
    import tracemalloc

    readers = [FakeReader(f"c{i}", (432, 768, 3)) for i in range(4)]
    worker, det, prod = make_worker(readers, max_batch=4)
    for _ in range(50):
        worker.process_once()
    det.calls.clear()
    prod.sent.clear()
    tracemalloc.start()
    base = tracemalloc.take_snapshot()
    for _ in range(500):
        worker.process_once()
        prod.sent.clear()  # a real producer hands messages to Kafka
        det.calls.clear()
    grown = sum(s.size_diff for s in tracemalloc.take_snapshot().compare_to(base, "filename"))
    tracemalloc.stop()
    assert grown < 256 * 1024, f"{grown} bytes kept after 2000 frames"


def test_per_camera_fps_gauges():
    readers = [FakeReader("g1"), FakeReader("g2")]
    worker, _, _ = make_worker(readers)
    worker._export_reader_stats()
    for _ in range(5):
        worker.process_once()
    time.sleep(0.05)
    worker._export_reader_stats()
    assert metrics.PROCESSED_FPS.labels("g1")._value.get() > 0
    assert metrics.DECODE_FPS.labels("g2")._value.get() > 0
    assert metrics.DETECTOR_INFO.labels("fake", "0", "ultralytics", "")._value.get() == 1


@pytest.mark.parametrize("key", ["max_wait_ms", "backend"])
def test_detector_keys_are_validated(key):
    from pipeline.common.config import ConfigError

    bad = {"max_wait_ms": -1, "backend": "tflite"}[key]
    with pytest.raises(ConfigError, match=f"detector.{key}"):
        parse_config({"detector": {key: bad}}, "test")


def test_overlapped_batches_publish_every_frame_once_in_order():
    """With a background detector a batch is published by the next call (after the next batch
    started); nothing is lost or duplicated, and the batch in flight is flushed at close."""
    readers = [FakeReader(f"c{i}") for i in range(3)]
    worker, _, prod = make_worker(readers)
    det = FakeBatchedDetector()
    worker._detector = det
    assert worker.process_once() == 3
    assert prod.sent == []  # started, not finished yet
    for _ in range(9):
        assert worker.process_once() == 3
    assert len(prod.sent) == 27  # the 10th batch is still in flight
    worker.close()
    assert len(prod.sent) == 30
    for cid in ("c0", "c1", "c2"):
        seqs = [m["seq"] for m in prod.sent if m["camera_id"] == cid]
        assert seqs == list(range(1, 11))
    # the backend finished batch k before batch k+1's frames were taken and started, and k was
    # post-processed while k+1 ran
    log = det.log
    for k in range(2, 11):
        assert log.index(("wait", k - 1)) < log.index(("submit", k)) < log.index(("collect", k - 1))


def test_in_flight_batch_is_finished_when_no_new_frame_comes():
    reader = FakeReader("lone")
    worker, _, prod = make_worker([reader])
    worker._detector = FakeBatchedDetector()
    assert worker.process_once() == 1 and prod.sent == []
    reader.ready = False
    assert worker.process_once() == 0
    assert [m["seq"] for m in prod.sent] == [1]  # an idle camera's last frame is not held back
