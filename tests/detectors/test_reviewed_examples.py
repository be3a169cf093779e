"""Reviewed examples (issue 15): an operator's verdict on an alert turns its frame into a training
example (a false positive a hard negative, a true positive a confirmed label); stats count them,
the split treats them like every other frame, and the promotion gate scores on them once the
held-out split has enough (``models.promotion.min_reviewed_labels``).

Fast: no Kafka, Redis or model. Images are small synthetic JPEGs; the teacher and the models under
evaluation are stand-ins that answer from a table (the real ones are exercised by
tests/detectors/retrain/test_retrain.py).
"""

from __future__ import annotations

import json
import sys
import types
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from detectors.retrain import dataset as ds
from detectors.retrain.config import CollectionPolicy, PromotionConfig
from detectors.retrain.evaluate import Evaluation, decide, evaluate
from detectors.retrain.sampling import Collector

T0 = 1_700_000_000.0
A = [0.10, 0.10, 0.30, 0.50]  # the alert's person
B = [0.60, 0.20, 0.75, 0.60]  # another person
C = [0.40, 0.55, 0.90, 0.95]  # a car


def jpeg(grey: int = 128, seed: int | None = None, size: tuple[int, int] = (96, 64)) -> bytes:
    """A small JPEG: flat ``grey``, or noise when ``seed`` is given (frames that differ)."""
    w, h = size
    if seed is None:
        img = np.full((h, w, 3), grey, np.uint8)
    else:
        img = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert ok
    return buf.tobytes()


def det(label: str, box: list[float], conf: float = 0.8, track: int | None = 1) -> dict:
    return {"label": label, "confidence": conf, "box": box, "track_id": track}


FRAME = [
    det("person", A, 0.91, 7),
    # overlaps the alert box a little (IoU < 0.5): not the alert's person
    det("person", [0.20, 0.10, 0.40, 0.50], 0.55, 8),
    det("person", B, 0.83, 9),
    det("car", C, 0.77, 10),
    det("dog", [0.0, 0.7, 0.1, 0.9], 0.6, 11),  # not a dataset class
]


def review(root, verdict: str, alert_id: str = "a1", **kw) -> dict:
    args = {
        "image_jpeg": jpeg(),
        "detections": FRAME,
        "alert_box": [0.11, 0.11, 0.31, 0.49],  # the tracker's box at the start: close to A
        "alert_label": "person",
        "verdict": verdict,
        "camera_id": "gate",
        "capture_ts": T0,
        "alert_id": alert_id,
        "reviewer": "alice",
        "note": "a coat on a chair",
    }
    args.update(kw)
    return ds.add_reviewed_example(root, **args)


def labels(root, rec) -> list[tuple[int, tuple[float, ...]]]:
    boxes, problems = ds.read_labels(ds.label_path(root, rec["image"]), 10)
    assert not problems
    return [(b.cls, tuple(round(v, 4) for v in b.xyxy())) for b in boxes]


def xyxy(box: list[float]) -> tuple[float, ...]:
    return tuple(round(v, 4) for v in box)


@pytest.fixture
def root(tmp_path):
    r = tmp_path / "data"
    r.mkdir()
    ds.write_data_yaml(r, {0: "person", 1: "car"})
    return r


# -- the example itself --------------------------------------------------------------------------


def test_false_positive_removes_the_alert_box_and_keeps_the_others(root):
    rec = review(root, "false_positive")
    assert (root / rec["image"]).is_file() and not rec["image"].startswith("/")
    assert rec["image"] == ds.review_image("gate", "a1")
    got = labels(root, rec)
    assert got == [
        (0, xyxy([0.20, 0.10, 0.40, 0.50])),  # the neighbour stays: only the alert's box goes
        (0, xyxy(B)),
        (1, xyxy(C)),
    ]
    assert (0, xyxy(A)) not in got
    r = rec["review"]
    assert r["verdict"] == "false_positive" and r["alert_id"] == "a1"
    assert r["reviewer"] == "alice" and r["note"] == "a coat on a chair"
    assert r["boxes_reviewed"] == 1
    assert r["skipped_unknown"] == 1 and r["unknown_classes"] == {"dog": 1}
    removed = [b for b in r["boxes"] if b["status"] == "removed"]
    assert [b["track_id"] for b in removed] == [7]
    assert rec["source"] == "review" and rec["reasons"] == ["review"]
    assert rec["label_source"] == ds.HUMAN
    assert rec["camera"] == "gate" and rec["capture_ts"] == T0
    assert (rec["width"], rec["height"]) == (96, 64)
    # what was returned is what the manifest holds
    m = ds.Manifest.load(root).records
    assert m[rec["image"]]["review"] == r and m[rec["image"]]["split"] is None


def test_false_positive_matches_same_label_and_enough_iou_only(root):
    # the car sits exactly on the alert box but is not a person; the person is too far off
    dets = [det("car", A), det("person", [0.20, 0.10, 0.40, 0.50])]
    rec = review(root, "false_positive", detections=dets, alert_box=A)
    assert labels(root, rec) == [(1, xyxy(A)), (0, xyxy([0.20, 0.10, 0.40, 0.50]))]
    assert rec["review"]["boxes_reviewed"] == 0
    # a looser match threshold finds the person (IoU 1/3)
    rec = review(root, "false_positive", detections=dets, alert_box=A, iou_match=0.3)
    assert labels(root, rec) == [(1, xyxy(A))]


def test_true_positive_keeps_every_box_and_confirms_the_alert_box(root):
    rec = review(root, "true_positive")
    assert labels(root, rec) == [
        (0, xyxy(A)),
        (0, xyxy([0.20, 0.10, 0.40, 0.50])),
        (0, xyxy(B)),
        (1, xyxy(C)),
    ]
    confirmed = [b for b in rec["review"]["boxes"] if b["status"] == "confirmed"]
    assert [(b["track_id"], b["box"]) for b in confirmed] == [(7, A)]
    assert rec["review"]["boxes_reviewed"] == 1
    # no detection matches the alert box: the confirmed box is added as the person saw it
    rec = review(root, "true_positive", alert_id="a2", detections=[det("car", C)], alert_box=B)
    assert labels(root, rec) == [(1, xyxy(C)), (0, xyxy(B))]


def test_a_second_review_of_the_alert_replaces_the_first(root):
    first = review(root, "false_positive", note="first look")
    second = review(root, "true_positive", note="second look")
    assert first["image"] == second["image"]
    images = [p for p in (root / "images").rglob("*") if p.is_file()]
    assert len(images) == 1
    m = ds.Manifest.load(root).records
    assert len(m) == 1 and m[second["image"]]["review"]["verdict"] == "true_positive"
    assert m[second["image"]]["review"]["note"] == "second look"
    assert (0, xyxy(A)) in labels(root, second), "the true positive brings the box back"
    # the camera id changed between reviews: still one example, under the new camera
    third = review(root, "false_positive", camera_id="gate-2")
    m = ds.Manifest.load(root).records
    assert list(m) == [third["image"]] and "gate-2" in third["image"]
    assert not (root / first["image"]).exists()
    assert not ds.label_path(root, first["image"]).exists()


def test_a_review_replaces_the_collectors_copy_of_the_alert_frame(root):
    c = Collector(root, CollectionPolicy(dedup_distance=0))
    img = cv2.imdecode(np.frombuffer(jpeg(seed=1), np.uint8), cv2.IMREAD_COLOR)
    kept = c.offer("gate", img, T0, ["alert"], meta={"alert": {"id": "a1", "rule_id": "r"}})
    other = c.offer("gate", img[::-1].copy(), T0 + 60, ["periodic"])
    c.close()
    phash = ds.Manifest.load(root).records[kept]["phash"]
    (root / "val.txt").write_text(f"./{kept}\n")
    (root / "train.txt").write_text(f"./{other}\n")
    m = ds.Manifest.load(root)
    m.update(kept, split="val")
    m.update(other, split="train")
    m.save()
    rec = review(root, "false_positive", image_jpeg=jpeg(seed=1))
    m = ds.Manifest.load(root).records
    assert set(m) == {rec["image"], other}, "one frame, one example"
    assert not (root / kept).exists()
    assert rec["phash"] == phash and rec["alert"]["id"] == "a1"
    assert rec["split"] == "val" and ds.split_images(root, "val") == [rec["image"]]
    assert ds.split_images(root, "train") == [other]
    assert rec["reasons"] == ["review", "alert"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"image_jpeg": b"not a jpeg"}, "image_jpeg"),
        ({"image_jpeg": jpeg(seed=3)[:300]}, "image_jpeg"),  # truncated
        ({"image_jpeg": b""}, "image_jpeg"),
        ({"verdict": "maybe"}, "verdict 'maybe'"),
        ({"alert_box": [0.5, 0.5, 0.4, 0.6]}, "alert_box"),
        ({"alert_box": "0,0,1,1"}, "alert_box"),
        ({"detections": [det("person", [0.1, 0.1, 0.2])]}, r"detections\[0\]\.box"),
        ({"detections": [{"box": A}]}, r"detections\[0\]\.label"),
        ({"capture_ts": "yesterday"}, "capture_ts"),
        ({"alert_id": ""}, "alert_id"),
    ],
)
def test_bad_inputs_name_the_input_and_change_nothing(tmp_path, change, message):
    change = dict(change)
    root = tmp_path / "new"
    with pytest.raises(ds.DatasetError, match=message):
        review(root, change.pop("verdict", "false_positive"), **change)
    assert not root.exists()


def test_a_missing_folder_is_created_and_labels_follow_the_class_list(tmp_path):
    root = tmp_path / "fresh"
    rec = review(root, "false_positive")
    assert (root / rec["image"]).is_file()
    # no data.yaml, so no class ids yet: the reviewed boxes wait in the manifest
    assert not ds.label_path(root, rec["image"]).exists()
    assert rec["review"]["skipped_unknown"] is None
    ds.write_data_yaml(root, {0: "car", 1: "person"})
    dset = ds.Dataset.open(root)
    assert ds.write_reviewed_labels(dset, ds.class_names(root)) == 1
    dset.save()
    assert labels(root, rec) == [
        (1, xyxy([0.20, 0.10, 0.40, 0.50])),
        (1, xyxy(B)),
        (0, xyxy(C)),
    ]
    assert ds.Manifest.load(root).records[rec["image"]]["review"]["skipped_unknown"] == 1
    assert ds.write_reviewed_labels(ds.Dataset.open(root), ds.class_names(root)) == 0


class _Table:
    """A stand-in for ``detectors.engine.Detector`` that answers from a table keyed by the
    image's grey level (every test image is flat grey; JPEG keeps a flat level exactly)."""

    table: dict[str, dict[int, list[tuple[int, float, list[float]]]]] = {}
    names: dict[int, str] = {0: "person", 2: "car"}

    def __init__(self, cfg, warmup: bool = True) -> None:
        self.config = cfg
        self.rows = self.table[cfg.weights]
        self.name = cfg.weights.removesuffix(".pt")
        self.version = (self.name * 12)[:12]

    def detect(self, imgs):
        out = []
        for img in imgs:
            mean = float(img.mean())
            grey = min(self.rows, key=lambda g: abs(g - mean))
            rows = self.rows[grey] if abs(grey - mean) < 1.5 else []  # the warm-up: nothing
            out.append(
                [SimpleNamespace(class_id=c, confidence=p, box=tuple(b)) for c, p, b in rows]
            )
        return out


@pytest.fixture
def stand_in_models(monkeypatch):
    fake = types.ModuleType("detectors.engine")
    fake.Detector = _Table  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "detectors.engine", fake)
    return _Table.table


def test_the_teacher_skips_reviewed_images_and_writes_those_reviewed_before_data_yaml(
    tmp_path, stand_in_models
):
    root = tmp_path / "collected"
    c = Collector(root, CollectionPolicy(dedup_distance=0))
    img = np.full((64, 96, 3), 40, np.uint8)
    plain = c.offer("gate", img, T0 - 100, ["periodic"])
    c.close()
    rec = review(root, "false_positive", image_jpeg=jpeg(128))  # before data.yaml exists
    stand_in_models["teacher.pt"] = {
        40: [(0, 0.9, B)],
        128: [(0, 0.95, A), (2, 0.9, C)],  # the teacher makes the same mistake
    }
    for overwrite in (False, True):
        report = ds.label(root, "teacher.pt", classes=["person", "car"], overwrite=overwrite)
        assert report.skipped_human == 1 and report.labeled == 1
        assert labels(root, {"image": plain}) == [(0, xyxy(B))]
        assert (0, xyxy(A)) not in labels(root, rec), "a reviewed image is never relabelled"
    assert labels(root, rec) == [(0, xyxy([0.20, 0.10, 0.40, 0.50])), (0, xyxy(B)), (1, xyxy(C))]
    m = ds.Manifest.load(root).records[rec["image"]]
    assert m["label_source"] == ds.HUMAN and m["review"]["skipped_unknown"] == 1


# -- stats and split ----------------------------------------------------------------------------


def _collected(root, cams=("gate", "dock"), n: int = 60, step: float = 2.0) -> None:
    """Frames of each camera every ``step`` s, all different (no near-duplicates), one person."""
    c = Collector(root, CollectionPolicy(dedup_distance=0, max_images=10_000))
    for k, cam in enumerate(cams):
        for i in range(n):
            img = np.random.default_rng(1000 * k + i).integers(0, 256, (64, 96, 3), np.uint8)
            rel = c.offer(cam, img, T0 + step * i, ["periodic"])
            ds.write_labels(ds.label_path(root, rel), [ds.Box(0, 0.5, 0.5, 0.2, 0.4)])
    c.close()


def _reviews(root, cams=("gate", "dock"), every: float = 10.0, n: int = 12) -> list[dict]:
    out = []
    for k, cam in enumerate(cams):
        for i in range(n):
            verdict = "false_positive" if i % 3 else "true_positive"
            out.append(
                review(
                    root,
                    verdict,
                    alert_id=f"{cam}-{i}",
                    camera_id=cam,
                    capture_ts=T0 + every * i + 1.0,
                    image_jpeg=jpeg(seed=5000 + 100 * k + i),
                )
            )
    return out


def test_stats_count_reviewed_examples_per_verdict_and_split(root):
    _collected(root, n=30)
    recs = _reviews(root, n=6)
    s = ds.stats(root)
    rv = s["reviewed"]
    assert rv["images"] == 12 and rv["true_positive"] == 4 and rv["false_positive"] == 8
    assert rv["splits"] == {"unassigned": 12}
    expected_boxes = sum(len(labels(root, r)) for r in recs)
    assert rv["boxes"] == expected_boxes == 4 * 4 + 8 * 3
    ds.split(root, val=0.3, segment_s=20, gap_s=0, seed=0)
    rv = ds.stats(root)["reviewed"]
    assert sum(rv["splits"].values()) == 12 and "unassigned" not in rv["splits"]
    text = ds.format_stats(ds.stats(root))
    assert "reviewed: 12 image(s) (4 true positive, 8 false positive), 40 box(es)" in text
    line = next(x for x in text.splitlines() if "reviewed:" in x)
    assert line.endswith("; " + ", ".join(f"{k} {v}" for k, v in sorted(rv["splits"].items())))
    assert "reviewed: none" in ds.format_stats(ds.stats(_empty(root.parent / "empty")))


def _empty(path):
    path.mkdir()
    ds.write_data_yaml(path, {0: "person"})
    return path


def test_cli_stats_prints_the_reviewed_counts(root, capsys):
    from pipeline.cli import build_parser  # noqa: PLC0415 (the whole CLI)

    _reviews(root, cams=("gate",), n=3)
    args = build_parser().parse_args(["dataset", "stats", str(root)])
    assert args.func(args) == 0
    assert "reviewed: 3 image(s) (1 true positive, 2 false positive)" in capsys.readouterr().out
    args = build_parser().parse_args(["dataset", "stats", str(root), "--json"])
    assert args.func(args) == 0
    assert json.loads(capsys.readouterr().out)["reviewed"]["false_positive"] == 2


def test_split_by_time_puts_reviewed_examples_with_their_camera_and_time(root):
    _collected(root)
    recs = _reviews(root)
    r = ds.split(root, val=0.3, segment_s=20, gap_s=0, seed=0)
    assert r.excluded == 0
    m = ds.Manifest.load(root).records
    splits = {x["split"] for x in recs for x in [m[x["image"]]]}
    assert splits == {"train", "val"}, "reviewed examples are spread, not forced into one split"
    for x in recs:
        got = m[x["image"]]
        # the collected frame one second earlier, same camera: same time segment, same split
        twin = next(
            v
            for v in m.values()
            if v["camera"] == got["camera"] and v["capture_ts"] == got["capture_ts"] - 1.0
            and not ds.is_reviewed(v)
        )  # fmt: skip
        assert got["split"] == twin["split"], (got["image"], got["split"], twin["split"])
        listed = ds.split_images(root, got["split"])
        assert got["image"] in listed


def test_split_by_camera_holds_out_that_cameras_reviewed_examples(root):
    _collected(root, n=20)
    recs = _reviews(root, n=4)
    ds.split(root, by="camera", holdout_cameras=["dock"], val=0.2)
    m = ds.Manifest.load(root).records
    for x in recs:
        want = "val" if x["camera"] == "dock" else "train"
        assert m[x["image"]]["split"] == want


# -- the promotion gate ---------------------------------------------------------------------------


def evaluation(
    map50: float, *, reviewed: float | None = None, n: int = 0, version: str = "c" * 12
) -> Evaluation:
    """An evaluation with all held-out labels at ``map50`` and, when ``reviewed`` is given, the
    reviewed images (``n`` labels) at that."""

    def ev(score: float, scored_on: str, instances: int) -> Evaluation:
        return Evaluation(
            weights=f"/m/{version}.pt", model="m", version=version, data="/d", split="val",
            images=10, instances=instances, map50=score, map50_95=score / 2, precision=0.8,
            recall=0.7, ms_per_image=1.0, imgsz=320, scored_on=scored_on, reviewed_labels=n,
            per_class={"person": {"ap50": score, "ap50_95": score / 2}},
        )  # fmt: skip

    e = ev(map50, "all", 200)
    if reviewed is not None:
        e.reviewed = ev(reviewed, "reviewed", n)
    return e


def test_enough_reviewed_labels_score_on_the_reviewed_images():
    cfg = PromotionConfig(min_reviewed_labels=50)
    # on teacher labels the student merely ties; on what people checked it is clearly better
    cand = evaluation(0.70, reviewed=0.80, n=50)
    prod = evaluation(0.70, reviewed=0.60, n=50, version="p" * 12)
    d = decide(cand, prod, cfg)
    assert d.promote is True
    assert (d.scored_on, d.reviewed_labels, d.min_reviewed_labels) == ("reviewed", 50, 50)
    assert (d.candidate, d.production) == (0.80, 0.60)
    assert d.per_class["person"]["candidate"] == 0.80
    assert "scored on the 50 reviewed held-out label(s)" in d.reasons[1]
    out = d.to_dict()
    assert out["reviewed_labels"] == 50 and out["scored_on"] == "reviewed"
    # the other way round: better on teacher labels, worse on reviewed ones -> refused
    d = decide(evaluation(0.9, reviewed=0.5, n=80), evaluation(0.7, reviewed=0.6, n=80), cfg)
    assert d.promote is False and d.scored_on == "reviewed"
    assert any(r.startswith("person:") and "worse by 0.100" in r for r in d.reasons)


def test_too_few_reviewed_labels_score_on_all_and_say_how_many():
    cfg = PromotionConfig(min_reviewed_labels=50)
    cand = evaluation(0.70, reviewed=0.95, n=49)
    prod = evaluation(0.72, reviewed=0.10, n=49, version="p" * 12)
    d = decide(cand, prod, cfg)
    assert d.promote is False, "49 reviewed labels are one too few to outweigh the rest"
    assert (d.scored_on, d.reviewed_labels) == ("all", 49)
    assert (d.candidate, d.production) == (0.70, 0.72)
    assert "49 of them reviewed" in d.reasons[1] and "at least 50" in d.reasons[1]
    assert d.reasons[0].startswith("map50:")  # the score line comes first, as before
    # no reviewed images at all
    d = decide(evaluation(0.8), evaluation(0.7, version="p" * 12), cfg)
    assert d.promote is True and d.scored_on == "all" and d.reviewed_labels == 0


def test_default_minimum_and_first_model():
    assert PromotionConfig().min_reviewed_labels == 50
    d = decide(evaluation(0.4, reviewed=0.6, n=50), None)
    assert d.promote and d.scored_on == "reviewed" and d.candidate == 0.6
    d = decide(evaluation(0.4, reviewed=0.6, n=10), None)
    assert d.promote and d.scored_on == "all" and d.candidate == 0.4


def test_reviews_that_arrive_between_the_two_evaluations_block_promotion():
    cfg = PromotionConfig(min_reviewed_labels=5)
    d = decide(evaluation(0.9, reviewed=0.9, n=12), evaluation(0.5, reviewed=0.5, n=10), cfg)
    assert d.promote is False and d.scored_on == "all"
    assert any("a review came in between" in r for r in d.reasons)


def test_min_reviewed_labels_is_validated():
    with pytest.raises(ValueError, match="min_reviewed_labels"):
        PromotionConfig(min_reviewed_labels=0)


def test_evaluate_counts_and_scores_the_reviewed_held_out_images(root, stand_in_models):
    """The teacher labelled every frame and made one kind of mistake (a box on a coat); the
    student learned not to. On the teacher's own labels the teacher wins; on the frames people
    reviewed the student does, and the gate follows the reviewed labels once there are enough."""
    held, train = [], []
    teacher: dict[int, list] = {}
    student: dict[int, list] = {}
    person = [0.6, 0.2, 0.8, 0.6]
    c = Collector(root, CollectionPolicy(dedup_distance=0, max_images=10_000))
    for i in range(40):  # teacher-labelled frames: the student misses every other person
        grey = 10 + 3 * i
        rel = c.offer("gate", np.full((64, 96, 3), grey, np.uint8), T0 + i, ["periodic"])
        ds.write_labels(ds.label_path(root, rel), [ds.Box(0, 0.7, 0.4, 0.2, 0.4)])
        teacher[grey] = [(0, 0.9, person)]
        student[grey] = [(0, 0.9, person)] if i % 2 else []
        (held if i < 30 else train).append(rel)
    c.close()
    for i in range(6):  # reviewed frames: false positives (the coat) with a real person beside
        grey = 150 + 4 * i
        rec = review(root, "false_positive", alert_id=f"fp{i}", image_jpeg=jpeg(grey))
        teacher[grey] = [(0, 0.95, A), (0, 0.9, B), (2, 0.9, C)]
        student[grey] = [(0, 0.9, B), (2, 0.9, C)]
        held.append(rec["image"])
    rec = review(root, "true_positive", alert_id="tp", image_jpeg=jpeg(240))
    teacher[240] = student[240] = [(0, 0.9, A), (0, 0.8, B), (2, 0.9, C)]
    train.append(rec["image"])  # reviewed, but in the training split: not counted
    (root / "val.txt").write_text("".join(f"./{x}\n" for x in held))
    (root / "train.txt").write_text("".join(f"./{x}\n" for x in train))
    stand_in_models.update({"teacher.pt": teacher, "student.pt": student})

    prod = evaluate("teacher.pt", root, imgsz=320)
    cand = evaluate("student.pt", root, imgsz=320)
    assert cand.split == "val" and cand.images == 36
    assert cand.reviewed_labels == 6 * 3 == prod.reviewed_labels  # B, the car, the neighbour
    assert cand.reviewed is not None and cand.reviewed.images == 6
    assert cand.reviewed.instances == 18 and cand.reviewed.scored_on == "reviewed"
    assert cand.reviewed.map50 > prod.reviewed.map50, "the teacher's coat box is a false positive"
    assert cand.map50 < prod.map50, "on its own labels the teacher wins"

    d = decide(cand, prod, PromotionConfig(min_reviewed_labels=18))
    assert d.promote is True and d.scored_on == "reviewed" and d.reviewed_labels == 18
    d = decide(cand, prod, PromotionConfig(min_reviewed_labels=19))
    assert d.promote is False and d.scored_on == "all"
    assert "18 of them reviewed" in d.reasons[1] and "at least 19" in d.reasons[1]
