"""Collection policies, dedup, quotas, dataset layout/validation/split/stats, COCO round trip.

Fast: no training and no teacher model (labels are written by hand or derived from footage).
"""

from __future__ import annotations

import json
import shutil
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import yaml

from detectors.retrain import dataset as ds
from detectors.retrain.config import CollectionPolicy
from detectors.retrain.sampling import Collector, Sampler, near_duplicate, phash, thumbnail
from pipeline.common.config import ConfigError
from pipeline.config import parse_config
from tests.support.assets import require
from tests.support.cli import run_detector_cli
from tests.support.datasets import CLASSROOM, HALL, frames, make_dataset


def det(conf: float, label: str = "person"):
    return SimpleNamespace(confidence=conf, label=label, class_id=0, box=(0.1, 0.1, 0.3, 0.5))


run_cli = run_detector_cli


# --------------------------------------------------------------------------------------------
# Sampling and writing


def test_perceptual_dedup_keeps_moving_people_and_drops_static_repeats():
    f = frames(HALL, 400, step=10)  # one frame a second
    a, b = f[0], f[0].copy()
    noisy = np.clip(a.astype(int) + np.random.default_rng(0).integers(-3, 4, a.shape), 0, 255)
    noisy = noisy.astype(np.uint8)
    assert near_duplicate(phash(a), thumbnail(a), phash(b), thumbnail(b), 6, 12)
    assert near_duplicate(phash(a), thumbnail(a), phash(noisy), thumbnail(noisy), 6, 12)
    # a person walks through the (otherwise static) office: global hash barely moves...
    far = [g for g in f[1:] if near_duplicate(phash(a), None, phash(g), None, 6, 12)]
    assert far, "expected frames whose perceptual hash alone calls them duplicates"
    # ...but the thumbnail check keeps frames where somebody moved
    moved = [
        g for g in far if not near_duplicate(phash(a), thumbnail(a), phash(g), thumbnail(g), 6, 12)
    ]
    assert moved


def test_sampler_policies():
    pol = CollectionPolicy(
        periodic_s=10,
        min_interval_s=1,
        uncertain={"low": 0.25, "high": 0.5},
        motion={"check_interval_s": 2, "threshold": 0.02},
    )
    s = Sampler(pol)
    img = frames(HALL, 1)[0]
    assert s.wants(0.0, []) and s.reasons(0.0, img, []) == ["periodic"]
    s.kept(0.0)
    assert not s.wants(0.5, [det(0.3)]), "min_interval_s blocks everything but alerts"
    assert s.reasons(1.5, img, [det(0.9)]) == []  # confident, not periodic yet
    assert s.reasons(2.0, img, [det(0.3)]) == ["uncertain"]
    s.kept(2.0)
    assert s.reasons(12.0, img, [det(0.7)]) == ["periodic"]
    s.kept(12.0)
    # motion without detection: frame differencing at check_interval_s
    moved = img.copy()
    cv2.rectangle(moved, (100, 100), (300, 400), (0, 0, 255), -1)
    assert s.reasons(14.0, img, []) == []  # first check: reference frame only
    assert s.reasons(16.5, moved, []) == ["motion"]
    assert s.reasons(19.0, moved, [det(0.9)]) == [], "detections present: not 'motion'"


def test_per_camera_policy_overrides():
    cfg = parse_config(
        {
            "collection": {
                "policy": {"periodic_s": 60},
                "cameras": {"gate": {"periodic_s": 5, "uncertain": {"enabled": False}}},
            }
        }
    )
    assert cfg.collection.policy_for("gate").periodic_s == 5
    assert not cfg.collection.policy_for("gate").uncertain.enabled
    assert cfg.collection.policy_for("lobby").periodic_s == 60
    with pytest.raises(ConfigError, match="camera 'gate'.*periodc_s"):
        parse_config({"collection": {"cameras": {"gate": {"periodc_s": 5}}}})
    with pytest.raises(ConfigError, match="high"):
        parse_config({"collection": {"policy": {"uncertain": {"low": 0.6, "high": 0.5}}}})


def test_collector_quota_and_disk_budget_drop_least_useful_oldest_first(tmp_path):
    pol = CollectionPolicy(max_images=4, dedup_distance=0)
    c = Collector(tmp_path, pol, disk_budget_mb=100)
    imgs = frames(HALL, 60, step=10)
    kept = []
    for i, img in enumerate(imgs[:5]):
        reasons = ["uncertain"] if i == 0 else ["periodic"]
        kept.append(c.offer("cam1", img, 1000.0 + i, reasons))
    assert c.count("cam1") == 4
    m = ds.Manifest.load(tmp_path)
    assert kept[0] in m.records, "the uncertain frame outranks periodic ones"
    assert kept[1] not in m.records, "the oldest periodic frame went first"
    assert not (tmp_path / kept[1]).exists()
    # disk budget across cameras: shrink it and add one more frame
    size = c.bytes_used / c.count()
    c.budget = int(size * 3.5)
    c.offer("cam2", imgs[5], 2000.0, ["alert"])
    assert c.bytes_used <= c.budget
    m = ds.Manifest.load(tmp_path)
    assert any(r["camera"] == "cam2" for r in m.records.values()), "the alert frame stays"
    c.close()
    # a new collector on the same folder knows what is there
    again = Collector(tmp_path, pol)
    assert again.count() == len(ds.Manifest.load(tmp_path).records)


def test_collector_skips_near_duplicates_and_merges_reasons(tmp_path):
    c = Collector(tmp_path, CollectionPolicy(dedup_distance=6))
    img = frames(HALL, 1)[0]
    first = c.offer("cam", img, 1.0, ["periodic"])
    assert first is not None
    assert c.offer("cam", img.copy(), 2.0, ["alert"]) is None
    assert c.stats.duplicates == 1
    rec = ds.Manifest.load(tmp_path).records[first]
    assert rec["reasons"] == ["periodic", "alert"]


def test_offline_collect_two_clips_without_detector(tmp_path, capsys):
    require(HALL, CLASSROOM)
    out = tmp_path / "ds"
    code, stdout, _ = run_cli(
        [
            "dataset", "collect", str(HALL), str(CLASSROOM), "-o", str(out), "--no-detect",
            "--periodic", "2", "--min-interval", "1", "--analyze-fps", "2",
        ],
        capsys,
    )  # fmt: skip
    assert code == 0, stdout
    m = ds.Manifest.load(out)
    cams = {r["camera"] for r in m.records.values()}
    assert cams == {"one-by-one-person-detection", "classroom"}
    rec = next(iter(m.records.values()))
    assert {"camera", "capture_ts", "reasons", "label_source", "phash"} <= rec.keys()
    assert (out / rec["image"]).is_file()
    hall = sorted(r["capture_ts"] for r in m.records.values() if r["camera"].startswith("one"))
    assert min(b - a for a, b in zip(hall, hall[1:], strict=False)) >= 1.0 - 1e-6
    assert "kept in" in stdout


# --------------------------------------------------------------------------------------------
# A small labelled dataset built by hand


def test_split_by_time_keeps_near_identical_frames_apart(tmp_path):
    make_dataset(tmp_path)
    # a near-identical copy of a frame, 0.5 s later: must not land on the other side of the split
    r = ds.split(tmp_path, val=0.25, test=0.0, segment_s=10, gap_s=2, seed=1)
    assert r.counts["train"] and r.counts["val"]
    data = yaml.safe_load((tmp_path / "data.yaml").read_text())
    assert data["train"] == "train.txt" and data["val"] == "val.txt"
    m = ds.Manifest.load(tmp_path).records
    train = [m[i] for i in ds.split_images(tmp_path, "train")]
    val = [m[i] for i in ds.split_images(tmp_path, "val")]
    for v in val:
        same_cam = [t for t in train if t["camera"] == v["camera"]]
        assert all(abs(t["capture_ts"] - v["capture_ts"]) >= 2 for t in same_cam)
    # the lists use paths ultralytics resolves relative to the list file
    assert all(
        line.startswith("./images/") for line in (tmp_path / "train.txt").read_text().split()
    )


def test_split_excludes_held_out_near_duplicates_of_training_frames(tmp_path):
    from detectors.retrain.sampling import decode_thumb

    make_dataset(tmp_path)
    m = ds.Manifest.load(tmp_path).records
    # no time guard band: only the perceptual check stands between the splits here
    r = ds.split(tmp_path, val=0.3, segment_s=6, gap_s=0, dedup_distance=6, seed=0)
    assert sum(r.counts.values()) + r.excluded == len(m)
    assert r.per_camera["room"]["excluded"] > 0, "the seated classroom barely changes"

    def key(rec):
        return int(rec["phash"], 16), decode_thumb(rec["thumb"])

    train = [m[i] for i in ds.split_images(tmp_path, "train")]
    for v in (m[i] for i in ds.split_images(tmp_path, "val")):
        for t in (t for t in train if t["camera"] == v["camera"]):
            assert not near_duplicate(*key(v), *key(t), 6, 12), (v["image"], t["image"])


def test_split_by_camera(tmp_path):
    make_dataset(tmp_path)
    r = ds.split(tmp_path, by="camera", holdout_cameras=["room"], val=0.2)
    assert r.per_camera["room"]["train"] == 0 and r.per_camera["room"]["val"] == 24
    assert r.per_camera["hall"]["val"] == 0 and r.per_camera["hall"]["train"] == 24


def test_bad_inputs_are_reported_with_file_and_line(tmp_path):
    make_dataset(tmp_path, n_per_cam=6)
    ds.split(tmp_path, val=0.3, segment_s=4, gap_s=0, dedup_distance=0)
    recs = sorted(ds.Manifest.load(tmp_path).records)
    corrupt, wrong_cls, malformed = recs[0], recs[1], recs[2]
    data = (tmp_path / corrupt).read_bytes()
    (tmp_path / corrupt).write_bytes(data[: len(data) // 2])  # truncated JPEG
    ds.label_path(tmp_path, wrong_cls).write_text("0 0.5 0.5 0.1 0.1\n3 0.5 0.5 0.2 0.2\n")
    ds.label_path(tmp_path, malformed).write_text("0 0.5 0.5 0.1\n")
    report = ds.validate(tmp_path)
    text = [str(p) for p in report.problems]
    assert any(corrupt in t and "truncated JPEG" in t for t in text), text
    wrong_label = ds.label_path(tmp_path, wrong_cls).relative_to(tmp_path).as_posix()
    assert f"{wrong_label}:2: class id 3 out of range (data.yaml has 1 classes)" in text
    bad_label = ds.label_path(tmp_path, malformed).relative_to(tmp_path).as_posix()
    assert f"{bad_label}:1: expected 5 values 'class cx cy w h', got 4" in text
    assert not {corrupt, wrong_cls, malformed} & set(report.good)
    assert len(report.good) == len(recs) - 3
    # training input leaves them out and says so
    from detectors.retrain.train import prepare_data

    _, info, problems = prepare_data(tmp_path, tmp_path / "prepared")
    assert len(problems) == 3
    assert sum(info["counts"].values()) == len(recs) - 3
    s = ds.stats(tmp_path)
    assert any("out of range" in p for p in s["problems"])


def test_empty_dataset_and_missing_data_yaml_are_clear_errors(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    ds.write_data_yaml(tmp_path / "empty", {0: "person"})
    with pytest.raises(ds.DatasetError, match="has no images"):
        ds.split(tmp_path / "empty")
    code, _, err = run_cli(
        ["retrain", "--data", str(tmp_path / "empty"), "--no-registry", "--epochs", "1",
         "--project", str(tmp_path / "runs")],
        capsys,
    )  # fmt: skip
    assert code == 2 and "has no images" in err, err
    make_dataset(tmp_path / "nolabels", n_per_cam=3)
    (tmp_path / "nolabels" / "data.yaml").unlink()
    code, _, err = run_cli(["dataset", "split", str(tmp_path / "nolabels")], capsys)
    assert code == 2 and "data.yaml not found" in err and "vigil dataset label" in err
    code, _, err = run_cli(["evaluate", "x.pt", "--data", str(tmp_path / "nolabels")], capsys)
    assert code == 2 and "data.yaml not found" in err
    code, _, err = run_cli(["dataset", "stats", str(tmp_path / "missing")], capsys)
    assert code == 2 and "not found" in err


def test_stats_and_cli(tmp_path, capsys):
    make_dataset(tmp_path, n_per_cam=8)
    ds.split(tmp_path, val=0.25, segment_s=4, gap_s=0, dedup_distance=0)
    s = ds.stats(tmp_path)
    assert s["images"] == 16 and s["boxes_per_class"] == {"person": 16}
    assert s["cameras"]["hall"]["images"] == 8
    assert s["label_sources"] == {"human": 16}
    code, out, _ = run_cli(["dataset", "stats", str(tmp_path)], capsys)
    assert code == 0 and "16 image(s)" in out and "hall" in out
    code, out, _ = run_cli(["dataset", "stats", str(tmp_path), "--json"], capsys)
    assert json.loads(out)["images"] == 16


def test_coco_round_trip_brings_corrected_labels_back(tmp_path, capsys):
    make_dataset(tmp_path, n_per_cam=4)
    out = tmp_path / "coco.json"
    code, stdout, _ = run_cli(["dataset", "export-coco", str(tmp_path), "-o", str(out)], capsys)
    assert code == 0 and "8 image(s), 8 annotation(s)" in stdout
    coco = json.loads(out.read_text())
    assert coco["categories"] == [{"id": 1, "name": "person", "supercategory": "object"}]
    img = coco["images"][0]
    ann = next(a for a in coco["annotations"] if a["image_id"] == img["id"])
    w, h = img["width"], img["height"]
    assert ann["bbox"] == pytest.approx([0.4 * w, 0.3 * h, 0.2 * w, 0.4 * h], abs=0.02)
    # a person corrects the box, adds one, and one annotation has an unknown category
    ann["bbox"] = [10, 20, 100, 50]
    coco["annotations"].append(
        {"id": 999, "image_id": img["id"], "category_id": 1, "bbox": [0, 0, 30, 30]}
    )
    coco["categories"].append({"id": 7, "name": "forklift"})
    coco["annotations"].append(
        {"id": 1000, "image_id": img["id"], "category_id": 7, "bbox": [5, 5, 10, 10]}
    )
    coco["images"].append({"id": 4242, "file_name": "nope/missing.jpg", "width": 1, "height": 1})
    out.write_text(json.dumps(coco))
    code, stdout, err = run_cli(["dataset", "import-coco", str(tmp_path), str(out)], capsys)
    assert code == 0
    assert "forklift" in err and "missing.jpg" in err
    rel = "images/" + img["file_name"]
    boxes, problems = ds.read_labels(ds.label_path(tmp_path, rel), 1)
    assert not problems and len(boxes) == 2
    assert boxes[0].xyxy() == pytest.approx((10 / w, 20 / h, 110 / w, 70 / h), abs=1e-5)
    assert ds.Manifest.load(tmp_path).records[rel]["label_source"] == "human"


def test_manifest_survives_malformed_lines(tmp_path):
    make_dataset(tmp_path, n_per_cam=2)
    with open(tmp_path / ds.MANIFEST, "a") as f:
        f.write("{not json\n")
    m = ds.Manifest.load(tmp_path)
    assert len(m.records) == 4
    assert m.problems and m.problems[0].line is not None and "malformed" in str(m.problems[0])


def test_images_without_manifest_are_discovered(tmp_path):
    make_dataset(tmp_path, n_per_cam=2)
    (tmp_path / ds.MANIFEST).unlink()
    extra = tmp_path / "images" / "yard"
    extra.mkdir()
    shutil.copy(next((tmp_path / "images" / "hall").iterdir()), extra / "x.jpg")
    d = ds.Dataset.open(tmp_path)
    assert len(d.manifest.records) == 5
    assert d.manifest.records["images/yard/x.jpg"]["camera"] == "yard"


def test_manifest_writers_sharing_a_folder_lose_nothing(tmp_path):
    """A live collector appending while an offline tool relabels and compacts the manifest."""
    make_dataset(tmp_path, n_per_cam=2)
    tool = ds.Dataset.open(tmp_path)  # e.g. `vigil dataset label` starts
    live = Collector(tmp_path, CollectionPolicy(dedup_distance=0))
    new = live.offer("yard", frames(HALL, 1)[0], 5.0, ["periodic"])  # written meanwhile
    first = next(iter(tool.manifest.records))
    tool.manifest.update(first, label_source="teacher:x@1")
    tool.save()  # compaction must keep the collector's new line
    m = ds.Manifest.load(tmp_path)
    assert new in m.records and m.records[first]["label_source"] == "teacher:x@1"
    assert len(m.records) == 5
    assert len((tmp_path / ds.MANIFEST).read_text().splitlines()) == 5
