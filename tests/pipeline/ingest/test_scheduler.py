"""The batch scheduler alone: one frame per camera, fair shares, stale frames, filling a batch.

Sources are in-process fakes; test_batching.py checks the same properties through the worker.
"""

from __future__ import annotations

import threading
import time
from collections import Counter

import numpy as np

from pipeline.common.contracts import Frame
from pipeline.ingest import metrics
from pipeline.ingest.capture import ReaderStats
from pipeline.ingest.scheduler import BatchScheduler

IMAGE = np.zeros((4, 4, 3), np.uint8)


class Source:
    """A camera with a new frame whenever ``ready`` (and ``age_s`` old when taken)."""

    def __init__(self, cid: str, ready: bool = True, age_s: float = 0.0, state="streaming"):
        self.camera_id = cid
        self.stats = ReaderStats(state=state)
        self.ready = ready
        self.age_s = age_s
        self.seq = 0
        self.taken = 0

    def take(self) -> Frame | None:
        if not self.ready:
            return None
        self.seq += 1
        self.taken += 1
        return Frame(self.camera_id, self.seq, 1, time.time() - self.age_s, IMAGE)


def scheduler(sources: list[Source], max_age_s: float = 2.0) -> BatchScheduler:
    return BatchScheduler(lambda: list(sources), threading.Event(), max_age_s)


def test_one_frame_per_camera_and_no_camera_starves():
    sources = [Source(f"c{i}") for i in range(7)]
    s = scheduler(sources)
    served: Counter[str] = Counter()
    for _ in range(35):
        batch = s.collect(3)
        assert len(batch) == 3
        assert len({f.camera_id for f in batch}) == 3  # never two frames of one camera
        served.update(f.camera_id for f in batch)
    assert set(served) == {f"c{i}" for i in range(7)}
    assert max(served.values()) - min(served.values()) <= 1  # 105 frames / 7 cameras = 15


def test_cameras_never_served_or_served_longest_ago_go_first():
    s = scheduler([Source(c) for c in "abcd"])
    assert {f.camera_id for f in s.collect(2)} == {"a", "b"}
    assert {f.camera_id for f in s.collect(2)} == {"c", "d"}  # round-robin alone: b and c
    assert {f.camera_id for f in s.collect(2)} == {"a", "b"}


def test_stale_frames_are_dropped_and_counted():
    old, new = Source("old-s", age_s=5.0), Source("new-s")
    s = scheduler([old, new], max_age_s=2.0)
    before = metrics.FRAMES_STALE.labels("old-s")._value.get()
    assert [f.camera_id for f in s.collect(8)] == ["new-s"]
    assert s.stale_frames == 1 and old.taken == 1
    assert metrics.FRAMES_STALE.labels("old-s")._value.get() == before + 1


def test_exclude_and_sources_without_a_frame_are_skipped():
    sources = [Source("a"), Source("b", ready=False), Source("c")]
    s = scheduler(sources)
    assert [f.camera_id for f in s.collect(8, exclude={"a"})] == ["c"]
    assert sources[1].taken == 0 and sources[0].taken == 0


def test_no_sources_no_frames():
    assert scheduler([]).collect(4) == []


def test_fill_returns_at_once_without_wait_or_when_full():
    late = Source("late", ready=False)
    s = scheduler([Source("a"), late])
    frames = s.collect(4)
    assert s.fill(frames, 4, 0.0) == frames  # max_wait_ms 0: no waiting
    full = s.collect(1)
    assert s.fill(full, 1, 600.0) == full  # a full batch does not wait


def test_fill_waits_for_a_late_streaming_camera_and_leaves_when_it_came():
    """The wait is ten minutes: returning at all shows it left because the frame came."""
    early, late = Source("early"), Source("late", ready=False)
    s = scheduler([early, late])
    frames = s.collect(4)
    out: list = []
    t = threading.Thread(target=lambda: out.append(s.fill(frames, 4, 600.0)), daemon=True)
    t.start()
    late.ready = True
    s.wake.set()  # what a reader does when it has a new frame
    t.join(30)
    assert not t.is_alive(), "fill kept waiting after every camera had a frame"
    assert sorted(f.camera_id for f in out[0]) == ["early", "late"]


def test_fill_does_not_wait_for_cameras_that_are_not_streaming():
    down = Source("down", ready=False, state="backoff")
    s = scheduler([Source("up"), down])
    frames = s.collect(4)
    out: list = []
    t = threading.Thread(target=lambda: out.append(s.fill(frames, 4, 600.0)), daemon=True)
    t.start()
    t.join(30)
    assert not t.is_alive(), "fill waited for a camera that is not streaming"
    assert [f.camera_id for f in out[0]] == ["up"]


def test_idle_returns_when_woken_and_clears_the_event():
    s = scheduler([])
    s.wake.set()
    s.idle(600.0)  # returns at once: the event was set
    assert not s.wake.is_set()


def test_forget_puts_a_camera_back_to_never_served():
    a, b = Source("a"), Source("b")
    s = scheduler([a, b])
    s.collect(2)  # both served
    b.ready = False
    s.collect(2)  # a served again: b is now the one served longest ago
    b.ready = True
    s.forget("a")  # a left and came back: never served, so it goes first
    assert [f.camera_id for f in s.collect(1)] == ["a"]
