"""Detector: legacy YOLOv5 conversion, loading errors, safe unpickling, batched detection, CLI.

The converted yolov5n is checked against an independent, straightforward re-implementation of the
original YOLOv5 v6 forward pass, decode and NMS (written from the YOLOv5 design, run on the raw
tensors of the checkpoint), so a wrong layer mapping or decode shows up as different boxes.
"""

from __future__ import annotations

import json
import os
import pickle
import sys
import types
from pathlib import Path

import cv2
import pytest
import torch
import torch.nn.functional as F

from detectors import yolov5_legacy
from detectors.config import DetectorConfig
from detectors.engine import Detector, resolve_classes
from detectors.loading import WeightsError, cache_dir, load_model, select_device
from pipeline.common.assets import footage, model
from tests.support.assets import require
from tests.support.cli import model_test_env, run_detector_cli

YOLOV5N = model("yolov5n.pt")


def _bus_jpg() -> Path:
    import ultralytics

    return Path(ultralytics.__file__).parent / "assets" / "bus.jpg"


@pytest.fixture(scope="module", autouse=True)
def _env(tmp_path_factory):
    """Private conversion cache and a modest thread count (shared CPU); the module fails (it
    does not skip) without the weights and the footage."""
    require(YOLOV5N, footage("classroom.mp4"))
    with model_test_env(tmp_path_factory.mktemp("vigil-cache")):
        yield


@pytest.fixture(scope="module")
def detector() -> Detector:
    return Detector(DetectorConfig(weights=str(YOLOV5N), imgsz=640, conf=0.25, iou=0.45))


_run = run_detector_cli


# ------------------------------------------------------------------------------------------
# Reference: the original YOLOv5 v6 forward, decode and NMS, on the checkpoint's raw tensors


def _ref_conv(sd, bn, p, x, stride=1, pad=None):
    w = sd[p + "conv.weight"]
    k = w.shape[-1]
    x = F.conv2d(x, w, None, stride, k // 2 if pad is None else pad)
    eps = bn[p + "bn"][0]
    mean, var = sd[p + "bn.running_mean"], sd[p + "bn.running_var"]
    x = F.batch_norm(x, mean, var, sd[p + "bn.weight"], sd[p + "bn.bias"], training=False, eps=eps)
    return F.silu(x)


def yolov5_reference_forward(
    legacy: yolov5_legacy.LegacyCheckpoint, img: torch.Tensor
) -> torch.Tensor:
    """(B, N, 5+nc) rows of xywh (pixels), objectness, class probabilities: YOLOv5's inference output."""
    sd, bn = legacy.state, legacy.bn
    layers = legacy.yaml["backbone"] + legacy.yaml["head"]
    outs: list[torch.Tensor] = []
    x = img
    for i, (f, _n, mod, args) in enumerate(layers):
        p = f"model.{i}."
        inp = (
            x
            if f == -1
            else (outs[f] if isinstance(f, int) else [x if j == -1 else outs[j] for j in f])
        )
        if mod == "Conv":
            x = _ref_conv(
                sd, bn, p, inp, args[2] if len(args) > 2 else 1, args[3] if len(args) > 3 else None
            )
        elif mod == "C3":
            shortcut = args[1] if len(args) > 1 else True
            a = _ref_conv(sd, bn, p + "cv1.", inp)
            j = 0
            while f"{p}m.{j}.cv1.conv.weight" in sd:
                b = _ref_conv(sd, bn, f"{p}m.{j}.cv2.", _ref_conv(sd, bn, f"{p}m.{j}.cv1.", a))
                a = a + b if shortcut else b
                j += 1
            x = _ref_conv(sd, bn, p + "cv3.", torch.cat((a, _ref_conv(sd, bn, p + "cv2.", inp)), 1))
        elif mod == "SPPF":
            a = _ref_conv(sd, bn, p + "cv1.", inp)
            y1 = F.max_pool2d(a, 5, 1, 2)
            y2 = F.max_pool2d(y1, 5, 1, 2)
            x = _ref_conv(sd, bn, p + "cv2.", torch.cat((a, y1, y2, F.max_pool2d(y2, 5, 1, 2)), 1))
        elif mod == "nn.Upsample":
            x = F.interpolate(inp, scale_factor=2, mode="nearest")
        elif mod == "Concat":
            x = torch.cat(inp, 1)
        elif mod == "Detect":
            na, no = legacy.anchors.shape[1], legacy.nc + 5
            z = []
            for level, xi in enumerate(inp):
                xi = F.conv2d(xi, sd[f"{p}m.{level}.weight"], sd[f"{p}m.{level}.bias"])
                bs, _, ny, nx = xi.shape
                y = xi.view(bs, na, no, ny, nx).permute(0, 1, 3, 4, 2).sigmoid()
                yv, xv = torch.meshgrid(torch.arange(ny), torch.arange(nx), indexing="ij")
                grid = torch.stack((xv, yv), 2).view(1, 1, ny, nx, 2).float() - 0.5
                s = legacy.strides[level]
                anchor_grid = (legacy.anchors[level] * s).view(1, na, 1, 1, 2)
                xy = (y[..., :2] * 2 + grid) * s
                wh = (y[..., 2:4] * 2) ** 2 * anchor_grid
                z.append(torch.cat((xy, wh, y[..., 4:]), -1).view(bs, -1, no))
            x = torch.cat(z, 1)
        else:
            raise AssertionError(f"reference has no {mod}")
        outs.append(x)
    return x


def yolov5_reference_nms(pred: torch.Tensor, conf_thres=0.25, iou_thres=0.45) -> torch.Tensor:
    """YOLOv5's single-label NMS for one image: rows x1, y1, x2, y2, conf, cls."""
    import torchvision

    x = pred[pred[:, 4] > conf_thres].clone()
    x[:, 5:] *= x[:, 4:5]
    box = torch.cat((x[:, :2] - x[:, 2:4] / 2, x[:, :2] + x[:, 2:4] / 2), 1)
    conf, j = x[:, 5:].max(1, keepdim=True)
    x = torch.cat((box, conf, j.float()), 1)[conf.view(-1) > conf_thres]
    keep = torchvision.ops.nms(x[:, :4] + x[:, 5:6] * 7680, x[:, 4], iou_thres)[:300]
    return x[keep]


def _iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


# ------------------------------------------------------------------------------------------
# Conversion matches the original model


def test_converted_yolov5n_matches_reference_on_bus(detector: Detector):
    legacy = yolov5_legacy.read_legacy_checkpoint(YOLOV5N)
    img = cv2.imread(str(_bus_jpg()))  # 810x1080 -> 480x640: no padding, same input both ways
    h, w = img.shape[:2]
    scale = 640 / max(h, w)
    small = cv2.resize(img, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_LINEAR)
    x = torch.from_numpy(small[:, :, ::-1].copy()).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        ref_raw = yolov5_reference_forward(legacy, x)
        ours_raw = detector.model.model.float()(x)
    ours_raw = ours_raw[0] if isinstance(ours_raw, (list, tuple)) else ours_raw
    # Same tensor, same layout: xywh and class score (= cls * obj) per anchor.
    expected = torch.cat((ref_raw[..., :4], ref_raw[..., 5:] * ref_raw[..., 4:5]), -1).permute(
        0, 2, 1
    )
    assert ours_raw.shape == expected.shape == (1, 84, 3 * (80 * 60 + 40 * 30 + 20 * 15))
    assert torch.allclose(ours_raw[:, :4], expected[:, :4], atol=0.05)  # pixels (fused conv+bn)
    assert torch.allclose(ours_raw[:, 4:], expected[:, 4:], atol=1e-3)

    ref = yolov5_reference_nms(ref_raw[0]).numpy()
    ref[:, :4] /= scale
    ours = detector.detect([img])[0]
    assert {d.label for d in ours} == {"person", "bus"}
    ref_persons = [r for r in ref if int(r[5]) == 0]
    assert len(ref_persons) >= 3
    assert sum(d.label == "person" for d in ours) == len(ref_persons)
    for r in ref:
        if r[4] < 0.4:
            continue
        ref_box = (r[0] / w, r[1] / h, r[2] / w, r[3] / h)
        best = max(ours, key=lambda d: _iou(d.box, ref_box))
        assert _iou(best.box, ref_box) >= 0.9, (r, best)
        assert best.class_id == int(r[5])
        assert abs(best.confidence - float(r[4])) < 0.02


def test_persons_on_classroom_footage_batched(detector: Detector):
    cap = cv2.VideoCapture(str(footage("classroom.mp4")))
    frames = [cap.read()[1] for _ in range(3)]
    cap.release()
    assert all(f is not None for f in frames)
    results = detector.detect(frames)
    assert len(results) == 3
    for dets in results:
        persons = [d for d in dets if d.label == "person" and d.confidence >= 0.5]
        assert len(persons) >= 3
        for d in dets:
            assert all(0.0 <= v <= 1.0 for v in d.box)
            assert d.box[0] < d.box[2] and d.box[1] < d.box[3]


def test_detector_attributes(detector: Detector):
    assert detector.name == "yolov5n"
    assert detector.version == yolov5_legacy.file_sha256(YOLOV5N)[:12]
    assert detector.names[0] == "person" and len(detector.names) == 80
    assert detector.device in ("cpu", "cuda:0")
    assert detector.detect([]) == []


def test_conversion_is_cached_and_weights_only_loadable(detector: Detector):
    from ultralytics.nn.tasks import torch_safe_load

    cached = cache_dir() / f"{yolov5_legacy.file_sha256(YOLOV5N)[:16]}.pt"
    before = cached.stat().st_mtime_ns
    load_model(str(YOLOV5N))
    assert cached.stat().st_mtime_ns == before  # reused, not converted again
    # ULTRALYTICS_SAFE_LOAD=1 users: the head class is registered for torch's weights_only loader
    ckpt, _ = torch_safe_load(str(cached), safe_only=True)
    assert isinstance(ckpt["model"].model[-1], yolov5_legacy.YOLOv5Detect)
    cached.write_bytes(b"damaged")  # a broken cache entry is rebuilt, not reported
    assert load_model(str(YOLOV5N)).names[0] == "person"
    assert cached.stat().st_size > 1_000_000


def test_class_filter_by_name_and_id():
    cfg = DetectorConfig(weights=str(YOLOV5N), imgsz=320, classes=["Bus"])
    det = Detector(cfg, warmup=False)
    labels = [d.label for d in det.detect([cv2.imread(str(_bus_jpg()))])[0]]
    assert labels and set(labels) == {"bus"}
    assert resolve_classes(["person", 2, "0"], det.names) == [0, 2]
    with pytest.raises(WeightsError, match="unknown class 'unicorn'.*person"):
        resolve_classes(["unicorn"], det.names)
    with pytest.raises(WeightsError, match="class id 99"):
        resolve_classes([99], det.names)


def test_import_yolov5_output_loads_with_plain_ultralytics(tmp_path, capsys):
    from ultralytics import YOLO

    out = tmp_path / "yolov5n-ultralytics.pt"
    rc, stdout, _ = _run(["models", "import-yolov5", str(YOLOV5N), "-o", str(out)], capsys)
    assert rc == 0 and out.is_file() and "converted" in stdout
    yolo = YOLO(str(out))
    assert yolo.task == "detect" and yolo.names[0] == "person"
    boxes = yolo.predict(str(_bus_jpg()), imgsz=320, verbose=False)[0].boxes
    assert (boxes.cls == 0).sum() >= 2


# ------------------------------------------------------------------------------------------
# Errors


def test_missing_weights(tmp_path):
    missing = tmp_path / "nope" / "weights.pt"
    with pytest.raises(WeightsError, match=str(missing)):
        load_model(str(missing))
    with pytest.raises(WeightsError, match="not-a-real-model-xyz.pt.*not found"):
        load_model("not-a-real-model-xyz.pt")


@pytest.mark.parametrize("kind", ["truncated", "garbage", "empty"])
def test_corrupt_weights(tmp_path, kind):
    bad = tmp_path / f"{kind}.pt"
    data = YOLOV5N.read_bytes()
    bad.write_bytes(
        {"truncated": data[: len(data) // 2], "garbage": os.urandom(4096), "empty": b""}[kind]
    )
    with pytest.raises(WeightsError, match=str(bad)):
        load_model(str(bad))


def test_select_device():
    assert select_device("auto") in ("cpu", "cuda:0")
    assert select_device("CPU") == "cpu"
    with pytest.raises(WeightsError, match="unknown device"):
        select_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(WeightsError, match="CUDA is not available"):
            select_device("cuda:0")


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_restricted_unpickler_refuses_code(tmp_path):
    marker = tmp_path / "pwned"
    data = pickle.dumps({"model": _Evil(marker)}, protocol=2)
    with pytest.raises(yolov5_legacy.UnsafePickleError, match="system"):
        yolov5_legacy.restricted_loads(data)
    assert not marker.exists()
    pickle.loads(data)  # control: the payload is live with a plain unpickler
    assert marker.exists()


def test_malicious_legacy_checkpoint_is_refused(tmp_path, monkeypatch, capsys):
    """A file that looks like a YOLOv5 checkpoint but carries an os.system call."""
    fake = types.ModuleType("models.yolo")

    class Model:  # pickled as models.yolo.Model, like a real YOLOv5 checkpoint
        pass

    Model.__module__, Model.__qualname__ = "models.yolo", "Model"
    fake.Model = Model
    monkeypatch.setitem(sys.modules, "models", types.ModuleType("models"))
    monkeypatch.setitem(sys.modules, "models.yolo", fake)
    marker = tmp_path / "pwned"
    m = Model()
    m.payload = _Evil(marker)
    evil = tmp_path / "evil.pt"
    torch.save({"model": m, "epoch": -1}, evil)
    monkeypatch.delitem(sys.modules, "models.yolo")
    monkeypatch.delitem(sys.modules, "models")

    assert yolov5_legacy.is_legacy_yolov5(evil)
    with pytest.raises(WeightsError, match=r"evil\.pt.*refused.*system"):
        load_model(str(evil))
    rc, _, err = _run(["models", "import-yolov5", str(evil), "-o", str(tmp_path / "o.pt")], capsys)
    assert rc == 2 and "refused" in err and "Traceback" not in err
    assert not marker.exists()


# ------------------------------------------------------------------------------------------
# CLI


def test_cli_detect_json_on_footage(capsys):
    video = footage("classroom.mp4")
    rc, out, _ = _run(
        ["detect", str(video), "--max-frames", "2", "--json", "--imgsz", "640"], capsys
    )
    assert rc == 0
    frames = [json.loads(line) for line in out.splitlines()]
    assert [f["frame"] for f in frames] == [0, 1]
    assert frames[0]["model"] == "yolov5n"
    assert sum(d["label"] == "person" for d in frames[0]["detections"]) >= 3


def test_cli_detect_errors_exit_2(tmp_path, capsys):
    missing = tmp_path / "missing.pt"
    rc, _, err = _run(["detect", str(_bus_jpg()), "--weights", str(missing)], capsys)
    assert rc == 2 and str(missing) in err and "Traceback" not in err
    rc, _, err = _run(["detect", str(tmp_path / "none.mp4")], capsys)
    assert rc == 2 and "not found" in err
    rc, _, err = _run(["detect", str(_bus_jpg()), "--imgsz", "300"], capsys)
    assert rc == 2 and "multiple of 32" in err
    rc, _, err = _run(["detect", str(_bus_jpg()), "--classes", "unicorn", "--imgsz", "320"], capsys)
    assert rc == 2 and "unicorn" in err
