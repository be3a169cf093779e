"""The whole retraining procedure as one call, what ``vigil retrain`` runs (docs/retraining.md).

:func:`run_retrain` checks the dataset, reaches the registry (before an hour of training, not
after), picks the base (``base``, else the registry's production model, else
``detector.weights``), fine-tunes it, evaluates the candidate and the production model on the
same held-out split, registers the candidate and promotes it when it is better by the margin and
no monitored class gets worse beyond the tolerance, then writes ``metrics.json``,
``MODEL_CARD.md`` and ``decision.json`` into the run directory.

Both models are scored on the held-out images an operator reviewed (console) once those hold
``models.promotion.min_reviewed_labels`` labels, else on all held-out labels; the decision says
which (``scored_on``) and how many held-out labels were reviewed (``reviewed_labels``), and the
log repeats it before training starts, so that an operator knows what the gate will measure.

Errors are ``ValueError`` (bad data, weights, options; ``RegistryError``, ``TrainingError``) or
``OSError``; the caller decides how to show them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from detectors import yolov5_legacy
from detectors.config import DetectorConfig
from detectors.loading import resolve_weights
from detectors.retrain import dataset as ds
from detectors.retrain.config import ModelsConfig, PromotionConfig
from detectors.retrain.evaluate import Decision, Evaluation, format_evaluation, propose
from detectors.retrain.model_registry import ModelRegistry
from detectors.retrain.train import TrainOptions, TrainResult, train, write_model_card
from pipeline.common.redis import RedisConfig

__all__ = ["RetrainResult", "run_retrain"]


@dataclass
class RetrainResult:
    """What one retraining run trained, measured and decided."""

    training: TrainResult  # run dir, candidate weights, epochs run, seconds per epoch...
    options: TrainOptions  # as trained (head-only epochs resolved)
    candidate: Evaluation
    production: Evaluation | None  # None: no production model to compare with
    decision: Decision
    record: dict[str, Any]  # decision.json: candidate_version, promoted, ...
    card: Path  # MODEL_CARD.md

    @property
    def run_dir(self) -> Path:
        return self.training.run_dir

    @property
    def promoted(self) -> bool:
        return bool(self.record["promoted"])


def run_retrain(
    data: str | Path,
    opts: TrainOptions,
    *,
    detector: DetectorConfig,
    models: ModelsConfig,
    redis: RedisConfig,
    promotion: PromotionConfig | None = None,
    base: str | None = None,
    head_epochs: int | None = None,
    eval_imgsz: int | None = None,
    production_weights: str | Path | None = None,
    use_registry: bool = True,
    dry_run: bool = False,
    project: str | Path = "runs/retrain",
    name: str | None = None,
    log: Callable[[str], None] = print,
) -> RetrainResult:
    """Fine-tune on the dataset folder ``data``, compare with production, promote when better.

    ``detector`` gives the default base (``detector.weights``); ``models`` and ``redis`` the
    registry, which is left untouched when ``use_registry`` is false (the decision is then only
    written to the run directory). ``promotion`` defaults to ``models.promotion``.
    ``head_epochs``: head-only warm-up epochs; None: 1 for a legacy YOLOv5 base (its head is new),
    else ``opts.head_epochs``. ``eval_imgsz``: both models are evaluated at this size (default:
    ``opts.imgsz``). ``production_weights``: compare with this file instead of the registry's
    production model. ``dry_run``: register the candidate but never promote it. ``log`` receives
    the evaluation reports of the candidate and of production as soon as they are known.
    """
    promotion = promotion if promotion is not None else models.promotion
    ds.class_names(data)  # fail before anything slow when data.yaml is missing
    log(_reviewed_summary(data, promotion.min_reviewed_labels))
    registry = ModelRegistry(redis, models) if use_registry else None
    # reach the registry before training: a missing Redis should not waste an hour of training
    prod_mv = registry.production_signed() if registry is not None else None
    if base is None:
        base = str(registry.fetch(prod_mv)) if prod_mv is not None else detector.weights
    legacy = _is_legacy(base)
    if head_epochs is None:
        head_epochs = 1 if legacy else opts.head_epochs
    opts = replace(opts, head_epochs=head_epochs)

    result = train(data, base, opts, project=project, name=name)
    prop = propose(
        result.weights,
        data,
        registry=registry,
        production_weights=production_weights,
        cfg=promotion,
        imgsz=eval_imgsz or opts.imgsz,
        device=opts.device,
        dry_run=dry_run,
        train_info={
            "run_dir": str(result.run_dir),
            "base": result.base,
            "base_kind": result.base_kind,
            "seconds_per_epoch": result.seconds_per_epoch,
            "epochs_run": result.epochs_run,
        },
    )
    log(format_evaluation(prop.candidate))
    if prop.production is not None:
        log(format_evaluation(prop.production))

    decision, record = prop.decision, prop.record
    record["run_dir"] = str(result.run_dir)
    (result.run_dir / "metrics.json").write_text(
        json.dumps(
            {
                "candidate": prop.candidate.to_dict(),
                "production": prop.production.to_dict() if prop.production else None,
            },
            indent=2,
        )
    )
    card = write_model_card(
        result, opts, prop.candidate.to_dict(), {**decision.to_dict(), **record}
    )
    if registry is not None:
        registry.attach_card(record["candidate_version"], card)
    (result.run_dir / "decision.json").write_text(json.dumps(record, indent=2))
    return RetrainResult(
        training=result,
        options=opts,
        candidate=prop.candidate,
        production=prop.production,
        decision=decision,
        record=record,
        card=card,
    )


def _reviewed_summary(data: str | Path, minimum: int) -> str:
    """How many held-out labels an operator reviewed, and so what the gate will score on."""
    root = Path(data).expanduser()
    try:
        split = ds.heldout_split(root)
    except ds.DatasetError:
        return "no held-out split yet (`vigil dataset split`)"
    dset = ds.Dataset.open(root)
    nc = len(ds.class_names(root))
    listed = set(ds.split_images(root, split))
    reviewed = [r["image"] for r in dset.records if r["image"] in listed and ds.is_reviewed(r)]
    n = sum(len(ds.read_labels(dset.label_file(rel), nc)[0]) for rel in reviewed)
    basis = "the reviewed images" if n >= minimum else "all held-out labels"
    return (
        f"{split} split: {len(reviewed)} reviewed image(s) with {n} label(s) (minimum {minimum}): "
        f"the promotion gate will score on {basis}"
    )


def _is_legacy(weights: str) -> bool:
    """Whether ``weights`` names a legacy YOLOv5 checkpoint on disk."""
    try:
        src = resolve_weights(weights)
    except ValueError:
        return False
    return isinstance(src, Path) and src.is_file() and yolov5_legacy.is_legacy_yolov5(src)
