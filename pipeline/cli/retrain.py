"""``vigil dataset ...``, ``vigil retrain``, ``vigil evaluate`` and ``vigil models list|promote|
rollback|drift``: the retraining loop on the command line (see docs/retraining.md).

Errors print one line on stderr and exit with status 2, like the rest of the CLI.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from pipeline.cli.support import fail as _fail


def register(sub: argparse._SubParsersAction, models: argparse._SubParsersAction) -> None:
    """Adds ``dataset``, ``retrain``, ``evaluate`` to ``sub`` and registry actions to ``models``."""
    _register_dataset(sub)
    _register_retrain(sub)
    _register_evaluate(sub)
    _register_models(models)


def _user_errors() -> tuple[type[BaseException], ...]:
    from detectors.retrain.registry import RegistryError

    return (ValueError, OSError, RegistryError)


def _config(path: str | None):
    from pipeline.config import VigilConfig, load_config

    return load_config(path) if path else VigilConfig()


def _progress(what: str):
    """A one-line progress indicator on stderr (only on a terminal)."""
    tty = sys.stderr.isatty()

    def show(done: int, total: int) -> None:
        if tty and total:
            print(f"\r{what}: {done}/{total}", end="" if done < total else "\n", file=sys.stderr)

    return show


def _floats(text: str, n: int, name: str) -> list[float]:
    try:
        values = [float(x) for x in text.split(",")]
    except ValueError:
        raise ValueError(f"{name} expects {n} comma-separated numbers, got {text!r}") from None
    if len(values) != n:
        raise ValueError(f"{name} expects {n} comma-separated numbers, got {text!r}")
    return values


# --------------------------------------------------------------------------------------------
# vigil dataset


def _register_dataset(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("dataset", help="collect, label, split and inspect training datasets")
    dsub = p.add_subparsers(dest="dataset_command", required=True, metavar="ACTION")

    c = dsub.add_parser(
        "collect",
        help="sample recorded footage into a dataset folder with the live collection policies",
        description="Each video is one camera. Frames are analysed at --analyze-fps with the "
        "detector (for the 'uncertain' and 'motion without detection' policies) and kept when a "
        "policy fires; near-duplicates are skipped and quotas apply, as in the live collector.",
    )
    c.add_argument("videos", nargs="+", metavar="VIDEO")
    c.add_argument("-o", "--output", required=True, help="dataset folder (created or extended)")
    c.add_argument("-c", "--config", help="take collection policy and detector from this config")
    c.add_argument("--camera", action="append", help="camera id per video (default: file name)")
    c.add_argument("--weights", help="detector weights (default: config / yolov5n)")
    c.add_argument("--no-detect", action="store_true", help="no detector: periodic and motion only")
    c.add_argument("--imgsz", type=int, help="detector inference size")
    c.add_argument("--device", help="auto, cpu, cuda:N")
    c.add_argument("--analyze-fps", type=float, default=2.0, help="frames analysed per second")
    c.add_argument("--periodic", type=float, help="one frame every N s (0: off)")
    c.add_argument("--min-interval", type=float, help="at most one frame per camera every N s")
    c.add_argument("--uncertain", help="confidence band LOW,HIGH (e.g. 0.25,0.5)")
    c.add_argument("--no-uncertain", action="store_true")
    c.add_argument("--motion", type=float, help="changed-pixel fraction that counts as motion")
    c.add_argument("--no-motion", action="store_true")
    c.add_argument("--dedup", type=int, help="near-duplicate perceptual-hash distance (0: off)")
    c.add_argument("--dedup-delta", type=int, help="near-duplicate thumbnail grey-level delta")
    c.add_argument("--max-images", type=int, help="per-camera quota")
    c.add_argument("--disk-budget-mb", type=float, help="disk budget for the folder")
    c.add_argument("--start", type=float, help="capture time of the first frame (epoch seconds)")
    c.set_defaults(func=_cmd_collect)

    lab = dsub.add_parser(
        "label",
        help="pseudo-label images with a teacher model (human labels are never replaced)",
    )
    lab.add_argument("dir")
    lab.add_argument("--teacher", required=True, help="teacher weights (e.g. yolov5n.pt)")
    lab.add_argument("--classes", help="dataset classes, comma-separated (default: the teacher's)")
    lab.add_argument("--conf", type=float, default=0.4, help="teacher confidence threshold")
    lab.add_argument("--iou", type=float, default=0.5)
    lab.add_argument("--imgsz", type=int, default=640)
    lab.add_argument("--device", default="auto")
    lab.add_argument("--overwrite", action="store_true", help="relabel teacher-labelled images")
    lab.set_defaults(func=_cmd_label)

    sp = dsub.add_parser(
        "split",
        help="split into train/val/test by camera and time (no near-duplicates across splits)",
    )
    sp.add_argument("dir")
    sp.add_argument("--val", type=float, default=0.2)
    sp.add_argument("--test", type=float, default=0.0)
    sp.add_argument("--by", choices=("time", "camera"), default="time")
    sp.add_argument("--segment", type=float, default=30.0, help="time segment length (s)")
    sp.add_argument("--gap", type=float, help="guard band at split boundaries (s)")
    sp.add_argument("--holdout-cameras", help="--by camera: cameras to hold out, comma-separated")
    sp.add_argument("--dedup", type=int, default=6, help="near-duplicate hash distance (0: off)")
    sp.add_argument("--seed", type=int, default=0)
    sp.set_defaults(func=_cmd_split)

    st = dsub.add_parser("stats", help="counts per camera, split, reason, label source, class")
    st.add_argument("dir")
    st.add_argument("--json", action="store_true")
    st.set_defaults(func=_cmd_stats)

    va = dsub.add_parser(
        "validate", help="check every image and label line; report problems with file and line"
    )
    va.add_argument("dir")
    va.set_defaults(func=_cmd_validate)

    ex = dsub.add_parser("export-coco", help="write labels as COCO JSON for annotation tools")
    ex.add_argument("dir")
    ex.add_argument("-o", "--output", required=True, help="COCO JSON file to write")
    ex.add_argument("--split", choices=("train", "val", "test"), help="only this split")
    ex.set_defaults(func=_cmd_export_coco)

    im = dsub.add_parser("import-coco", help="bring corrected labels back from COCO JSON")
    im.add_argument("dir")
    im.add_argument("file", help="COCO JSON file")
    im.add_argument("--add-classes", action="store_true", help="add unknown categories as classes")
    im.set_defaults(func=_cmd_import_coco)


def _policy(args: argparse.Namespace, cfg):
    from pydantic import ValidationError

    from detectors.retrain.config import CollectionPolicy

    data: dict[str, Any] = cfg.collection.policy.model_dump()
    if args.periodic is not None:
        data["periodic_s"] = args.periodic or None
    if args.min_interval is not None:
        data["min_interval_s"] = args.min_interval
    if args.uncertain:
        low, high = _floats(args.uncertain, 2, "--uncertain")
        data["uncertain"].update(enabled=True, low=low, high=high)
    if args.no_uncertain:
        data["uncertain"]["enabled"] = False
    if args.motion is not None:
        data["motion"].update(enabled=True, threshold=args.motion)
    if args.no_motion:
        data["motion"]["enabled"] = False
    for arg, key in (
        ("dedup", "dedup_distance"),
        ("dedup_delta", "dedup_pixel_delta"),
        ("max_images", "max_images"),
    ):
        if getattr(args, arg) is not None:
            data[key] = getattr(args, arg)
    try:
        return CollectionPolicy.model_validate(data)
    except ValidationError as e:
        errs = "; ".join(f"{'.'.join(map(str, x['loc']))}: {x['msg']}" for x in e.errors())
        raise ValueError(f"invalid collection options: {errs}") from None


def _cmd_collect(args: argparse.Namespace) -> int:
    try:
        from detectors.retrain.collector import collect_videos

        cfg = _config(args.config)
        policy = _policy(args, cfg)
        detector = None
        if not args.no_detect:
            from detectors.engine import Detector

            dcfg = cfg.detector.model_copy(update={"tracker": "none"})
            updates = {
                k: v
                for k, v in (
                    ("weights", args.weights),
                    ("imgsz", args.imgsz),
                    ("device", args.device),
                )
                if v is not None
            }
            detector = Detector(dcfg.model_copy(update=updates))
        collector, reports = collect_videos(
            args.videos,
            args.output,
            policy,
            detector=detector,
            analyze_fps=args.analyze_fps,
            camera_ids=args.camera,
            start_ts=args.start,
            disk_budget_mb=args.disk_budget_mb or cfg.collection.disk_budget_mb,
            jpeg_quality=cfg.collection.jpeg_quality,
        )
        for r in reports:
            print(
                f"{r.camera}: {r.frames_read} frame(s) read, {r.frames_analyzed} analysed, "
                f"{r.saved} kept"
            )
        s = collector.stats
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(s.by_reason.items())) or "none"
        print(
            f"{s.saved} frame(s) kept in {collector.root} ({reasons}); {s.duplicates} "
            f"near-duplicate(s) skipped, {s.evicted} dropped for quota/budget; "
            f"{collector.count()} image(s), {collector.bytes_used / 1e6:.1f} MB in the folder"
        )
        return 0
    except _user_errors() as e:
        return _fail(e)


def _cmd_label(args: argparse.Namespace) -> int:
    try:
        from detectors.retrain import dataset as ds

        classes = (
            [c.strip() for c in args.classes.split(",") if c.strip()] if args.classes else None
        )
        r = ds.label(
            args.dir,
            args.teacher,
            classes=classes,
            conf=args.conf,
            iou=args.iou,
            imgsz=args.imgsz,
            device=args.device,
            overwrite=args.overwrite,
            progress=_progress("labelling"),
        )
        for p in r.problems:
            print(f"skipped {p}", file=sys.stderr)
        print(
            f"labelled {r.labeled} image(s) with {r.boxes} box(es) "
            f"(classes: {', '.join(r.names.values())}); kept {r.skipped_human} human-labelled "
            f"and {r.skipped_existing} already labelled; {len(r.problems)} problem(s)"
        )
        return 0
    except _user_errors() as e:
        return _fail(e)


def _cmd_split(args: argparse.Namespace) -> int:
    try:
        from detectors.retrain import dataset as ds

        r = ds.split(
            args.dir,
            val=args.val,
            test=args.test,
            by=args.by,
            segment_s=args.segment,
            gap_s=args.gap,
            holdout_cameras=[c.strip() for c in args.holdout_cameras.split(",")]
            if args.holdout_cameras
            else None,
            dedup_distance=args.dedup,
            seed=args.seed,
        )
        print(
            "split: "
            + ", ".join(f"{k} {v}" for k, v in r.counts.items())
            + f"; {r.excluded} excluded (split boundaries, near-duplicates of training frames)"
        )
        for cam, c in sorted(r.per_camera.items()):
            print(f"  {cam}: " + ", ".join(f"{k} {v}" for k, v in c.items()))
        return 0
    except _user_errors() as e:
        return _fail(e)


def _cmd_stats(args: argparse.Namespace) -> int:
    try:
        from detectors.retrain import dataset as ds

        s = ds.stats(args.dir)
        print(json.dumps(s, indent=2, default=str) if args.json else ds.format_stats(s))
        return 0
    except _user_errors() as e:
        return _fail(e)


def _cmd_validate(args: argparse.Namespace) -> int:
    try:
        from detectors.retrain import dataset as ds

        r = ds.validate(args.dir, require_labels=False)
        for p in r.problems:
            print(p)
        print(r.summary())
        return 1 if r.problems else 0
    except _user_errors() as e:
        return _fail(e)


def _cmd_export_coco(args: argparse.Namespace) -> int:
    try:
        from detectors.retrain import dataset as ds

        r = ds.export_coco(args.dir, args.output, split_name=args.split)
        for p in r["problems"]:
            print(f"skipped {p}", file=sys.stderr)
        print(f"wrote {args.output}: {r['images']} image(s), {r['annotations']} annotation(s)")
        return 0
    except _user_errors() as e:
        return _fail(e)


def _cmd_import_coco(args: argparse.Namespace) -> int:
    try:
        from detectors.retrain import dataset as ds

        r = ds.import_coco(args.dir, args.file, add_classes=args.add_classes)
        for p in r["problems"]:
            print(f"skipped {p}", file=sys.stderr)
        print(f"imported labels for {r['images']} image(s), {r['boxes']} box(es)")
        return 0
    except _user_errors() as e:
        return _fail(e)


# --------------------------------------------------------------------------------------------
# vigil retrain / evaluate


def _register_retrain(sub: argparse._SubParsersAction) -> None:
    from detectors.retrain.train import TrainOptions

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
    p.set_defaults(func=_cmd_retrain)


def _register_evaluate(sub: argparse._SubParsersAction) -> None:
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
    p.set_defaults(func=_cmd_evaluate)


def _cmd_evaluate(args: argparse.Namespace) -> int:
    os.environ.setdefault("YOLO_OFFLINE", "1")
    try:
        from detectors.retrain.evaluate import evaluate, format_evaluation

        e = evaluate(
            args.weights,
            args.data,
            split=args.split,
            imgsz=args.imgsz,
            conf=args.conf,
            iou=args.iou,
            device=args.device,
            progress=_progress("evaluating"),
        )
        print(json.dumps(e.to_dict(), indent=2) if args.json else format_evaluation(e))
        return 0
    except _user_errors() as e:
        return _fail(e)


def _cmd_retrain(args: argparse.Namespace) -> int:
    os.environ.setdefault("YOLO_OFFLINE", "1")
    try:
        return _retrain(args)
    except _user_errors() as e:
        return _fail(e)


def _retrain(args: argparse.Namespace) -> int:
    from detectors.retrain import dataset as ds
    from detectors.retrain.evaluate import format_evaluation, propose
    from detectors.retrain.registry import ModelRegistry
    from detectors.retrain.train import TrainOptions, train, write_model_card

    cfg = _config(args.config)
    promo = cfg.models.promotion
    updates: dict[str, Any] = {}
    if args.metric:
        updates["metric"] = args.metric
    if args.margin is not None:
        updates["margin"] = args.margin
    if args.tolerance is not None:
        updates["class_tolerance"] = args.tolerance
    if args.monitored is not None:
        updates["monitored_classes"] = [c.strip() for c in args.monitored.split(",") if c.strip()]
    promo = promo.model_copy(update=updates)
    ds.class_names(args.data)  # fail before anything slow when data.yaml is missing
    registry = None if args.no_registry else ModelRegistry(cfg.redis, cfg.models)
    # reach the registry before training: a missing Redis should not waste an hour of training
    prod_mv = registry.production() if registry is not None else None
    base = args.base
    if base is None:
        base = str(registry.fetch(prod_mv)) if prod_mv is not None else cfg.detector.weights
    legacy = _is_legacy(base)
    opts = TrainOptions(
        epochs=args.epochs,
        head_epochs=args.head_epochs if args.head_epochs is not None else (1 if legacy else 0),
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
    result = train(args.data, base, opts, project=args.project, name=args.name)
    eval_imgsz = args.eval_imgsz or (cfg.detector.imgsz if args.config else opts.imgsz)
    prop = propose(
        result.weights,
        args.data,
        registry=registry,
        production_weights=args.production,
        cfg=promo,
        imgsz=eval_imgsz,
        device=opts.device,
        dry_run=args.dry_run,
        train_info={
            "run_dir": str(result.run_dir),
            "base": result.base,
            "base_kind": result.base_kind,
            "seconds_per_epoch": result.seconds_per_epoch,
            "epochs_run": result.epochs_run,
        },
    )
    print(format_evaluation(prop.candidate))
    if prop.production is not None:
        print(format_evaluation(prop.production))
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
    verdict = (
        "PROMOTED"
        if record["promoted"]
        else (
            "better, not promoted (--dry-run/--no-registry)"
            if decision.promote
            else "production kept"
        )
    )
    print(f"decision: {verdict}")
    for r in decision.reasons:
        print(f"  {r}")
    print(
        f"run: {result.run_dir} ({result.epochs_run} epoch(s), {result.seconds_per_epoch:.1f} "
        f"s/epoch); model card {card}"
    )
    return 0


def _is_legacy(weights: str) -> bool:
    from detectors import yolov5_legacy
    from detectors.loading import resolve_weights

    try:
        src = resolve_weights(weights)
    except ValueError:
        return False
    return isinstance(src, Path) and src.is_file() and yolov5_legacy.is_legacy_yolov5(src)


# --------------------------------------------------------------------------------------------
# vigil models list | promote | rollback | drift


def _register_models(msub: argparse._SubParsersAction) -> None:
    p = msub.add_parser("list", help="registered model versions; * marks production")
    p.add_argument("-c", "--config", help="Vigil config (Redis, models.store)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_models_list)

    p = msub.add_parser(
        "promote",
        help="make a version (or a weights file, registered first) the production model",
    )
    p.add_argument("ref", help="version id/prefix, vN, or a weights file")
    p.add_argument("-c", "--config")
    p.add_argument("--reason", default="manual promotion")
    p.add_argument("--no-verify", action="store_true", help="skip the load check (not advised)")
    p.set_defaults(func=_cmd_models_promote)

    p = msub.add_parser("rollback", help="go back to the previous production model")
    p.add_argument("-c", "--config")
    p.add_argument("--reason", default="")
    p.set_defaults(func=_cmd_models_rollback)

    p = msub.add_parser("drift", help="per-camera drift report: is retraining due?")
    p.add_argument("-c", "--config")
    p.add_argument("--json", action="store_true")
    p.add_argument(
        "--exit-code", action="store_true", help="exit 1 when retraining is due (for cron)"
    )
    p.set_defaults(func=_cmd_models_drift)


def _registry(args: argparse.Namespace):
    from detectors.retrain.registry import ModelRegistry

    cfg = _config(args.config)
    return cfg, ModelRegistry(cfg.redis, cfg.models)


def _cmd_models_list(args: argparse.Namespace) -> int:
    try:
        from dataclasses import asdict

        from detectors.retrain.registry import format_versions

        _, reg = _registry(args)
        if args.json:
            print(
                json.dumps(
                    {
                        "production": reg.production_version(),
                        "versions": [asdict(v) for v in reg.list()],
                        "history": reg.history(20),
                        "workers": reg.workers(),
                    },
                    indent=2,
                )
            )
        else:
            print(format_versions(reg))
        return 0
    except _user_errors() as e:
        return _fail(e)


def _cmd_models_promote(args: argparse.Namespace) -> int:
    try:
        _, reg = _registry(args)
        mv = reg.get(args.ref)
        if mv is None:
            if not Path(args.ref).expanduser().is_file():
                raise ValueError(f"{args.ref!r} is neither a registered version nor a weights file")
            mv = reg.register(args.ref, verify=not args.no_verify)
        elif not args.no_verify:
            from detectors.loading import load_model

            load_model(str(reg.fetch(mv)), device="cpu")  # refuse what workers would refuse
        t0 = time.time()
        reg.promote(mv.version, reason=args.reason)
        print(
            f"promoted {mv.label} to production at {time.strftime('%H:%M:%S', time.localtime(t0))}"
        )
        return 0
    except _user_errors() as e:
        return _fail(e)


def _cmd_models_rollback(args: argparse.Namespace) -> int:
    try:
        _, reg = _registry(args)
        mv = reg.rollback(reason=args.reason)
        print(f"rolled back: production is {mv.label} again")
        return 0
    except _user_errors() as e:
        return _fail(e)


def _cmd_models_drift(args: argparse.Namespace) -> int:
    try:
        from detectors.retrain import drift

        cfg, reg = _registry(args)
        rows = drift.report(reg, cfg.models.drift.threshold, cfg.models.drift.min_frames)
        print(drift.dumps(rows) if args.json else drift.format_report(rows))
        return 1 if args.exit_code and any(r.due for r in rows) else 0
    except _user_errors() as e:
        return _fail(e)
