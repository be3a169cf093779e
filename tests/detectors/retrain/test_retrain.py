"""The retraining loop on real footage: collect -> pseudo-label -> split -> fine-tune -> evaluate ->
promote / refuse -> rollback, plus bad inputs and the collector's cost.

CPU-sized: frames analysed at imgsz 320, student and scratch trained 3 epochs at imgsz 320 on
~130 frames. The registry tests use the local Redis (unique key prefix per module).
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
import yaml

from detectors.config import DetectorConfig
from detectors.retrain import dataset as ds
from detectors.retrain.config import CollectionPolicy
from pipeline.common.assets import footage, model
from tests.support.assets import require
from tests.support.cli import model_test_env, run_detector_cli
from tests.support.config import REDIS_URL

YOLOV5N = model("yolov5n.pt")
HALL = footage("one-by-one-person-detection.mp4")
CLASSROOM = footage("classroom.mp4")
EPOCHS = 3
IMGSZ = 320


@pytest.fixture(scope="module", autouse=True)
def _env(tmp_path_factory):
    require(YOLOV5N, HALL, CLASSROOM)  # fails the module, it does not skip it
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


def _registry_config_file(tmp) -> Path:
    """A Vigil config whose registry keys and model store belong to its caller only."""
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


@pytest.fixture(scope="module")
def registry_config(tmp_path_factory):
    """A Vigil config whose registry keys and model store belong to this module only."""
    return _registry_config_file(tmp_path_factory.mktemp("registry"))


def _registry(config_path):
    from detectors.retrain.model_registry import ModelRegistry
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


@pytest.fixture
def better_in_production(trained, tmp_path):
    """A registry of this test's own, set up as ``vigil retrain`` leaves it after a promotion:
    the scratch baseline promoted first, then a better model promoted over it. The better model
    is the yolov5n teacher that labelled the dataset (its AP on these labels is the best there
    is), so this test needs no other test's outcome and no training of its own beyond the
    scratch baseline of ``trained``."""
    config = _registry_config_file(tmp_path)
    cfg, reg = _registry(config)
    scratch = reg.register(trained["scratch"].weights)
    assert scratch.version == trained["scratch_version"]
    reg.promote(scratch.version, reason="baseline")
    better = reg.register(YOLOV5N)
    reg.promote(better.version, reason="better than the baseline")
    assert reg.production_version() == better.version != scratch.version
    yield {"config": config, "cfg": cfg, "registry": reg, "better": better.version}
    keys = list(reg.client.scan_iter(match=f"{cfg.redis.key_prefix}*"))
    if keys:
        reg.client.delete(*keys)


@pytest.mark.slow
@pytest.mark.integration
def test_worse_model_refused_then_rollback(trained, dataset_dir, better_in_production, capsys):
    from detectors.retrain.evaluate import propose

    reg = better_in_production["registry"]
    registry_config = better_in_production["config"]
    better = reg.production_version()
    assert better == better_in_production["better"]
    cfg = better_in_production["cfg"]
    prop = propose(
        trained["scratch"].weights, dataset_dir, registry=reg, cfg=cfg.models.promotion,
        imgsz=IMGSZ,
    )  # fmt: skip
    assert prop.decision.promote is False
    assert any("not better" in r for r in prop.decision.reasons)
    assert any(r.startswith("person:") and "worse" in r for r in prop.decision.reasons)
    assert reg.production_version() == better, "a worse model must not be promoted"
    recorded = reg.decisions(1)[0]
    assert recorded["promoted"] is False and recorded["production"] > recorded["candidate"]
    # rollback restores the model that was production before the better one
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

    from tests.support.datasets import make_dataset

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
    from tests.support.datasets import make_dataset

    make_dataset(tmp_path, n_per_cam=3)  # hand labels, label_source "human"
    before = {p: p.read_text() for p in (tmp_path / "labels").rglob("*.txt")}
    report = ds.label(tmp_path, str(YOLOV5N), imgsz=IMGSZ, overwrite=True)
    assert report.skipped_human == 6 and report.labeled == 0
    assert {p: p.read_text() for p in (tmp_path / "labels").rglob("*.txt")} == before


@pytest.mark.slow
def test_collector_overhead_on_detection_fps(tmp_path, teacher_320):
    """Target < 5 % (BENCHMARKS.md), with measure_overhead's aggressive policy. What is compared
    is CPU per frame, both measured in the same run, rounds interleaved, medians: the collector's
    own (its thread's CPU clock plus the hook calls on the detection thread) against the
    detection loop's without a collector. Thread clocks count neither other processes on a busy
    host nor other threads of this one; wall-clock fps and process CPU ratios (the figures of
    BENCHMARKS.md, printed here) swing by +-20 % on a shared 2-core host."""
    import cv2

    from detectors.retrain.collector import CollectionHook, measure_overhead
    from detectors.retrain.sampling import Collector
    from pipeline.common.contracts import Frame

    class MeteredHook(CollectionHook):
        """The live hook, with the CPU time of its collector thread."""

        cpu_s = 0.0

        def _run(self) -> None:
            t0 = time.thread_time()
            try:
                super()._run()
            finally:
                self.cpu_s = time.thread_time() - t0

    cap = cv2.VideoCapture(str(HALL))
    imgs = []
    while len(imgs) < 96:
        ok, img = cap.read()
        if not ok:
            break
        imgs.append(img)
    cap.release()
    assert len(imgs) == 96
    policy = CollectionPolicy(  # the one measure_overhead uses
        periodic_s=1.0, min_interval_s=0.5, dedup_distance=0, max_images=10_000
    )
    batch = teacher_320.config.max_batch
    teacher_320.detect(imgs[:batch])  # warm
    detect_ms, collect_ms, saved = [], [], 0
    clock = 1_000_000.0
    for r in range(4):
        cpu0 = time.process_time()  # the detection loop alone, every thread of the process
        for start in range(0, len(imgs), batch):
            teacher_320.detect(imgs[start : start + batch])
        detect_ms.append(1000 * (time.process_time() - cpu0) / len(imgs))

        hook = MeteredHook(Collector(tmp_path / f"round{r}", policy, source="test")).start()
        calls = 0.0
        for start in range(0, len(imgs), batch):
            chunk = imgs[start : start + batch]
            for img, dets in zip(chunk, teacher_320.detect(chunk), strict=True):
                clock += 0.1  # a 10 fps timeline, as in measure_overhead
                t0 = time.thread_time()
                hook(Frame("bench", round(clock * 10), 0, clock, img), dets)
                calls += time.thread_time() - t0
        hook.drain()
        hook.close()
        saved += hook.saved
        collect_ms.append(1000 * (hook.cpu_s + calls) / len(imgs))
    share = float(np.median(collect_ms) / np.median(detect_ms))
    print(
        f"\ncollector CPU {np.median(collect_ms):.3f} ms/frame vs detection "
        f"{np.median(detect_ms):.2f} ms/frame: {100 * share:.1f} % ({saved} frames saved, "
        f"rounds {[round(x, 3) for x in collect_ms]} / {[round(x, 2) for x in detect_ms]})"
    )
    assert saved >= 4 * 8, "the policy keeps a frame per simulated second: ~10 a round"
    assert 0 < share < 0.05, (collect_ms, detect_ms)

    # measure_overhead (the benchmark's figure) runs and reports consistently; its ratios are
    # figures for BENCHMARKS.md, not assertions
    r = measure_overhead(HALL, teacher_320, tmp_path / "bench", frames=16, rounds=2)
    print(f"measure_overhead: {r}")
    assert r["saved"] > 0 and r["frames"] == 16 and r["rounds"] == 2 and len(r["ratios"]) == 2
    assert r["fps_without"] > 0 and r["fps_with"] > 0 and r["cpu_ratio"] > 0
