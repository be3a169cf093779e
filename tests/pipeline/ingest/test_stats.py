"""The worker's counters and per-camera figures alone: frames detected and carried over, frames
per second from one export to the next, status rows for the console's listeners."""

from __future__ import annotations

import numpy as np

from pipeline.cameras.spec import CameraSpec
from pipeline.common.contracts import Frame
from pipeline.ingest import metrics
from pipeline.ingest.capture import ReaderStats
from pipeline.ingest.stats import WorkerStats


class Reader:
    def __init__(self, cid: str) -> None:
        self.camera_id = cid
        self.spec = CameraSpec(id=cid, url="rtsp://127.0.0.1/x")
        self.stats = ReaderStats(state="streaming")


class Det:
    name, version, backend_name, device = "m", "v1", "onnxruntime", "cpu"


def frame(cid: str, ts: float) -> Frame:
    return Frame(cid, 1, 1, ts, np.zeros((2, 2, 3), np.uint8))


def test_counters_and_their_metrics():
    s = WorkerStats()
    batches = metrics.BATCH_SIZE._sum.get()
    skipped = metrics.FRAMES_MOTION_SKIPPED.labels("st-a")._value.get()
    sent = metrics.FRAMES_PROCESSED.labels("st-a")._value.get()
    s.detected(3, 0.02)
    s.detected(2, 0.01)
    s.carried("st-a")
    for ts in (5.0, 6.0):
        s.frame_out(frame("st-a", ts))
        s.frame_sent(frame("st-a", ts))
    assert (s.detector_frames, s.skipped_frames) == (5, 1)
    assert s.processed == {"st-a": 2} and s.frame_ts == {"st-a": 6.0}
    assert metrics.BATCH_SIZE._sum.get() == batches + 5
    assert metrics.FRAMES_MOTION_SKIPPED.labels("st-a")._value.get() == skipped + 1
    assert metrics.FRAMES_PROCESSED.labels("st-a")._value.get() == sent + 2


def test_export_rates_from_one_export_to_the_next_and_rows_for_listeners():
    s = WorkerStats()
    a, b = Reader("st-b"), Reader("st-c")
    b.stats.state = "backoff"
    got: list[list] = []
    s.export([a, b], Det(), [got.append])
    assert [(r.camera_id, r.processed_fps, r.frame_ts) for r in got[0]] == [
        ("st-b", 0.0, 0.0),  # one export: no rate yet
        ("st-c", 0.0, 0.0),
    ]
    a.stats.frames_decoded = 30
    for _ in range(10):
        s.frame_out(frame("st-b", 7.5))
    s.export([a, b], Det(), [got.append])
    row = {r.camera_id: r for r in got[1]}["st-b"]
    assert row.offered_fps > row.processed_fps > 0 and row.frame_ts == 7.5
    assert metrics.PROCESSED_FPS.labels("st-b")._value.get() == row.processed_fps
    assert metrics.CAMERA_UP.labels("st-b")._value.get() == 1
    assert metrics.CAMERA_UP.labels("st-c")._value.get() == 0
    assert metrics.DETECTOR_INFO.labels("m", "v1", "onnxruntime", "cpu")._value.get() == 1


def test_forget_keeps_the_running_total_and_drops_the_rest():
    s = WorkerStats()
    a = Reader("st-d")
    s.frame_out(frame("st-d", 3.0))
    s.export([a], None, [])
    s.forget("st-d")
    assert s.processed == {"st-d": 1} and "st-d" not in s.frame_ts
    got: list[list] = []
    s.export([a], None, [got.append])  # back: its first export again, no rate yet
    assert got[0][0].processed_fps == 0.0
