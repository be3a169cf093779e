"""``vigil models import-yolov5 | list | promote | rollback | drift``: detector weights and the
model registry (see docs/retraining.md).

Errors print one line on stderr and exit with status 2, like the rest of the CLI.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict
from pathlib import Path

from pipeline.cli.support import USER_ERRORS, config_from_args, fail


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


def cmd_import_yolov5(args: argparse.Namespace) -> int:
    try:
        from detectors.loading import import_yolov5  # noqa: PLC0415 (imports torch)

        src, out = Path(args.src).expanduser(), Path(args.output).expanduser()
        if src.exists() and out.exists() and src.resolve() == out.resolve():
            raise ValueError("the output must differ from the source (-o OUT.pt)")
        t0 = time.perf_counter()
        import_yolov5(src, out)
        print(f"converted {src} -> {out} in {time.perf_counter() - t0:.1f} s")
        return 0
    except USER_ERRORS as e:
        return fail(e)


def _registry(args: argparse.Namespace):
    """The config and its model registry."""
    from detectors.retrain.registry import ModelRegistry  # noqa: PLC0415 (imports torch)

    cfg = config_from_args(args)
    return cfg, ModelRegistry(cfg.redis, cfg.models)


def cmd_list(args: argparse.Namespace) -> int:
    try:
        from detectors.retrain.registry import format_versions  # noqa: PLC0415 (imports torch)

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
    except USER_ERRORS as e:
        return fail(e)


def cmd_promote(args: argparse.Namespace) -> int:
    try:
        _, reg = _registry(args)
        mv = reg.get(args.ref)
        if mv is None:
            if not Path(args.ref).expanduser().is_file():
                raise ValueError(f"{args.ref!r} is neither a registered version nor a weights file")
            mv = reg.register(args.ref, verify=not args.no_verify)
        elif not args.no_verify:
            from detectors.loading import load_model  # noqa: PLC0415 (imports torch)

            load_model(str(reg.fetch(mv)), device="cpu")  # refuse what workers would refuse
        t0 = time.time()
        reg.promote(mv.version, reason=args.reason)
        print(
            f"promoted {mv.label} to production at {time.strftime('%H:%M:%S', time.localtime(t0))}"
        )
        return 0
    except USER_ERRORS as e:
        return fail(e)


def cmd_rollback(args: argparse.Namespace) -> int:
    try:
        _, reg = _registry(args)
        mv = reg.rollback(reason=args.reason)
        print(f"rolled back: production is {mv.label} again")
        return 0
    except USER_ERRORS as e:
        return fail(e)


def cmd_drift(args: argparse.Namespace) -> int:
    try:
        from detectors.retrain import drift  # noqa: PLC0415 (imports torch)

        cfg, reg = _registry(args)
        rows = drift.report(reg, cfg.models.drift.threshold, cfg.models.drift.min_frames)
        print(drift.dumps(rows) if args.json else drift.format_report(rows))
        return 1 if args.exit_code and any(r.due for r in rows) else 0
    except USER_ERRORS as e:
        return fail(e)
