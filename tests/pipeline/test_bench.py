"""Bench bookkeeping: which baseline a target ratio uses, and where the cores went."""

from __future__ import annotations

import argparse
import hashlib
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
    stop = threading.Event()

    def spin() -> None:  # like a decoder: busy in C code, the GIL released
        data = bytes(1 << 20)
        while not stop.is_set():
            hashlib.sha256(data).digest()

    share = CpuShare()
    reader = threading.Thread(target=spin, name="reader-cam0")
    reader.start()
    time.sleep(0.5)
    out = share.stop()
    stop.set()
    reader.join()
    threads = out["worker_threads"]
    assert threads["decode"] > 0.05  # it ran for 0.5 s, on a core or a share of one
    assert threads["decode"] <= out["worker"] + 0.05  # part of this process's own CPU
    assert set(out) >= {"worker", "kafka", "redis", "others", "idle", "steal", "cores"}
