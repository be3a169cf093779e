"""Inference backends and the batched letterbox: same detections as PyTorch, export cache.

Every available backend runs the converted yolov5n on footage frames (several cameras, mixed
resolutions, in one batch) and must give the detections of ultralytics' own ``predict`` on each
frame alone: matched boxes IoU >= 0.9, same class, confidence within 0.05 (boxes within 0.05 of
the confidence threshold may be on one side only).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from detectors import backends
from detectors.backends import BackendError, choose_backend, export, openvino_backend
from detectors.backends.export import exported_model
from detectors.config import DetectorConfig
from detectors.engine import Detector
from detectors.preprocess import Letterboxer, canvas_shape, scale_boxes
from detectors.types import Detection
from pipeline.bench import match_detections, merge_matches, replay_frames, sample_frames
from pipeline.common.assets import footage, model
from tests.support.assets import require
from tests.support.cli import model_test_env

YOLOV5N = model("yolov5n.pt")
FILES = (
    "one-by-one-person-detection.mp4",  # 768x432
    "people-detection.mp4",  # 480x270
    "bottle-detection.mp4",  # 640x360
    "classroom.mp4",  # 480x270
    "person-bicycle-car-detection.mp4",
)
CPU_BACKENDS = [
    b for b in ("torch", "onnxruntime", "openvino") if b in backends.available_backends("cpu")
]


@pytest.fixture(scope="module", autouse=True)
def _env(tmp_path_factory):
    """Private cache (conversion and exports happen here) and a modest thread count; the module
    fails (it does not skip) without the weights and footage."""
    require(YOLOV5N, *(footage(name) for name in FILES))
    with model_test_env(tmp_path_factory.mktemp("vigil-cache")):
        yield


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    return [f for name in FILES for f in sample_frames(footage(name), 3)]


def _config(**kw) -> DetectorConfig:
    return DetectorConfig(weights=str(YOLOV5N), device="cpu", tracker="none", **kw)


@pytest.fixture(scope="module")
def reference(frames) -> list[list[Detection]]:
    """ultralytics ``predict`` on one frame at a time: what a naive loop would publish."""
    det = Detector(_config(backend="ultralytics"))
    return [det.detect([f])[0] for f in frames]


# -- choosing --------------------------------------------------------------------------------------


def test_the_locked_cpu_backends_are_installed():
    """onnxruntime and openvino are dependencies (pyproject.toml, requirements.lock), not options:
    a missing one is a broken install, and the tests below would quietly lose its cases."""
    assert CPU_BACKENDS == ["torch", "onnxruntime", "openvino"]


def test_auto_prefers_the_fastest_cpu_backend_available():
    order = [b for b in ("openvino", "onnxruntime") if b in backends.available_backends("cpu")]
    assert choose_backend("auto", "cpu", True) == (order[0] if order else "torch")
    assert choose_backend("auto", "cpu", False) == "ultralytics"  # an exported file


def test_unusable_backends_are_refused_with_a_reason():
    with pytest.raises(BackendError, match="unknown backend"):
        choose_backend("tflite", "cpu", True)
    with pytest.raises(BackendError, match="NVIDIA GPU"):
        choose_backend("tensorrt", "cpu", True)
    with pytest.raises(BackendError, match=r"\.pt\) weights"):
        choose_backend("onnxruntime", "cpu", False)


def test_missing_runtime_is_named(monkeypatch):
    real = backends.importlib.util.find_spec
    monkeypatch.setattr(
        backends.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "openvino" else real(name, *a),
    )
    with pytest.raises(BackendError, match="pip install openvino"):
        choose_backend("openvino", "cpu", True)
    assert choose_backend("auto", "cpu", True) != "openvino"


# -- letterbox -------------------------------------------------------------------------------------


def test_letterbox_matches_ultralytics_and_inverts(frames):
    from ultralytics.data.augment import LetterBox

    frame = frames[0]  # 768x432
    boxer = Letterboxer(640)
    canvas, (place,) = boxer.letterbox([frame])
    expected = LetterBox((640, 640), auto=True, stride=32)(image=frame)
    assert canvas.shape[1:] == expected.shape == (384, 640, 3)
    assert np.array_equal(canvas[0], expected)
    box = np.array([[100.0, 50.0, 300.0, 400.0, 0.9, 0]], np.float32)
    back = box.copy()
    back[:, [0, 2]] = back[:, [0, 2]] * place.gain_x + place.left
    back[:, [1, 3]] = back[:, [1, 3]] * place.gain_y + place.top
    np.testing.assert_allclose(scale_boxes(back, place)[:, :4], box[:, :4], atol=1e-3)


def test_mixed_resolutions_share_the_smallest_canvas():
    assert canvas_shape([(432, 768), (270, 480), (360, 640)], 640) == (384, 640)
    assert canvas_shape([(270, 480), (480, 640)], 640) == (480, 640)  # a 4:3 camera joins
    assert canvas_shape([(1080, 1920)], 640, rect=False) == (640, 640)
    boxer = Letterboxer(640)
    canvas, places = boxer.letterbox(
        [np.zeros((270, 480, 3), np.uint8), np.full((480, 640, 3), 255, np.uint8)]
    )
    assert canvas.shape == (2, 480, 640, 3)
    p = places[0]  # 480x270 -> 640x360, centred vertically in 480
    assert (p.new_w, p.new_h, p.left, p.top) == (640, 360, 0, 60)
    assert (canvas[0, :60] == 114).all() and (canvas[0, 60:420] == 0).all()
    x = boxer.to_input(canvas)
    assert x.shape == (2, 3, 480, 640) and x.dtype == np.float32
    assert x[1].min() == 1.0 and abs(x[0, 0, 0, 0] - 114 / 255) < 1e-6


# -- same detections ---------------------------------------------------------------------------


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_backend_matches_pytorch_predict_on_footage(backend, frames, reference):
    det = Detector(_config(backend=backend, max_batch=8))
    assert det.backend_name == backend
    got = det.detect(frames)  # batches of mixed cameras and resolutions
    stats = merge_matches(
        [match_detections(r, g, det.config.conf) for r, g in zip(reference, got, strict=True)]
    )
    assert stats["ref"] >= 20, "the footage should give a fair number of boxes"
    assert stats["ok"], stats
    assert stats["matched"] >= stats["ref"] - stats["borderline"]


def test_batch_gives_the_same_as_one_frame_at_a_time(frames):
    det = Detector(_config(backend=CPU_BACKENDS[-1], max_batch=8))
    batch = frames[6:12]  # bottle (640x360) and classroom (480x270): ~50 boxes, two sizes
    assert len({f.shape for f in batch}) == 2
    together = det.detect(batch)
    alone = [det.detect([f])[0] for f in batch]
    stats = merge_matches(
        [match_detections(a, t, det.config.conf) for a, t in zip(alone, together, strict=True)]
    )
    assert stats["ref"] >= 20, f"too few boxes to compare: {stats}"
    assert stats["ok"], stats
    assert stats["matched"] == stats["ref"] == stats["test"], stats


def test_tracking_and_raw_output_through_a_backend(frames):
    det = Detector(DetectorConfig(weights=str(YOLOV5N), device="cpu", backend=CPU_BACKENDS[-1]))
    cam = [f for _, f in replay_frames(footage("classroom.mp4"), 5.0)[:3]]  # seated people
    raw: list[np.ndarray] = []
    for f in cam:
        out = det.detect([f], streams=["cam"], frame_rates=[5.0], raw_out=raw)
    assert len(raw) == 3 and all(r.shape[1] == 6 for r in raw)
    assert out[0] and all(d.track_id is not None for d in out[0])
    again = det.finish(cam[-1], raw[-1], "cam", 5.0)  # a skipped frame re-fed to the tracker
    assert {d.track_id for d in again} == {d.track_id for d in out[0]}


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_two_batches_in_flight_give_what_each_gives_alone(backend, frames):
    """submit/collect (the worker overlaps a batch with the previous one's post-processing):
    two batches in flight, each with its own letterbox buffer, must not mix."""
    det = Detector(_config(backend=backend, max_batch=4))
    a, b = frames[:4], frames[4:7]  # different sizes, so a mix-up would show
    first = det.submit(a)
    det.infer(frames[7:8])  # a synchronous call meanwhile takes the free buffer
    second = det.submit(b)
    with pytest.raises(RuntimeError, match="two batches in flight"):
        det.submit(frames[7:8])
    assert det.wait(first) and det.wait(second)
    got_a, got_b = det.collect(first), det.collect(second)
    with pytest.raises(RuntimeError, match="collected already"):
        det.collect(first)
    for got, want in ((got_a, det.infer(a)), (got_b, det.infer(b))):
        assert len(got) == len(want)
        for g, w in zip(got, want, strict=True):
            assert g.shape == w.shape and np.allclose(g, w, atol=1e-4)
    assert any(len(g) for g in got_a + got_b)  # footage with people: not an empty comparison


def _compiled_precisions(det: Detector) -> set[str]:
    """The inference precision ('f32', 'bf16') each OpenVINO model compiled so far runs at: what
    ``INFERENCE_PRECISION_HINT`` resolved to in the plugin, not what the config asked for."""
    out = set()
    for (*_hw, hint), (runner, _shape, _jobs) in det.backend._queues.items():
        request = runner if hint == "LATENCY" else runner[0]  # AsyncInferQueue: its requests
        hint_type = request.get_compiled_model().get_property("INFERENCE_PRECISION_HINT")
        out.add(hint_type.get_type_name())
    return out


def _cpu_has_bf16() -> bool:
    import openvino as ov

    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def test_openvino_runs_f32_unless_bf16_is_asked_for(frames):
    """f32 by default (PyTorch's detections), on every CPU: OpenVINO itself would pick bf16 on
    CPUs with bf16 units. ``precision: bf16`` is the user's opt-in: the compiled models run
    bfloat16, and boxes move within what docs/performance.md and BENCHMARKS.md promise ("boxes
    move by about a pixel", 1-2 boxes in 100 beyond the IoU 0.9 / conf 0.05 tolerance)."""
    batch = frames[6:]  # 9 frames, 60-odd boxes, two sizes: batched and single-frame models
    f32 = Detector(_config(backend="openvino", max_batch=8))
    want = f32.detect(batch)
    f32.detect(batch[:1])
    assert len(f32.backend._queues) >= 2  # throughput and latency models were compiled
    assert _compiled_precisions(f32) == {"f32"}
    if not _cpu_has_bf16():
        pytest.skip(
            "this CPU has no bf16 support (OpenVINO CPU OPTIMIZATION_CAPABILITIES lacks BF16): "
            "precision: bf16 cannot be checked here, only that f32 is the default"
        )
    bf16 = Detector(_config(backend="openvino", max_batch=8, precision="bf16"))
    got = bf16.detect(batch)
    bf16.detect(batch[:1])
    assert _compiled_precisions(bf16) == {"bf16"}

    stats = merge_matches(
        [match_detections(w, g, f32.config.conf) for w, g in zip(want, got, strict=True)]
    )
    assert stats["ref"] >= 40, f"too few boxes to compare: {stats}"
    beyond = max(stats["missing"], stats["extra"]) + stats["conf_fail"]
    assert beyond <= max(2, round(0.02 * stats["ref"])), stats  # 1-2 in 100
    assert stats["matched"] + stats["borderline"] >= stats["ref"] - 2, stats
    # matched boxes move by about a pixel (typically a fraction of one)
    moves = []
    for frame, w_dets, g_dets in zip(batch, want, got, strict=True):
        h, w = frame.shape[:2]
        scale = np.array([w, h, w, h])
        for d in w_dets:
            same = [g for g in g_dets if g.class_id == d.class_id]
            if same:
                moved = min(np.abs((np.array(g.box) - np.array(d.box)) * scale).max() for g in same)
                moves.append(moved)
    assert np.median(moves) <= 1.0, sorted(moves)
    assert max(moves) > 0, "bf16 gave bit-identical boxes: the option changed nothing"


def test_openvino_candidate_filter_in_the_graph_changes_nothing(frames):
    """Only anchors above the threshold leave OpenVINO: NMS must see the same candidates."""
    filtered = Detector(_config(backend="openvino", max_batch=8))
    full = Detector(_config(backend="openvino", max_batch=8))
    full.backend._min_score = None  # the whole output, as before the filter
    full.backend._queues.clear()
    for batch in (frames[:4], frames[4:12], frames[12:13]):  # mixed sizes, and one frame alone
        got, want = filtered.infer(batch), full.infer(batch)
        for g, w in zip(got, want, strict=True):
            np.testing.assert_array_equal(g, w)
    assert sum(len(g) for g in filtered.infer(frames[:8])) > 0
    canvas, _ = Letterboxer(640).letterbox(frames[:4])  # and the filter is really on
    assert filtered.backend.run(canvas).shape[-1] < full.backend.run(canvas).shape[-1]


def test_candidate_filter_only_on_a_raw_detection_head():
    """End-to-end models (already suppressed, (1, 300, 6)) keep their whole output."""
    import openvino as ov
    from openvino import opset13 as ops

    def model_with_output(shape):
        x = ops.parameter([1, 3, 8, 8], np.float32)
        const = ops.constant(np.zeros(shape, np.float32))
        return ov.Model([ops.add(const, ops.reduce_sum(x, [1, 2, 3], False))], [x])

    assert openvino_backend.anchors_last(model_with_output([1, 84, 5040]))
    assert openvino_backend.anchors_last(model_with_output([1, 5, 5040]))  # one class
    assert not openvino_backend.anchors_last(model_with_output([1, 300, 6]))


def test_candidates_of_different_counts_are_padded_with_zero_scores():
    a, b = np.ones((84, 3), np.float32), np.ones((84, 1), np.float32)
    batch = openvino_backend._stack_candidates([a, b])
    assert batch.shape == (2, 84, 3)
    assert (batch[1, :, 1:] == 0).all() and (batch[1, :, :1] == 1).all()


# -- export cache ----------------------------------------------------------------------------------


def test_export_is_cached_next_to_the_weights_and_redone_when_they_change(tmp_path):
    from detectors.loading import load_model

    src = load_model(str(YOLOV5N), "cpu").ckpt_path  # the converted checkpoint
    weights = tmp_path / "mine.pt"
    weights.write_bytes(Path(src).read_bytes())
    first = exported_model(weights, "onnx", imgsz=640)
    assert first.parent.parent == tmp_path / "mine.exports"
    meta = json.loads((first.parent / "vigil-export.json").read_text())
    assert meta["weights_sha256"] and meta["format"] == "onnx"
    stamp = first.stat().st_mtime_ns
    assert exported_model(weights, "onnx", imgsz=640) == first
    assert first.stat().st_mtime_ns == stamp  # cached: not exported again

    ckpt = torch.load(weights, weights_only=False)  # new weights: same model, other content
    ckpt["vigil_test"] = "retrained"
    torch.save(ckpt, weights)
    os.utime(weights)
    again = exported_model(weights, "onnx", imgsz=640)
    assert again == first
    new_meta = json.loads((again.parent / "vigil-export.json").read_text())
    assert new_meta["weights_sha256"] != meta["weights_sha256"]


def test_read_only_weights_folder_exports_to_the_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(export, "_writable", lambda folder: False)
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"not really weights")
    root = export.export_root(weights)
    assert root.parent.name == "exports" and str(root).startswith(os.environ["VIGIL_CACHE"])


def test_a_folder_without_write_bits_is_read_only_even_for_root(tmp_path):
    """Shared assets are mode r-x; as root ``os.access`` says writable, exports must not land
    there all the same."""
    folder = tmp_path / "assets"
    folder.mkdir()
    weights = folder / "w.pt"
    weights.write_bytes(b"not really weights")
    assert export._writable(folder)
    folder.chmod(0o555)
    try:
        assert not export._writable(folder)
        assert export.export_root(weights).parent.name == "exports"
    finally:
        folder.chmod(0o755)


def test_detections_unchanged_when_frame_is_a_view(frames):
    """Frames handed over by readers may be slices; the letterbox must not care."""
    det = Detector(_config(backend=CPU_BACKENDS[-1]))
    frame = frames[9]  # the classroom: a dozen people (frames[0], an empty office, has none)
    big = cv2.copyMakeBorder(frame, 10, 10, 10, 10, cv2.BORDER_CONSTANT)
    view = big[10:-10, 10:-10]
    assert not view.flags.c_contiguous
    a, b = det.detect([view])[0], det.detect([frame.copy()])[0]
    stats = merge_matches([match_detections(a, b, det.config.conf)])
    assert stats["ref"] >= 8, f"too few boxes to compare: {stats}"
    assert stats["ok"] and stats["matched"] == stats["ref"], stats
