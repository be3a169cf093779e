"""Bench bookkeeping: which baseline a target ratio uses, and where the cores went."""

from __future__ import annotations

import argparse
import hashlib
import os
import threading
import time

import pytest

from pipeline.bench import ratios
from pipeline.bench.cli import _allocators
from pipeline.bench.cpu_share import CpuShare


def _pipeline(fps: float) -> dict:
    return {"cameras": 4, "gating": False, "fps": fps, "cpu_ms_per_frame": 24.0}


def _naive(fps: float, allocator: str, cpu: float) -> dict:
    return {"cameras": 4, "fps": fps, "cpu_ms_per_frame": cpu, "allocator": allocator}


def test_target_ratio_is_taken_against_the_faster_naive_run():
    res = {
        "pipeline": [_pipeline(80.0), _pipeline(76.0)],
        "naive": [
            _naive(40.0, "stock", 47.0),
            _naive(50.0, "tuned", 35.0),
            _naive(52.0, "tuned", 34.0),
            _naive(42.0, "stock", 45.0),
        ],
    }
    out = ratios(res)
    assert out["pipeline_vs_naive_4cams_stock_malloc"] == round(78.0 / 41.0, 2)
    assert out["pipeline_vs_naive_4cams_tuned_malloc"] == round(78.0 / 51.0, 2)
    assert out["pipeline_vs_naive_4cams"] == out["pipeline_vs_naive_4cams_tuned_malloc"]
    assert out["pipeline_vs_naive_4cams_baseline"] == "naive, tuned malloc"
    assert out["pipeline_vs_naive_4cams_each_pair"] == [round(80 / 50, 2), round(76 / 52, 2)]


def test_naive_runs_of_older_results_count_as_stock():
    out = ratios({"pipeline": [_pipeline(80.0)], "naive": [{"cameras": 4, "fps": 40.0}]})
    assert out["pipeline_vs_naive_4cams"] == 2.0
    assert out["pipeline_vs_naive_4cams_baseline"] == "naive, stock malloc"


def test_unknown_allocator_is_refused_by_name():
    assert _allocators("tuned, stock") == ["tuned", "stock"]
    with pytest.raises(argparse.ArgumentTypeError, match="'jemalloc'"):
        _allocators("jemalloc")


def test_cpu_share_attributes_a_reader_thread_to_decoding():
    stop, spun = threading.Event(), threading.Event()
    busy_s = 0.5

    def spin() -> None:  # like a decoder: busy in C code, the GIL released
        data = bytes(1 << 20)
        t0 = time.thread_time()
        while not stop.is_set():
            hashlib.sha256(data).digest()
            if time.thread_time() - t0 >= busy_s:
                spun.set()

    t0 = time.monotonic()
    share = CpuShare()
    reader = threading.Thread(target=spin, name="reader-cam0")
    reader.start()
    assert spun.wait(60), f"the reader thread never got {busy_s} s of CPU"
    out = share.stop()
    wall = time.monotonic() - t0  # at least the window CpuShare measured
    stop.set()
    reader.join()
    threads = out["worker_threads"]
    # it used busy_s of CPU inside the window, however loaded the machine (shares are rounded)
    assert threads["decode"] >= busy_s / wall - 0.01, (threads, wall)
    # part of this process's own CPU, which the kernel counts in clock ticks: the two readings of
    # it may each be a tick off, on top of the rounding of both shares
    tick_s = 1 / os.sysconf("SC_CLK_TCK")
    assert threads["decode"] <= out["worker"] + 2 * tick_s / wall + 0.02, (threads, out, wall)
    assert set(out) >= {"worker", "kafka", "redis", "others", "idle", "steal", "cores"}


def test_capacity_stepping_a_student_and_a_model_that_cannot_run():
    """The sizing table steps each model until a camera falls behind; a student runs without
    the config's class filter (it knows only its site's classes); a model that cannot be built
    is a row saying why, and the other rows are still measured."""
    from detectors.errors import WeightsError
    from pipeline.bench.precision import PrecisionSection

    fps_at = {4: 5.0, 6: 5.0, 8: 4.2}  # the third step falls behind

    class Bench(PrecisionSection):
        def __init__(self):
            self.args = argparse.Namespace(
                capacity_fps=5.0,
                capacity_models=["teacher@640", "student@320"],
                capacity_precisions=["f32", "int8"],
                capacity_start=4,
                capacity_step=2,
                capacity_max=10,
                student="student.pt",
                imgsz=640,
                camera_fps=30.0,
                duration=1.0,
            )
            self.det_dict = {"weights": "teacher.pt", "max_batch": 8, "classes": ["chair"]}
            self.result, self.lines, self.built = {}, [], []

        def emit(self, text=""):
            self.lines.append(text)

        def precision_detector(self, precision, **over):
            if over["weights"] == "teacher.pt" and precision == "int8":
                raise WeightsError("no INT8 model for teacher.pt")
            self.built.append((over["weights"], over["imgsz"], precision, over.get("classes", "-")))
            return object(), None

        def pipeline_run(self, det, n, gating, seconds):
            assert self.args.camera_fps == 5.0  # the cameras offer the capacity's fps
            fps = fps_at[n]
            return {
                "per_camera_fps": {f"cam{i}": fps for i in range(n)},
                "latency_p99_ms": 300.0,
                "cores_used": {"worker": 1.5},
            }

    bench = Bench()
    bench.capacity()
    rows = bench.result["capacity"]
    assert [(r["model"], r["precision"]) for r in rows] == [
        ("teacher@640", "f32"),
        ("teacher@640", "int8"),
        ("student@320", "f32"),
        ("student@320", "int8"),
    ]
    assert rows[1]["error"] == "no INT8 model for teacher.pt"
    assert any("not run: no INT8 model for teacher.pt" in line for line in bench.lines)
    for row in (rows[0], rows[2], rows[3]):
        assert row["cameras"] == 6 and row["per_core"] == 4.0
        assert row["failed"] == "8 (slowest camera 4.2 fps)"
    assert bench.built == [
        ("teacher.pt", 640, "f32", "-"),
        ("student.pt", 320, "f32", None),
        ("student.pt", 320, "int8", None),
    ]
    assert bench.args.camera_fps == 30.0  # restored


@pytest.mark.parametrize("gating", [False, True])
def test_capacity_runs_every_step_with_motion_gating_when_asked(gating):
    """``--capacity-gating``: the sizing table's rows with motion gating on (issue 24)."""
    from pipeline.bench.precision import PrecisionSection

    class Bench(PrecisionSection):
        def __init__(self):
            self.args = argparse.Namespace(
                capacity_fps=5.0,
                capacity_models=["teacher@320"],
                capacity_precisions=["f32"],
                capacity_start=2,
                capacity_step=2,
                capacity_max=4,
                capacity_gating=gating,
                student=None,
                imgsz=320,
                camera_fps=30.0,
                duration=1.0,
            )
            self.det_dict = {"weights": "teacher.pt", "max_batch": 8, "classes": None}
            self.result, self.lines, self.gated = {}, [], []

        def emit(self, text=""):
            self.lines.append(text)

        def precision_detector(self, precision, **over):
            return object(), None

        def pipeline_run(self, det, n, gating, seconds):
            self.gated.append(gating)
            fps = {f"cam{i}": 5.0 for i in range(n)}
            return {"per_camera_fps": fps, "latency_p99_ms": 90.0, "cores_used": {"worker": 0.5}}

    bench = Bench()
    bench.capacity()
    assert bench.gated == [gating, gating]  # every step, 2 and 4 cameras
    assert bench.result["capacity"][0]["gating"] is gating
    assert any(("with motion gating" in line) is gating for line in bench.lines if "Sizing" in line)
