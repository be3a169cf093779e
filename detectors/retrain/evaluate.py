"""Scoring a model on a dataset's held-out split, and deciding whether a candidate replaces production.

Evaluation runs the model through Vigil's own :class:`~detectors.engine.Detector` (the code that
serves it), matches predictions to labels by class *name*, so models with different class lists
(an 80-class COCO model and a one-class student) are compared on the same footing, and computes
COCO-style AP with ultralytics' ``ap_per_class``.

Images an operator reviewed (:mod:`detectors.retrain.dataset.reviewed`) are also scored on their
own, in the same pass: with enough reviewed labels (``models.promotion.min_reviewed_labels``)
:func:`decide` compares the models on those, since on teacher labels alone a student can at best
tie its teacher.
"""

from __future__ import annotations

import datetime as _dt
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from detectors.errors import WeightsError
from detectors.retrain import dataset as ds
from detectors.retrain.config import PromotionConfig, detector_settings
from pipeline.common.geometry import box_iou_matrix

IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)


def match(
    pred_cls: np.ndarray, pred_boxes: np.ndarray, gt_cls: np.ndarray, gt_boxes: np.ndarray
) -> np.ndarray:
    """(N preds, 10 thresholds) correct flags; preds in descending confidence, greedy like COCO."""
    correct = np.zeros((len(pred_cls), len(IOU_THRESHOLDS)), bool)
    if not len(pred_cls) or not len(gt_cls):
        return correct
    iou = box_iou_matrix(gt_boxes, pred_boxes) * (gt_cls[:, None] == pred_cls[None, :])
    matched = np.zeros((len(gt_cls), len(IOU_THRESHOLDS)), bool)
    for j in range(len(pred_cls)):
        available = np.where(matched, 0.0, iou[:, j, None])
        k = available.argmax(0)
        ok = available[k, range(len(IOU_THRESHOLDS))] >= IOU_THRESHOLDS
        correct[j] = ok
        matched[k, range(len(IOU_THRESHOLDS))] |= ok
    return correct


@dataclass
class Evaluation:
    weights: str
    model: str
    version: str
    data: str
    split: str
    images: int
    instances: int
    map50: float
    map50_95: float
    precision: float
    recall: float
    ms_per_image: float
    imgsz: int
    per_class: dict[str, dict[str, float]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    profile: dict[str, Any] = field(default_factory=dict)  # prediction statistics (drift reference)
    scored_on: str = "all"  # "reviewed": only the split's reviewed images
    reviewed_labels: int = 0  # boxes in the reviewed images of those scored
    reviewed: Evaluation | None = None  # the same model on the split's reviewed images only

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def score(self, metric: str, cls: str | None = None) -> float:
        if cls is None:
            return float(getattr(self, metric))
        key = "ap50" if metric == "map50" else "ap50_95"
        return float((self.per_class.get(cls) or {}).get(key, 0.0))


def _model_imgsz(model) -> int:
    args = getattr(model, "ckpt", None) or {}
    imgsz = (args.get("train_args") or {}).get("imgsz") if isinstance(args, dict) else None
    if isinstance(imgsz, (list, tuple)):
        imgsz = max(imgsz)
    return int(imgsz) if isinstance(imgsz, int) and imgsz % 32 == 0 else 640


def evaluate(
    weights: str,
    data: str | Path,
    *,
    split: str | None = None,
    imgsz: int | None = None,
    conf: float = 0.001,
    iou: float = 0.7,
    device: str = "auto",
    batch: int = 8,
    progress: Callable[[int, int], None] | None = None,
) -> Evaluation:
    """mAP50, mAP50-95, precision/recall (at max mean F1), per-class AP and speed on a split;
    ``reviewed``: the same on the split's reviewed images (one inference pass for both)."""
    import cv2  # noqa: PLC0415 (cv2: ~0.2 s; importing this module stays cheap)

    from detectors.engine import Detector  # noqa: PLC0415 (imports torch)
    from detectors.retrain.drift import profile_from_predictions  # noqa: PLC0415 (imports torch: registry -> loading)

    root = Path(data).expanduser()
    names = ds.class_names(root)
    dset = ds.Dataset.open(root)
    dset.require_images()
    split = split or ds.heldout_split(root)
    if split not in ds.SPLITS:
        raise ds.DatasetError(f"unknown split {split!r}; use train, val or test")
    images = ds.split_images(root, split)
    if not images:
        raise ds.DatasetError(f"dataset {root} has no {split!r} images: run `vigil dataset split`")
    report = ds.validate(root, images=images, require_labels=True)
    reviewed_images = {r["image"] for r in dset.records if ds.is_reviewed(r)}
    problems = [str(p) for p in report.problems] + [f"{u}: no label file" for u in report.unlabeled]
    if not report.good:
        raise ds.DatasetError(f"no usable {split} images in {root}: " + "; ".join(problems[:3]))
    if imgsz is None:
        from detectors.loading import load_model  # noqa: PLC0415 (imports torch)

        imgsz = _model_imgsz(load_model(weights, device="cpu"))
    dcfg = detector_settings(
        "evaluation",
        weights=weights,
        device=device,
        imgsz=imgsz,
        conf=conf,
        iou=iou,
        tracker="none",
        max_batch=batch,
    )
    det = Detector(dcfg, warmup=False)
    by_name = {v.lower(): k for k, v in names.items()}
    to_ds = {mid: by_name[n.lower()] for mid, n in det.names.items() if n.lower() in by_name}
    if not to_ds:
        raise WeightsError(
            f"{weights}: none of the model's classes ({', '.join(list(det.names.values())[:8])}"
            f"...) is a dataset class ({', '.join(names.values())})"
        )
    tps, confs, pcls, tcls = [], [], [], []
    all_preds: list[list[tuple[str, float]]] = []
    elapsed = 0.0
    det.detect([np.zeros((det.config.imgsz, det.config.imgsz, 3), np.uint8)])  # warm up
    for start in range(0, len(report.good), batch):
        chunk = report.good[start : start + batch]
        imgs = [cv2.imread(str(root / rel)) for rel in chunk]
        t0 = time.perf_counter()
        results = det.detect(imgs)
        elapsed += time.perf_counter() - t0
        for rel, dets in zip(chunk, results, strict=True):
            boxes, _ = ds.read_labels(dset.label_file(rel), len(names))
            gt_cls = np.array([b.cls for b in boxes], int)
            gt_boxes = np.array([b.xyxy() for b in boxes], float).reshape(-1, 4)
            keep = [d for d in dets if d.class_id in to_ds]
            keep.sort(key=lambda d: -d.confidence)
            p_cls = np.array([to_ds[d.class_id] for d in keep], int)
            p_boxes = np.array([d.box for d in keep], float).reshape(-1, 4)
            tps.append(match(p_cls, p_boxes, gt_cls, gt_boxes))
            confs.append(np.array([d.confidence for d in keep], float))
            pcls.append(p_cls)
            tcls.append(gt_cls)
            all_preds.append([(names[to_ds[d.class_id]], d.confidence) for d in keep])
        if progress is not None:
            progress(min(start + batch, len(report.good)), len(report.good))
    map50, map5095, precision, recall, per_class = _scores(tps, confs, pcls, tcls, names)
    reviewed_idx = [i for i, rel in enumerate(report.good) if rel in reviewed_images]
    reviewed_labels = sum(len(tcls[i]) for i in reviewed_idx)
    # the drift reference describes what the model emits at the serving threshold
    profile = profile_from_predictions(
        [[(n, c) for n, c in frame if c >= 0.25] for frame in all_preds]
    )
    common = {
        "weights": str(weights),
        "model": det.name,
        "version": det.version,
        "data": str(root),
        "split": split,
        "ms_per_image": round(1000 * elapsed / max(len(report.good), 1), 2),
        "imgsz": det.config.imgsz,
        "reviewed_labels": reviewed_labels,
    }
    reviewed = None
    if reviewed_idx:
        sub = [[x[i] for i in reviewed_idx] for x in (tps, confs, pcls, tcls)]
        r50, r5095, rp, rr, rpc = _scores(*sub, names)
        reviewed = Evaluation(
            **common,
            images=len(reviewed_idx),
            instances=reviewed_labels,
            map50=round(r50, 4),
            map50_95=round(r5095, 4),
            precision=round(rp, 4),
            recall=round(rr, 4),
            per_class=rpc,
            scored_on="reviewed",
        )
    return Evaluation(
        **common,
        images=len(report.good),
        instances=int(sum(len(t) for t in tcls)),
        map50=round(map50, 4),
        map50_95=round(map5095, 4),
        precision=round(precision, 4),
        recall=round(recall, 4),
        per_class=per_class,
        problems=problems,
        profile=profile,
        reviewed=reviewed,
    )


def _scores(
    tps: list[np.ndarray],
    confs: list[np.ndarray],
    pcls: list[np.ndarray],
    tcls: list[np.ndarray],
    names: dict[int, str],
) -> tuple[float, float, float, float, dict[str, dict[str, float]]]:
    """mAP50, mAP50-95, precision, recall and per-class AP of per-image match results."""
    from ultralytics.utils.metrics import ap_per_class  # noqa: PLC0415 (imports torch)

    tp = np.concatenate(tps) if tps else np.zeros((0, 10), bool)
    conf_a = np.concatenate(confs) if confs else np.zeros(0)
    pred_cls = np.concatenate(pcls) if pcls else np.zeros(0, int)
    target_cls = np.concatenate(tcls) if tcls else np.zeros(0, int)
    per_class: dict[str, dict[str, float]] = {}
    if not len(target_cls):
        return 0.0, 0.0, 0.0, 0.0, per_class
    out = ap_per_class(tp, conf_a, pred_cls, target_cls, names=names)
    p, r, ap, classes = out[2], out[3], out[5], out[6]
    counts = {
        int(c): int(n) for c, n in zip(*np.unique(target_cls, return_counts=True), strict=True)
    }
    for i, c in enumerate(classes):
        per_class[names[int(c)]] = {
            "ap50": round(float(ap[i, 0]), 4),
            "ap50_95": round(float(ap[i].mean()), 4),
            "precision": round(float(p[i]), 4),
            "recall": round(float(r[i]), 4),
            "instances": counts.get(int(c), 0),
        }
    return float(ap[:, 0].mean()), float(ap.mean()), float(p.mean()), float(r.mean()), per_class


def format_evaluation(e: Evaluation) -> str:
    lines = [
        f"{e.model} ({e.version}) on {e.data} [{e.split}]: {e.images} image(s), "
        f"{e.instances} box(es), imgsz {e.imgsz}",
        f"  mAP50 {e.map50:.3f}  mAP50-95 {e.map50_95:.3f}  precision {e.precision:.3f}  "
        f"recall {e.recall:.3f}  {e.ms_per_image:.1f} ms/image",
    ]
    for cls, v in e.per_class.items():
        lines.append(
            f"  {cls:<16} AP50 {v['ap50']:.3f}  AP50-95 {v['ap50_95']:.3f}  "
            f"P {v['precision']:.3f}  R {v['recall']:.3f}  ({v['instances']} boxes)"
        )
    r = e.reviewed
    if r is not None:
        lines.append(
            f"  reviewed: {r.images} image(s), {r.instances} box(es): mAP50 {r.map50:.3f}  "
            f"mAP50-95 {r.map50_95:.3f}  precision {r.precision:.3f}  recall {r.recall:.3f}"
        )
    if e.problems:
        lines.append(f"  {len(e.problems)} problem(s), images skipped:")
        lines.extend(f"    {p}" for p in e.problems[:20])
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Promotion


@dataclass
class Decision:
    promote: bool
    metric: str
    candidate: float
    production: float | None
    margin: float
    per_class: dict[str, dict[str, Any]] = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)
    reviewed_labels: int = 0  # held-out labels in reviewed images
    min_reviewed_labels: int = 0  # scored on the reviewed images from this many on
    scored_on: str = "all"  # "reviewed" or "all" held-out labels
    at: str = field(default_factory=lambda: _dt.datetime.now(_dt.timezone.utc).isoformat())

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def decide(
    candidate: Evaluation, production: Evaluation | None, cfg: PromotionConfig | None = None
) -> Decision:
    """Promote only when the candidate beats production by ``margin`` on the same split and no
    monitored class loses more than ``class_tolerance``.

    Both are scored on the split's reviewed images (``scored_on: reviewed``) when they hold at
    least ``min_reviewed_labels`` labels, else on all held-out labels: teacher labels measure
    agreement with the teacher, and a student can at best tie it there.
    """
    cfg = cfg or PromotionConfig()
    metric = cfg.metric
    n = candidate.reviewed_labels
    # a review that arrives between the two evaluations changes the labels under them
    changed = production is not None and production.reviewed_labels != n
    reviewed = n >= cfg.min_reviewed_labels and candidate.reviewed is not None and not changed
    if reviewed and production is not None:
        reviewed = production.reviewed is not None
    cand = candidate.reviewed if reviewed and candidate.reviewed is not None else candidate
    prod = production.reviewed if reviewed and production is not None else production
    basis = _basis(candidate, n, cfg.min_reviewed_labels, reviewed)
    gate: dict[str, Any] = {
        "reviewed_labels": n,
        "min_reviewed_labels": cfg.min_reviewed_labels,
        "scored_on": "reviewed" if reviewed else "all",
    }
    c = cand.score(metric)
    if production is None or prod is None:
        return Decision(
            True,
            metric,
            c,
            None,
            cfg.margin,
            reasons=[
                f"no production model yet: the candidate ({metric} {c:.3f}) becomes it",
                basis,
            ],
            **gate,
        )
    if (production.data, production.split) != (candidate.data, candidate.split):
        raise ValueError("candidate and production must be evaluated on the same split")
    p = prod.score(metric)
    better = c >= p + cfg.margin
    reasons = [
        f"{metric}: candidate {c:.3f} vs production {p:.3f} "
        f"({'+' if c >= p else ''}{c - p:.3f}; margin {cfg.margin:.3f}) -> "
        + ("better" if better else "not better by the margin"),
        basis,
    ]
    if changed:
        reasons.append(
            f"the held-out split had {production.reviewed_labels} reviewed label(s) when "
            f"production was scored and {n} for the candidate (a review came in between): "
            "not promoted; run again"
        )
    per_class: dict[str, dict[str, Any]] = {}
    worse = []
    for cls in cfg.monitored_classes:
        if cls not in cand.per_class and cls not in prod.per_class:
            reasons.append(f"{cls}: not in the held-out labels; not checked")
            continue
        cc, pc = cand.score(metric, cls), prod.score(metric, cls)
        drop = pc - cc
        ok = drop <= cfg.class_tolerance
        per_class[cls] = {"candidate": cc, "production": pc, "drop": round(drop, 4), "ok": ok}
        reasons.append(
            f"{cls}: candidate {cc:.3f} vs production {pc:.3f} -> "
            + ("ok" if ok else f"worse by {drop:.3f} (tolerance {cfg.class_tolerance:.3f})")
        )
        if not ok:
            worse.append(cls)
    promote = better and not worse and not changed
    return Decision(promote, metric, c, p, cfg.margin, per_class, reasons, **gate)


def _basis(candidate: Evaluation, n: int, minimum: int, reviewed: bool) -> str:
    """What the scores were computed on, for people to read."""
    if reviewed and candidate.reviewed is not None:
        return (
            f"scored on the {n} reviewed held-out label(s) ({candidate.reviewed.images} reviewed "
            f"image(s)); at least {minimum} needed (models.promotion.min_reviewed_labels)"
        )
    return (
        f"scored on all {candidate.instances} held-out label(s): {n} of them reviewed (at least "
        f"{minimum} needed to score on the reviewed ones: models.promotion.min_reviewed_labels)"
    )


@dataclass
class Proposal:
    """What :func:`propose` did: both evaluations, the decision and what the registry recorded."""

    candidate: Evaluation
    production: Evaluation | None
    decision: Decision
    record: dict[str, Any]


def propose(
    candidate_weights: str | Path,
    data: str | Path,
    *,
    registry=None,
    production_weights: str | Path | None = None,
    cfg: PromotionConfig | None = None,
    imgsz: int | None = None,
    device: str = "auto",
    dry_run: bool = False,
    train_info: dict[str, Any] | None = None,
    card: str | Path | None = None,
) -> Proposal:
    """Evaluate a candidate and the production model on the same held-out split and promote the
    candidate when :func:`decide` says so (on the split's reviewed images when they hold at least
    ``min_reviewed_labels`` labels; the record says ``reviewed_labels`` and ``scored_on``).

    Production is ``production_weights`` when given, else the registry's production model. With a
    registry the candidate is registered (metrics, drift profile, model card), the decision is
    recorded, and the candidate is promoted unless ``dry_run``.
    """
    split = ds.heldout_split(data)
    cand = evaluate(str(candidate_weights), data, split=split, imgsz=imgsz, device=device)
    prod_mv = None
    if production_weights is None and registry is not None:
        prod_mv = registry.production_signed()
        if prod_mv is not None:
            production_weights = registry.fetch(prod_mv)
    prod = None
    if production_weights is not None:
        prod = evaluate(str(production_weights), data, split=split, imgsz=imgsz, device=device)
    decision = decide(cand, prod, cfg)
    record: dict[str, Any] = {
        **decision.to_dict(),
        "candidate_weights": str(candidate_weights),
        "candidate_version": cand.version,
        "production_version": prod.version if prod is not None else None,
        "split": split,
        "data": str(Path(data).resolve()),
        "imgsz": cand.imgsz,
        "promoted": False,
    }
    if train_info:
        record["run_dir"] = train_info.get("run_dir")
    if registry is not None:
        metrics = {k: getattr(cand, k) for k in ("map50", "map50_95", "precision", "recall")}
        metrics.update(split=split, data=record["data"], per_class=cand.per_class)
        metrics["reviewed_labels"] = cand.reviewed_labels
        if cand.reviewed is not None:
            metrics["reviewed"] = {
                k: getattr(cand.reviewed, k)
                for k in ("images", "instances", "map50", "map50_95", "precision", "recall")
            }
        mv = registry.register(
            candidate_weights, metrics=metrics, profile=cand.profile, train=train_info, card=card
        )
        record["candidate_version"] = mv.version
        if prod_mv is not None:
            record["production_version"] = prod_mv.version
        if decision.promote and not dry_run:
            registry.promote(mv.version, reason="vigil retrain", decision=decision.to_dict())
            record["promoted"] = True
        registry.record_decision(record)
    return Proposal(cand, prod, decision, record)
