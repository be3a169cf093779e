"""The ``vigil`` command line: one obvious entry point per task.

One module per verb group registers its subcommands (``register(subparsers)``) with handlers
named ``cmd_<verb>``: run (run, ingest), cameras, detect, models, dataset, retrain (retrain,
evaluate), alerts, rules; the camera simulator, the benchmark and the demo register their own.
This file only wires them and turns user errors (:class:`pipeline.common.errors.UserError`: bad
config, broker down, unreadable weights, ...) into one line and exit code 2. Heavy libraries
(torch, ultralytics) are imported inside the handlers that need them, to keep ``vigil --help``
fast.
"""

from __future__ import annotations

import argparse
import logging
import sys

from pipeline import bench, camera_sim, demo
from pipeline.cli import (
    alerts,
    audit,
    cameras,
    console,
    dataset,
    detect,
    models,
    notify,
    retrain,
    rules,
    run,
)
from pipeline.common.errors import UserError
from pipeline.common.kafka import quiet_library_logs

# In the order ``vigil --help`` lists them.
GROUPS = (
    run,
    cameras,
    console,
    camera_sim,
    bench,
    demo,
    detect,
    models,
    dataset,
    retrain,
    alerts,
    rules,
    notify,
    audit,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vigil", description="Vigil smart-surveillance pipeline")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    for group in GROUPS:
        group.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("ultralytics").setLevel(logging.WARNING)
    quiet_library_logs(verbose=args.verbose)
    try:
        return int(args.func(args) or 0)
    except UserError as e:
        print(f"vigil: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
