"""``vigil retrain`` and ``vigil evaluate``: fine-tune, compare with production, promote when
better (see docs/retraining.md). The procedure is :func:`detectors.retrain.workflow.run_retrain`;
these handlers only turn arguments into its options and print what it decided.

Errors print one line on stderr and exit with status 2, like the rest of the CLI.
"""

from __future__ import annotations

import argparse
import json
import os

from detectors.retrain.config import PromotionConfig
from detectors.retrain.evaluate import evaluate, format_evaluation
from detectors.retrain.train import TrainOptions
from pipeline.cli.support import comma_list, config_from_args, progress
from pipeline.config import VigilConfig


def register(sub: argparse._SubParsersAction) -> None:
    d = TrainOptions()
    p = sub.add_parser(
        "retrain",
        help="fine-tune on a dataset, compare with production, promote when better",
        description="Fine-tune --base (default: the registry's production model, else "
        "detector.weights) on DIR with ultralytics' trainer, evaluate the candidate and the "
        "production model on the same held-out split, and promote the candidate when it is "
        "better by the margin and no monitored class gets worse beyond the tolerance.",
    )
    p.add_argument("--data", required=True, help="dataset folder (vigil dataset split first)")
    p.add_argument("--base", help="weights or model yaml to start from")
    p.add_argument("-c", "--config", help="Vigil config (registry, promotion rules, detector)")
    g = p.add_argument_group("training")
    g.add_argument("--epochs", type=int, default=d.epochs, help=f"main phase (default {d.epochs})")
    g.add_argument(
        "--head-epochs",
        type=int,
        default=None,
        help="head-only epochs first (default: 0; 1 for a legacy YOLOv5 base)",
    )
    g.add_argument(
        "--freeze",
        default=str(d.freeze),
        help="main phase: freeze the first N layers, or backbone|head|none",
    )
    g.add_argument("--imgsz", type=int, default=d.imgsz)
    g.add_argument("--batch", type=int, default=d.batch)
    g.add_argument("--optimizer", choices=("auto", "SGD", "Adam", "AdamW"), default=d.optimizer)
    g.add_argument("--lr0", type=float, help="initial learning rate")
    g.add_argument("--lrf", type=float, default=d.lrf, help="final LR as a fraction of lr0")
    g.add_argument("--cos-lr", action="store_true", help="cosine schedule (default linear)")
    g.add_argument("--warmup-epochs", type=float, default=d.warmup_epochs)
    g.add_argument("--momentum", type=float, default=d.momentum)
    g.add_argument("--weight-decay", type=float, default=d.weight_decay)
    g.add_argument(
        "--dropout",
        type=float,
        default=d.dropout,
        help="dropout (ultralytics applies it to classification heads only)",
    )
    g.add_argument("--patience", type=int, default=d.patience, help="early stopping (epochs)")
    g.add_argument("--seed", type=int, default=d.seed)
    g.add_argument("--fliplr", type=float, default=d.fliplr)
    g.add_argument("--scale", type=float, default=d.scale)
    g.add_argument("--translate", type=float, default=d.translate)
    g.add_argument("--hsv-h", type=float, default=d.hsv_h)
    g.add_argument("--hsv-s", type=float, default=d.hsv_s)
    g.add_argument("--hsv-v", type=float, default=d.hsv_v)
    g.add_argument("--mosaic", type=float, default=d.mosaic)
    g.add_argument("--device", default=d.device)
    g.add_argument("--project", default="runs/retrain", help="where run directories go")
    g.add_argument("--name", help="run directory name (default: timestamp)")
    e = p.add_argument_group("evaluation and promotion")
    e.add_argument(
        "--eval-imgsz",
        type=int,
        help="evaluate both models at this size (default: config detector.imgsz, else --imgsz)",
    )
    e.add_argument("--production", help="compare with this weights file instead of the registry")
    e.add_argument("--metric", choices=("map50", "map50_95"))
    e.add_argument("--margin", type=float)
    e.add_argument("--tolerance", type=float, help="largest AP drop on a monitored class")
    e.add_argument("--monitored", help="monitored classes, comma-separated")
    e.add_argument(
        "--no-registry",
        action="store_true",
        help="do not touch the registry (decision written to the run dir only)",
    )
    e.add_argument("--dry-run", action="store_true", help="register but never promote")
    p.set_defaults(func=cmd_retrain)

    p = sub.add_parser(
        "evaluate", help="mAP50, mAP50-95, per-class AP, precision/recall and speed on a split"
    )
    p.add_argument("weights")
    p.add_argument("--data", required=True, help="dataset folder")
    p.add_argument("--split", choices=("train", "val", "test"), help="default: test, else val")
    p.add_argument("--imgsz", type=int, help="default: the model's training size, else 640")
    p.add_argument("--conf", type=float, default=0.001)
    p.add_argument("--iou", type=float, default=0.7)
    p.add_argument("--device", default="auto")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_evaluate)


def cmd_evaluate(args: argparse.Namespace) -> int:
    os.environ.setdefault("YOLO_OFFLINE", "1")
    e = evaluate(
        args.weights,
        args.data,
        split=args.split,
        imgsz=args.imgsz,
        conf=args.conf,
        iou=args.iou,
        device=args.device,
        progress=progress("evaluating"),
    )
    print(json.dumps(e.to_dict(), indent=2) if args.json else format_evaluation(e))
    return 0


def cmd_retrain(args: argparse.Namespace) -> int:
    os.environ.setdefault("YOLO_OFFLINE", "1")
    from detectors.retrain.workflow import run_retrain  # noqa: PLC0415 (imports torch)

    cfg = config_from_args(args, "models")
    r = run_retrain(
        args.data,
        _train_options(args),
        detector=cfg.detector,
        models=cfg.models,
        redis=cfg.redis,
        promotion=_promotion(args, cfg),
        base=args.base,
        head_epochs=args.head_epochs,
        eval_imgsz=args.eval_imgsz or (cfg.detector.imgsz if args.config else None),
        production_weights=args.production,
        use_registry=not args.no_registry,
        dry_run=args.dry_run,
        project=args.project,
        name=args.name,
        log=print,
    )
    if r.promoted:
        verdict = "PROMOTED"
    elif r.decision.promote:
        verdict = "better, not promoted (--dry-run/--no-registry)"
    else:
        verdict = "production kept"
    print(f"decision: {verdict}")
    for reason in r.decision.reasons:
        print(f"  {reason}")
    t = r.training
    print(
        f"run: {t.run_dir} ({t.epochs_run} epoch(s), {t.seconds_per_epoch:.1f} "
        f"s/epoch); model card {r.card}"
    )
    return 0


def _promotion(args: argparse.Namespace, cfg: VigilConfig) -> PromotionConfig:
    """The config's promotion rules with --metric/--margin/--tolerance/--monitored applied."""
    updates: dict[str, object] = {}
    if args.metric:
        updates["metric"] = args.metric
    if args.margin is not None:
        updates["margin"] = args.margin
    if args.tolerance is not None:
        updates["class_tolerance"] = args.tolerance
    if args.monitored is not None:
        updates["monitored_classes"] = comma_list(args.monitored)
    return cfg.models.promotion.model_copy(update=updates)


def _train_options(args: argparse.Namespace) -> TrainOptions:
    """The training knobs (head-only epochs are the workflow's: they depend on the base)."""
    return TrainOptions(
        epochs=args.epochs,
        freeze=args.freeze,
        imgsz=args.imgsz,
        batch=args.batch,
        optimizer=args.optimizer,
        lr0=args.lr0,
        lrf=args.lrf,
        cos_lr=args.cos_lr,
        warmup_epochs=args.warmup_epochs,
        momentum=args.momentum,
        weight_decay=args.weight_decay,
        dropout=args.dropout,
        patience=args.patience,
        seed=args.seed,
        fliplr=args.fliplr,
        scale=args.scale,
        translate=args.translate,
        hsv_h=args.hsv_h,
        hsv_s=args.hsv_s,
        hsv_v=args.hsv_v,
        mosaic=args.mosaic,
        device=args.device,
    )
