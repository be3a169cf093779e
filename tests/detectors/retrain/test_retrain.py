"""The retraining loop on real footage: collect -> pseudo-label -> split -> fine-tune -> evaluate ->
promote / refuse -> rollback, plus bad inputs and the collector's cost.

CPU-sized: frames analysed at imgsz 320, student and scratch trained 5 epochs at imgsz 320 on
~130 frames. The registry tests use the local Redis (unique key prefix per module).
"""

from __future__ import annotations

import json
import uuid

import pytest
import yaml

from detectors.config import DetectorConfig
from detectors.retrain import dataset as ds
from detectors.retrain.config import CollectionPolicy
from pipeline.common.assets import footage, model
from tests.conftest import REDIS_URL, model_test_env, run_detector_cli

YOLOV5N = model("yolov5n.pt")
HALL = footage("one-by-one-person-detection.mp4")
CLASSROOM = footage("classroom.mp4")
pytestmark = pytest.mark.skipif(
    not (YOLOV5N.is_file() and HALL.is_file()), reason="assets missing (set VIGIL_ASSETS)"
)
EPOCHS = 5
IMGSZ = 320


@pytest.fixture(scope="module", autouse=True)
def _env(tmp_path_factory):
    with model_test_env(tmp_path_factory.mktemp("vigil-cache"), YOLO_OFFLINE="1"):
        yield


run_cli = run_detector_cli


@pytest.fixture(scope="module")
def teacher_320():
    from detectors.engine import Detector

    return Detector(DetectorConfig(weights=str(YOLOV5N), imgsz=IMGSZ, tracker="none"))


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory, teacher_320):
    """Two clips collected with the live policies, labelled by the yolov5n teacher, split."""
    from detectors.retrain.collector import collect_videos

    root = tmp_path_factory.mktemp("collected")
    policy = CollectionPolicy(periodic_s=0.4, min_interval_s=0.2, dedup_distance=6)
    collector, reports = collect_videos(
        [HALL, CLASSROOM], root, policy, detector=teacher_320, analyze_fps=5
    )
    assert {r.camera for r in reports} == {"one-by-one-person-detection", "classroom"}
    assert collector.stats.duplicates > 0, "the static office repeats itself"
    assert {"periodic", "uncertain"} <= set(collector.stats.by_reason)
    report = ds.label(root, str(YOLOV5N), classes=["person"], conf=0.4, imgsz=640)
    assert report.labeled == collector.count() and report.boxes > 100
    split = ds.split(root, val=0.2, segment_s=10, seed=0)
    assert split.counts["train"] >= 100 and split.counts["val"] >= 25
    return root


@pytest.fixture(scope="module")
def registry_config(tmp_path_factory):
    """A Vigil config whose registry keys and model store belong to this module only."""
    tmp = tmp_path_factory.mktemp("registry")
    path = tmp / "vigil.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "redis": {"url": REDIS_URL, "key_prefix": f"t{uuid.uuid4().hex[:8]}:"},
                "detector": {"imgsz": IMGSZ},
                "models": {"store": str(tmp / "store"), "promotion": {"margin": 0.02}},
            }
        )
    )
    return path


def _registry(config_path):
    from detectors.retrain.registry import ModelRegistry
    from pipeline.config import load_config

    cfg = load_config(config_path)
    return cfg, ModelRegistry(cfg.redis, cfg.models)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, dataset_dir, registry_config):
    """Scratch baseline (API) promoted to production, then `vigil retrain` of the student."""
    from detectors.retrain.train import TrainOptions, train

    runs = tmp_path_factory.mktemp("runs")
    scratch = train(
        dataset_dir,
        "yolov5nu.yaml",
        TrainOptions(epochs=EPOCHS, imgsz=IMGSZ, batch=16, freeze="none"),
        project=runs,
        name="scratch",
    )
    cfg, reg = _registry(registry_config)
    scratch_mv = reg.register(scratch.weights)
    reg.promote(scratch_mv.version, reason="baseline")
    argv = [
        "retrain", "--data", str(dataset_dir), "--base", str(YOLOV5N), "-c", str(registry_config),
        "--head-epochs", "1", "--epochs", str(EPOCHS - 1), "--imgsz", str(IMGSZ),
        "--project", str(runs), "--name", "student",
    ]  # fmt: skip
    return {
        "scratch": scratch,
        "scratch_version": scratch_mv.version,
        "argv": argv,
        "runs": runs,
        "registry": reg,
    }


@pytest.mark.slow
@pytest.mark.integration
def test_student_beats_scratch_and_is_promoted(trained, capsys):
    code, out, err = run_cli(trained["argv"], capsys)
    assert code == 0, err
    run = trained["runs"] / "student"
    decision = json.loads((run / "decision.json").read_text())
    metrics = json.loads((run / "metrics.json").read_text())
    train_info = json.loads((run / "train.json").read_text())
    student = metrics["candidate"]["per_class"]["person"]["ap50"]
    scratch = metrics["production"]["per_class"]["person"]["ap50"]
    print(
        f"\nstudent person AP50 {student:.3f} vs scratch {scratch:.3f} "
        f"({EPOCHS} epochs at {IMGSZ}); student {train_info['seconds_per_epoch']:.2f} s/epoch, "
        f"scratch {trained['scratch'].seconds_per_epoch:.2f} s/epoch; "
        f"{metrics['candidate']['images']} held-out images"
    )
    assert student > 0.5
    assert student > scratch
    assert (
        decision["promoted"] is True
        and decision["production_version"] == trained["scratch_version"]
    )
    assert "PROMOTED" in out
    reg = trained["registry"]
    assert reg.production_version() == decision["candidate_version"]
    mv = reg.get(decision["candidate_version"])
    assert mv.metrics["map50"] == pytest.approx(metrics["candidate"]["map50"])
    assert mv.profile["frames"] > 0 and mv.card_uri
    # the run directory has what an operator looks for
    for name in ("MODEL_CARD.md", "results.png", "train.json", "model.pt"):
        assert (run / name).is_file(), name
    card = (run / "MODEL_CARD.md").read_text()
    assert "yolov5-transfer" in card and "mAP50" in card and "promote" in card
    assert train_info["phases"][0]["phase"] == "head" and train_info["phases"][0]["freeze"] == 24


@pytest.mark.slow
@pytest.mark.integration
def test_worse_model_refused_then_rollback(trained, dataset_dir, registry_config, capsys):
    from detectors.retrain.evaluate import propose

    reg = trained["registry"]
    if reg.production_version() == trained["scratch_version"]:
        pytest.skip("needs the promoted student of test_student_beats_scratch_and_is_promoted")
    student = reg.production_version()
    cfg, _ = _registry(registry_config)
    prop = propose(
        trained["scratch"].weights, dataset_dir, registry=reg, cfg=cfg.models.promotion,
        imgsz=IMGSZ,
    )  # fmt: skip
    assert prop.decision.promote is False
    assert any("not better" in r for r in prop.decision.reasons)
    assert any(r.startswith("person:") and "worse" in r for r in prop.decision.reasons)
    assert reg.production_version() == student, "a worse model must not be promoted"
    recorded = reg.decisions(1)[0]
    assert recorded["promoted"] is False and recorded["production"] > recorded["candidate"]
    # rollback restores the model that was production before the student
    code, out, err = run_cli(["models", "rollback", "-c", str(registry_config)], capsys)
    assert code == 0, err
    assert reg.production_version() == trained["scratch_version"]
    code, out, _ = run_cli(["models", "list", "-c", str(registry_config)], capsys)
    assert code == 0
    line = next(x for x in out.splitlines() if trained["scratch_version"] in x)
    assert line.startswith("*")
    kinds = [h["kind"] for h in reg.history()]
    assert kinds[:3] == ["rollback", "promote", "promote"]


@pytest.mark.integration
def test_weights_of_the_wrong_task_are_refused(tmp_path, capsys, registry_config):
    from ultralytics import YOLO

    from tests.detectors.retrain.test_dataset import make_dataset

    make_dataset(tmp_path / "ds", n_per_cam=4)
    ds.split(tmp_path / "ds", val=0.25, segment_s=4, gap_s=0, dedup_distance=0)
    cls = tmp_path / "classifier.pt"
    YOLO("yolov8n-cls.yaml").save(str(cls))  # built from yaml: nothing downloaded
    code, _, err = run_cli(["evaluate", str(cls), "--data", str(tmp_path / "ds")], capsys)
    assert code == 2 and "classify model, not a detection model" in err, err
    code, _, err = run_cli(
        ["retrain", "--data", str(tmp_path / "ds"), "--base", str(cls), "--no-registry",
         "--epochs", "1", "--project", str(tmp_path / "runs")],
        capsys,
    )  # fmt: skip
    assert code == 2 and "classify model" in err, err
    code, _, err = run_cli(["models", "promote", str(cls), "-c", str(registry_config)], capsys)
    assert code == 2 and "classify model" in err, err
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a model at all")
    code, _, err = run_cli(["models", "promote", str(junk), "-c", str(registry_config)], capsys)
    assert code == 2 and "junk.pt" in err, err


def test_teacher_never_overwrites_human_labels(tmp_path):
    from tests.detectors.retrain.test_dataset import make_dataset

    make_dataset(tmp_path, n_per_cam=3)  # hand labels, label_source "human"
    before = {p: p.read_text() for p in (tmp_path / "labels").rglob("*.txt")}
    report = ds.label(tmp_path, str(YOLOV5N), imgsz=IMGSZ, overwrite=True)
    assert report.skipped_human == 6 and report.labeled == 0
    assert {p: p.read_text() for p in (tmp_path / "labels").rglob("*.txt")} == before


@pytest.mark.slow
def test_collector_overhead_on_detection_fps(tmp_path, teacher_320):
    from detectors.retrain.collector import measure_overhead

    r = measure_overhead(HALL, teacher_320, tmp_path, frames=96, rounds=4)
    print(f"\ncollector overhead: {r}")
    assert r["saved"] > 0
    # Target: < 5 % (ratio > 0.95), see BENCHMARKS.md. Wall-clock fps on a shared 2-core host
    # swings by +-20 % between adjacent runs, so the check uses CPU time (the collector's thread
    # included) with a margin for noise.
    assert r["cpu_ratio"] > 0.9, r
