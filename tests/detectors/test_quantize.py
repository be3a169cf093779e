"""INT8 and the precision gate: config alias, calibration input errors, choosing a precision from
the gate's record, and (slow) a whole quantize + gate run on the footage."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from detectors import precision_record as pr
from detectors import quantize as q
from detectors.config import DetectorConfig
from detectors.errors import WeightsError
from pipeline.common.assets import CAMERA_FILES, model
from tests.support.assets import footage_path, model_path, require
from tests.support.config import REDIS_URL

YOLOV5N = model("yolov5n.pt")


# -- config ---------------------------------------------------------------------------------


def test_precision_and_its_old_name_are_one_setting() -> None:
    """``cpu_precision`` is read into ``precision`` (tests/detectors/test_backend_registry.py
    has the other old key, ``half``)."""
    assert DetectorConfig().precision is None  # the backend's default (f32 on OpenVINO)
    with pytest.warns(FutureWarning, match="cpu_precision is deprecated"):
        assert DetectorConfig(cpu_precision="bf16").precision == "bf16"
    dumped = DetectorConfig(precision="auto").model_dump()
    assert "cpu_precision" not in dumped and "half" not in dumped
    assert DetectorConfig.model_validate(dumped).precision == "auto"
    with pytest.raises(ValueError, match="disagree"), pytest.warns(FutureWarning):
        DetectorConfig(precision="int8", cpu_precision="bf16")
    with pytest.raises(ValueError):
        DetectorConfig(precision="fp8")


# -- calibration input ------------------------------------------------------------------------


def test_missing_calibration_folder_is_named(tmp_path: Path) -> None:
    with pytest.raises(q.QuantizeError, match=str(tmp_path / "nope")):
        q.image_files(tmp_path / "nope")


def test_empty_calibration_folder_is_named(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("no images here")
    with pytest.raises(q.QuantizeError, match=f"{tmp_path} has no images"):
        q.calibration_from_files(q.image_files(tmp_path), 320, source=str(tmp_path))


def test_unreadable_images_are_named(tmp_path: Path) -> None:
    for i in range(3):
        (tmp_path / f"bad{i}.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(q.QuantizeError, match=r"0 readable image\(s\) \(3 unreadable, e.g. .*bad0"):
        q.calibration_from_files(q.image_files(tmp_path), 320, source=str(tmp_path))


def test_too_few_images(tmp_path: Path) -> None:
    import cv2

    for i in range(5):
        cv2.imwrite(str(tmp_path / f"f{i}.png"), np.full((90, 160, 3), 40 * i, np.uint8))
    with pytest.raises(q.QuantizeError, match=r"5 readable image\(s\); at least 32"):
        q.calibration_from_files(q.image_files(tmp_path), 320, source=str(tmp_path))
    # asking for fewer lowers the bar: the letterboxed canvases are what the backend sees
    calib = q.calibration_from_files(q.image_files(tmp_path), 320, 4, source=str(tmp_path))
    assert len(calib) == 4 and calib.canvases[0].shape == (1, 192, 320, 3)
    again = q.calibration_from_files(q.image_files(tmp_path), 320, 4, source=str(tmp_path))
    assert again.sha256 == calib.sha256


def test_footage_calibration_and_heldout_frames_differ() -> None:
    clip = Path(footage_path("classroom.mp4"))
    calib = q.footage_frames([clip], 4, phase=0.0)
    held = q.footage_frames([clip], 4, phase=0.5)
    assert len(calib) == len(held) == 4
    assert q.canvas_hash(calib) != q.canvas_hash(held)


def test_weights_that_do_not_load_are_named(tmp_path: Path) -> None:
    from detectors.retrain.precision_gate import run_gate

    bad = tmp_path / "broken.pt"
    bad.write_bytes(b"\x80\x04 not a checkpoint")
    with pytest.raises(WeightsError, match="broken.pt"):
        run_gate(str(bad), 320, precisions=("int8",))
    with pytest.raises(WeightsError, match="missing.pt"):
        run_gate(str(tmp_path / "missing.pt"), 320)


def test_cli_reports_a_bad_calibration_folder(tmp_path: Path, capsys) -> None:
    from pipeline.cli import main

    require(YOLOV5N)
    empty = tmp_path / "calib"
    empty.mkdir()
    rc = main(
        [
            "models",
            "quantize",
            "--weights",
            str(YOLOV5N),
            "--imgsz",
            "64",
            "--calibration",
            str(empty),
            "--skip-bf16",
            "--heldout-frames",
            "2",
        ]
    )
    assert rc == 2
    assert f"{empty} has no images" in capsys.readouterr().err


# -- choosing a precision from the gate's record ----------------------------------------------


def _fake_export(tmp_path: Path, sha: str = "abc") -> Path:
    """``<root>/openvino-640-fp32-b1/m_openvino_model`` with its sidecar, and an INT8 folder."""
    f32 = tmp_path / "openvino-640-fp32-b1" / "m_openvino_model"
    f32.mkdir(parents=True)
    (f32.parent / "vigil-export.json").write_text(json.dumps({"weights_sha256": sha, "imgsz": 640}))
    int8 = tmp_path / "openvino-640-int8-k"
    int8.mkdir()
    (int8 / "model.xml").write_text("<net/>")
    return f32


def _record(tmp_path: Path, passed: dict[str, bool], **over) -> None:
    ms = {"bf16": 50.0, "int8": 40.0}
    rec = pr.GateRecord(
        weights_sha256=over.get("sha", "abc"),
        imgsz=640,
        machine=over.get("machine", pr.machine_id()),
        tolerance=1.0,
        heldout="test",
        f32={"map50": 0.9, "map50_95": 0.7, "ms_per_frame": 60.0},
        results={
            p: {"passed": ok, "ms_per_frame": ms[p], "reason": f"{p} figures"}
            for p, ok in passed.items()
        },
        int8_dir=str(tmp_path / "openvino-640-int8-k"),
    )
    pr.write_record(pr.record_path(tmp_path, 640), rec)


def test_int8_without_a_gate_runs_f32(tmp_path: Path, caplog) -> None:
    f32 = _fake_export(tmp_path)
    assert pr.resolve(f32, "int8") == (f32, "f32", "f32")
    assert "no accuracy gate passed" in caplog.text
    assert pr.resolve(f32, "auto") == (f32, "f32", "f32")
    assert pr.resolve(f32, "bf16") == (f32, "bf16", "bf16")  # the user's explicit opt-in


def test_a_refused_gate_keeps_f32(tmp_path: Path, caplog) -> None:
    f32 = _fake_export(tmp_path)
    _record(tmp_path, {"bf16": False, "int8": False})
    assert pr.resolve(f32, "int8") == (f32, "f32", "f32")
    assert "refused by the accuracy gate (int8 figures)" in caplog.text
    assert pr.resolve(f32, "auto") == (f32, "f32", "f32")


def test_passed_gate_and_auto_picks_the_fastest(tmp_path: Path) -> None:
    f32 = _fake_export(tmp_path)
    int8 = tmp_path / "openvino-640-int8-k"
    _record(tmp_path, {"bf16": True, "int8": True})
    assert pr.resolve(f32, "int8") == (int8, "f32", "int8")
    assert pr.resolve(f32, "auto") == (int8, "f32", "int8")
    _record(tmp_path, {"bf16": True, "int8": False})
    assert pr.resolve(f32, "auto") == (f32, "bf16", "bf16")


def test_record_of_other_weights_or_machine_is_ignored(tmp_path: Path) -> None:
    f32 = _fake_export(tmp_path)
    _record(tmp_path, {"int8": True}, sha="other")
    assert pr.resolve(f32, "int8")[2] == "f32"
    _record(tmp_path, {"int8": True}, machine="another CPU")
    assert pr.resolve(f32, "auto")[2] == "f32"


def test_a_deleted_int8_model_is_not_used(tmp_path: Path) -> None:
    f32 = _fake_export(tmp_path)
    _record(tmp_path, {"int8": True})
    (tmp_path / "openvino-640-int8-k" / "model.xml").unlink()
    assert pr.resolve(f32, "int8")[2] == "f32"


# -- the whole run (NNCF on footage) ----------------------------------------------------------


def test_verdict_is_the_drop_against_the_tolerance() -> None:
    """Passed when neither mAP50 nor mAP50-95 drops more than ``tolerance`` points (a drop of
    exactly the tolerance passes); the reason gives both figures, both drops and the limit."""
    from detectors.retrain.precision_gate import verdict

    f32 = {"map50": 0.80, "map50_95": 0.60}
    v = verdict(f32, {"map50": 0.79, "map50_95": 0.595}, 1.0)
    assert (v["drop50"], v["drop50_95"], v["passed"]) == (1.0, 0.5, True)
    assert v["reason"] == (
        "mAP50 79.0 vs f32 80.0 (-1.00), mAP50-95 59.5 vs f32 60.0 (-0.50); limit 1 point(s)"
    )
    v = verdict(f32, {"map50": 0.80, "map50_95": 0.585}, 1.0)  # only mAP50-95 drops too far
    assert (v["drop50"], v["drop50_95"], v["passed"]) == (0.0, 1.5, False)
    v = verdict(f32, {"map50": 0.785, "map50_95": 0.61}, 1.0)  # only mAP50 drops too far
    assert (v["drop50"], v["drop50_95"], v["passed"]) == (1.5, -1.0, False)
    assert v["reason"].endswith("(+1.00); limit 1 point(s)")
    v = verdict(f32, {"map50": 0.785, "map50_95": 0.61}, 2.0)
    assert v["passed"] and v["reason"].endswith("limit 2 point(s)")


def _perfect_ap() -> float:
    """What the scoring gives predictions identical to their labels: ultralytics' 101-point
    interpolated AP tops out at 0.995, not 1 (its curve ends at recall 1 with precision 0)."""
    from detectors.retrain.evaluate import _scores

    one = [np.array([0])]
    m50, m5095, *_ = _scores([np.ones((1, 10), bool)], [np.array([0.9])], one, one, {0: "person"})
    assert round(m50, 4) == round(m5095, 4) == 0.995
    return round(m50, 4)


def _check_verdicts(rec: pr.GateRecord, tolerance: float, passed: bool) -> None:
    assert rec.tolerance == tolerance and set(rec.results) == {"bf16", "int8"}
    for name, r in rec.results.items():
        d50 = round(100 * (rec.f32["map50"] - r["map50"]), 2)
        d5095 = round(100 * (rec.f32["map50_95"] - r["map50_95"]), 2)
        assert (r["drop50"], r["drop50_95"]) == (d50, d5095), name
        assert r["passed"] is (d50 <= tolerance and d5095 <= tolerance) is passed, (name, r)
        assert r["reason"].endswith(f"({-d5095:+.2f}); limit {tolerance:g} point(s)"), r["reason"]
    assert rec.passed() == (["bf16", "int8"] if passed else [])


@pytest.mark.slow
def test_quantize_and_gate_on_footage(tmp_path: Path, monkeypatch) -> None:
    """Quantize at 320 on 32 footage frames, gate on 8 others labelled by f32 itself (so f32
    scores the perfect AP), then again with a tolerance no drop can meet. mAPs are in [0, 1], so
    a drop is within [-100, 100] points: at tolerance 100 every precision must pass and the
    detector runs the INT8 model; below -100 every one is refused and it runs f32, the INT8 model
    left on disk unused. The f32 export is untouched throughout."""
    monkeypatch.setenv("VIGIL_CACHE", str(tmp_path / "cache"))  # not the user's gate records
    from detectors.engine import Detector
    from detectors.retrain.precision_gate import run_gate

    weights = model_path("yolov5n.pt")
    clips = [Path(footage_path(name)) for name in sorted(set(CAMERA_FILES))]

    def gate(tolerance: float):
        return run_gate(
            weights,
            320,
            footage_files=clips,
            images=32,
            heldout_frames=8,
            tolerance=tolerance,
            accuracy_control=False,
        )

    def precision_used() -> str:
        det = Detector(
            DetectorConfig(
                weights=weights,
                device="cpu",
                backend="openvino",
                imgsz=320,
                tracker="none",
                precision="int8",
            )
        )
        assert len(det.detect([np.zeros((180, 320, 3), np.uint8)])) == 1
        return det.backend.precision

    result = gate(100.0)
    rec = result.record
    assert result.path.is_file() and pr.read_record(result.path) == rec
    boxes = re.fullmatch(
        r"8 footage frames labelled by the f32 model \((\d+) boxes, conf >= 0.25\)", rec.heldout
    )
    assert boxes and int(boxes[1]) > 0, rec.heldout
    # f32 scored on labels it produced itself: every label found, nothing above them
    assert rec.f32["map50"] == rec.f32["map50_95"] == _perfect_ap(), rec.f32
    _check_verdicts(rec, 100.0, passed=True)
    int8 = result.quantized
    assert int8 is not None and not int8.cached and (int8.folder / "model.xml").is_file()
    assert rec.int8_dir == str(int8.folder)
    f32_xml = next(int8.folder.parent.glob("openvino-320-fp32-b1/*/*.xml"))
    f32_bytes = f32_xml.read_bytes()
    assert f32_bytes  # the f32 export stays next to it
    assert precision_used() == "int8"

    refused = gate(-100.5)  # the same INT8 model (cached), now refused
    assert refused.path == result.path and refused.quantized.folder == int8.folder
    assert refused.quantized.cached and (int8.folder / "model.xml").is_file()
    assert refused.record.f32["map50"] == _perfect_ap()
    _check_verdicts(refused.record, -100.5, passed=False)
    assert precision_used() == "f32"
    assert f32_xml.read_bytes() == f32_bytes  # untouched


# -- the gate's figures in the model registry --------------------------------------------------


@pytest.mark.integration
def test_gate_figures_go_onto_the_registered_version(tmp_path: Path) -> None:
    """`vigil models quantize` keeps the gate next to the version's evaluation report; weights
    that are not registered, or a registry that is down, are said and change nothing."""
    import uuid

    from detectors.loading import file_sha256
    from detectors.retrain.model_registry import ModelRegistry, format_versions
    from pipeline.cli.models import _record_gate_in_registry
    from pipeline.config import parse_config

    weights = tmp_path / "w.pt"
    weights.write_bytes(b"weights " + uuid.uuid4().bytes)
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    cfg = parse_config(
        {
            "redis": {"url": REDIS_URL, "key_prefix": prefix},
            "models": {"store": str(tmp_path / "store")},
        }
    )
    reg = ModelRegistry(cfg.redis, cfg.models)
    try:
        mv = reg.register(weights, metrics={"map50": 0.91}, verify=False)
        gate = pr.GateRecord(
            weights_sha256=file_sha256(weights),
            imgsz=320,
            machine="cpu-x",
            tolerance=1.0,
            heldout="test split",
            f32={"map50": 0.9, "map50_95": 0.7, "ms_per_frame": 20.0},
            results={
                "int8": {"passed": False, "map50_95": 0.66, "reason": "mAP50-95 -4.0"},
                "bf16": {"passed": True, "map50_95": 0.70, "reason": "within 1.0"},
            },
        ).to_dict()
        assert _record_gate_in_registry(cfg, gate) == f"recorded on {mv.label}"
        stored = reg.require(mv.version)
        assert stored.metrics == {"map50": 0.91}  # the evaluation report is kept
        assert stored.precision["320@cpu-x"]["results"]["int8"]["map50_95"] == 0.66
        assert "int8@320 refused, bf16@320 passed" in format_versions(reg)

        other = {**gate, "weights_sha256": "0" * 64}
        assert "not a registered version" in _record_gate_in_registry(cfg, other)
    finally:
        for key in reg.client.scan_iter(f"{prefix}*"):
            reg.client.delete(key)
        reg.close()

    down = parse_config({"redis": {"url": "redis://127.0.0.1:1/0"}})
    said = _record_gate_in_registry(down, gate)
    assert said.startswith("not recorded (") and "127.0.0.1:1" in said
