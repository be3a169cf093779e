"""``vigil models import-yolov5 | list | promote | rollback | drift | quantize``: detector
weights and the model registry (see docs/retraining.md), INT8 and the precision gate
(docs/performance.md).

Errors print one line on stderr and exit with status 2, like the rest of the CLI.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict
from pathlib import Path

from pipeline.cli.support import audit, config_from_args
from pipeline.common.errors import UsageError


def register(sub: argparse._SubParsersAction) -> None:
    models = sub.add_parser("models", help="manage detector weights")
    msub = models.add_subparsers(dest="models_command", required=True, metavar="ACTION")

    p = msub.add_parser(
        "import-yolov5",
        help="convert a legacy YOLOv5 .pt checkpoint into an ultralytics checkpoint",
        description="Convert a YOLOv5 v6 checkpoint (yolov5n.pt, your best.pt...) without running "
        "its pickled code; the output loads with ultralytics.YOLO (Vigil must be importable).",
    )
    p.add_argument("src", help="YOLOv5 checkpoint (.pt)")
    p.add_argument("-o", "--output", required=True, help="where to write the converted .pt")
    p.set_defaults(func=cmd_import_yolov5)

    p = msub.add_parser("list", help="registered model versions; * marks production")
    p.add_argument("-c", "--config", help="Vigil config (Redis, models.store)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_list)

    p = msub.add_parser(
        "promote",
        help="make a version (or a weights file, registered first) the production model",
        description="Load-check the weights (torch.load(weights_only=True)), then sign the "
        "registry entry with models.signing_key_file (created on first use) and make it "
        "production; ingest workers load only signed entries (docs/retraining.md).",
    )
    p.add_argument("ref", help="version id/prefix, vN, or a weights file")
    p.add_argument("-c", "--config")
    p.add_argument("--reason", default="manual promotion")
    p.add_argument("--no-verify", action="store_true", help="skip the load check (not advised)")
    p.set_defaults(func=cmd_promote)

    p = msub.add_parser("rollback", help="go back to the previous production model")
    p.add_argument("-c", "--config")
    p.add_argument("--reason", default="")
    p.set_defaults(func=cmd_rollback)

    p = msub.add_parser("drift", help="per-camera drift report: is retraining due?")
    p.add_argument("-c", "--config")
    p.add_argument("--json", action="store_true")
    p.add_argument(
        "--exit-code", action="store_true", help="exit 1 when retraining is due (for cron)"
    )
    p.set_defaults(func=cmd_drift)

    p = msub.add_parser(
        "quantize",
        help="make the INT8 model (NNCF) and gate int8/bf16 on held-out mAP against f32",
        description="Quantize detector.weights to INT8 for the OpenVINO backend (NNCF, preset "
        "mixed) on calibration images from the collection dataset (collection.dir), or the "
        "assets footage when there is none; then score f32, bf16 and int8 on held-out labelled "
        "frames. A precision is used by `detector.precision: int8|auto` only if its mAP50 and "
        "mAP50-95 are within --tolerance points of f32's; the f32 model is never replaced.",
    )
    p.add_argument("-c", "--config", help="Vigil config (detector.weights, imgsz, collection.dir)")
    p.add_argument("--weights", help="weights to quantize (default: the config's detector.weights)")
    p.add_argument("--imgsz", type=int, help="input size (default: the config's detector.imgsz)")
    p.add_argument("--calibration", help="folder of calibration images (default: collection.dir)")
    p.add_argument("--images", type=int, default=300, help="calibration images (default 300)")
    p.add_argument(
        "--heldout-frames",
        type=int,
        default=60,
        help="footage frames the gate scores on when there is no collection dataset",
    )
    p.add_argument("--tolerance", type=float, default=1.0, help="mAP points (default 1.0)")
    p.add_argument(
        "--no-accuracy-control",
        action="store_true",
        help="when plain quantization fails the gate, do not retry with NNCF's "
        "quantize_with_accuracy_control",
    )
    p.add_argument("--skip-bf16", action="store_true", help="gate int8 only")
    p.add_argument("--json", action="store_true", help="print the gate record as JSON")
    p.set_defaults(func=cmd_quantize)


def cmd_import_yolov5(args: argparse.Namespace) -> int:
    from detectors.loading import import_yolov5  # noqa: PLC0415 (imports torch)

    src, out = Path(args.src).expanduser(), Path(args.output).expanduser()
    if src.exists() and out.exists() and src.resolve() == out.resolve():
        raise UsageError(f"-o {out}: the output must differ from the source {src}")
    t0 = time.perf_counter()
    import_yolov5(src, out)
    print(f"converted {src} -> {out} in {time.perf_counter() - t0:.1f} s")
    return 0


def _registry(args: argparse.Namespace):
    """The config and its model registry."""
    from detectors.retrain.model_registry import ModelRegistry  # noqa: PLC0415 (imports torch)

    cfg = config_from_args(args, "models")
    return cfg, ModelRegistry(cfg.redis, cfg.models)


def cmd_list(args: argparse.Namespace) -> int:
    from detectors.retrain.model_registry import format_versions  # noqa: PLC0415 (imports torch)

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


def cmd_promote(args: argparse.Namespace) -> int:
    from detectors.retrain.promotion import promote_checked  # noqa: PLC0415 (imports torch)

    cfg, reg = _registry(args)
    t0 = time.time()
    mv = promote_checked(reg, args.ref, reason=args.reason, verify=not args.no_verify)
    print(f"promoted {mv.label} to production at {time.strftime('%H:%M:%S', time.localtime(t0))}")
    audit(cfg, "model.promote", mv.label, {"ref": args.ref, "reason": args.reason})
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    cfg, reg = _registry(args)
    mv = reg.rollback(reason=args.reason)
    print(f"rolled back: production is {mv.label} again")
    audit(cfg, "model.rollback", mv.label, {"reason": args.reason})
    return 0


def cmd_drift(args: argparse.Namespace) -> int:
    from detectors.retrain import drift  # noqa: PLC0415 (imports torch)

    cfg, reg = _registry(args)
    rows = drift.report(reg, cfg.models.drift.threshold, cfg.models.drift.min_frames)
    print(drift.dumps(rows) if args.json else drift.format_report(rows))
    return 1 if args.exit_code and any(r.due for r in rows) else 0


def _record_gate_in_registry(cfg, gate: dict) -> str:
    """Put the gate's figures on the weights' registry version, next to its evaluation report.

    The JSON next to the export is what the detector reads; the registry copy is the report, so
    a registry that cannot be reached is said, not fatal.
    """
    from detectors.retrain.model_registry import ModelRegistry, RegistryError  # noqa: PLC0415

    try:
        reg = ModelRegistry(cfg.redis, cfg.models)
        try:
            mv = reg.record_precision_gate(gate)
        finally:
            reg.close()
    except RegistryError as e:
        return f"not recorded ({e})"
    if mv is None:
        return "not recorded (these weights are not a registered version; the JSON has the figures)"
    return f"recorded on {mv.label}"


def cmd_quantize(args: argparse.Namespace) -> int:
    from detectors.retrain.precision_gate import run_gate  # noqa: PLC0415 (imports torch, nncf)
    from pipeline.common.assets import CAMERA_FILES, footage  # noqa: PLC0415 (only for this verb)

    cfg = config_from_args(args, "models")
    if args.images < 1:
        raise UsageError(f"--images must be at least 1, got {args.images}")
    if args.imgsz is not None and (args.imgsz < 32 or args.imgsz % 32):
        raise UsageError(f"--imgsz must be a multiple of 32 (the model stride), got {args.imgsz}")
    weights = args.weights or cfg.detector.weights
    imgsz = args.imgsz or cfg.detector.imgsz
    collection = Path(cfg.collection.dir).expanduser()
    say = (lambda _m: None) if args.json else print
    result = run_gate(
        weights,
        imgsz,
        calibration=args.calibration,
        collection_dir=collection if collection.is_dir() else None,
        footage_files=[footage(n) for n in dict.fromkeys(CAMERA_FILES)],
        images=args.images,
        tolerance=args.tolerance,
        precisions=("int8",) if args.skip_bf16 else ("bf16", "int8"),
        accuracy_control=not args.no_accuracy_control,
        heldout_frames=args.heldout_frames,
        say=say,
    )
    rec = result.record
    registered = _record_gate_in_registry(cfg, rec.to_dict())
    if args.json:
        print(
            json.dumps(
                {**rec.to_dict(), "record": str(result.path), "registry": registered},
                indent=1,
            )
        )
        return 0
    print(f"gate record: {result.path}")
    print(f"model registry: {registered}")
    for name, r in rec.results.items():
        print(f"  {name}: {'passed' if r['passed'] else 'REFUSED'}: {r['reason']}")
    passed = rec.passed()
    print(
        "detector.precision: int8 | auto may now use: "
        + (", ".join(passed) if passed else "nothing (f32 stays)")
    )
    return 0
