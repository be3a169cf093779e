"""The recording bench's arithmetic and its streams: what BENCHMARKS.md's issue 24 figures are
computed from (pipeline/bench/recording_media.py)."""

from __future__ import annotations

import json

import av
import cv2
import numpy as np
import pytest

from pipeline.bench.recording_media import (
    MediaError,
    StreamSpec,
    budget_series,
    cores_per_camera,
    gated_per_core,
    make_stream,
    parse_probe,
    parse_sizing,
    probe,
)


def _probe_json(stream: dict, fmt: dict) -> str:
    audio = {"codec_type": "audio", "codec_name": "aac", "bit_rate": "128000"}
    return json.dumps({"streams": [audio, {"codec_type": "video", **stream}], "format": fmt})


def test_bitrate_is_the_video_streams_and_the_files_when_the_stream_has_none():
    text = _probe_json(
        {
            "codec_name": "h264",
            "width": 1920,
            "height": 1080,
            "avg_frame_rate": "25/1",
            "nb_frames": "3485",
            "duration": "139.4",
            "bit_rate": "3980887",
        },
        {"duration": "139.4", "bit_rate": "4100000", "size": "69410162"},
    )
    got = parse_probe(text)
    assert (got["codec"], got["width"], got["height"], got["fps"]) == ("h264", 1920, 1080, 25.0)
    assert got["bit_rate"] == 3980887  # the video's, not the file's (audio, container)
    assert got["frames"] == 3485 and got["bytes"] == 69410162
    bare = _probe_json({"codec_name": "h264", "avg_frame_rate": "30000/1001"}, {"bit_rate": "900"})
    assert parse_probe(bare)["bit_rate"] == 900
    assert parse_probe(bare)["fps"] == 29.97


def test_a_file_without_video_is_an_error_naming_it():
    with pytest.raises(MediaError, match="clip.mp4: no video stream"):
        parse_probe(json.dumps({"streams": [], "format": {}}), "clip.mp4")
    with pytest.raises(MediaError, match="clip.mp4: not ffprobe's JSON"):
        parse_probe("oops", "clip.mp4")


def test_cameras_per_core_is_one_over_the_sum_of_the_parts():
    row = cores_per_camera({"decode": 0.025, "detect": 0.05, "record": 0.025})
    assert row["cores"] == pytest.approx(0.1)
    assert row["percent_of_core"] == 10.0
    assert row["cameras_per_core"] == 10.0


def test_budget_series_finds_the_crossing_the_peak_and_the_excess():
    mib = 2**20
    samples = [(0.0, 0), (5.0, 4 * mib), (10.0, 7 * mib), (15.0, 2 * mib), (20.0, 6 * mib)]
    got = budget_series(samples, 5 * mib)
    assert got["first_over_budget_s"] == 10.0
    assert got["peak_bytes"] == 7 * mib
    assert got["peak_over_budget_bytes"] == 2 * mib
    assert got["min_after_crossing_bytes"] == 2 * mib
    assert got["final_bytes"] == 6 * mib
    never = budget_series([(0.0, 1), (1.0, 2)], 10)
    assert never["first_over_budget_s"] is None and never["peak_over_budget_bytes"] == 0


def test_the_served_stream_has_the_stated_size_rate_and_keyframe_interval(tmp_path):
    # 2 s at 10 fps (the footage's rate): a moving square, then a cut to another scene at 1 s
    # (an encoder left to itself puts a keyframe there; a camera keeps its fixed interval)
    src = tmp_path / "src.mp4"
    out = cv2.VideoWriter(str(src), cv2.VideoWriter_fourcc(*"mp4v"), 10, (160, 90))
    noise = np.random.default_rng(0).integers(0, 255, (90, 160, 3), np.uint8)
    for i in range(20):
        frame = np.zeros((90, 160, 3), np.uint8) if i < 10 else noise.copy()
        frame[20:50, 5 * i : 5 * i + 30] = (0, 200, 255)
        out.write(frame)
    out.release()
    spec = StreamSpec("t", 320, 180, fps=25, gop=10, kbps=300)
    made = make_stream(src, spec, tmp_path / "cache")
    info = probe(made)
    assert (info["codec"], info["width"], info["height"], info["fps"]) == ("h264", 320, 180, 25.0)
    with av.open(str(made)) as c:
        keys = [i for i, p in enumerate(c.demux(video=0)) if p.size and p.is_keyframe]
    assert keys == [0, 10, 20, 30, 40]  # every gop frames exactly, whatever the content
    assert make_stream(src, spec, tmp_path / "cache") == made  # made once, then reused
    with pytest.raises(MediaError, match="nope.mp4: no such footage file"):
        make_stream(tmp_path / "nope.mp4", spec, tmp_path / "cache")


def test_sizing_rows_parse_and_a_bad_one_is_named():
    rows = parse_sizing("teacher 320 f32 =12.4@10.7, teacher 640 f32=4.4@10.7*640/320")
    assert [(r.label, r.per_core, r.det_ms, r.scale) for r in rows] == [
        ("teacher 320 f32", 12.4, 10.7, None),
        ("teacher 640 f32", 4.4, 10.7, (640, 320)),
    ]
    with pytest.raises(ValueError, match="'student=x@3'"):
        parse_sizing("teacher=1@2,student=x@3")


def test_gating_removes_the_detector_share_of_skipped_frames_only():
    # 10 cameras per core = 100 ms of CPU per camera-second, 60 of them the detector at 5 fps
    assert gated_per_core(10.0, 12.0, 1.0, 0.0, 5.0) == 10.0  # every frame detected: as before
    assert gated_per_core(10.0, 12.0, 0.0, 0.0, 5.0) == 25.0  # none: 40 ms left
    assert gated_per_core(10.0, 12.0, 0.25, 2.0, 5.0) == round(1000 / (100 - 45 + 10), 1)
    with pytest.raises(ValueError, match="more than a camera's whole cost"):
        gated_per_core(10.0, 30.0, 0.0, 0.0, 5.0)
