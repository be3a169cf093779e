"""The ``vigil`` command line: one obvious entry point per task.

One module per verb group registers its subcommands (``register(subparsers)``); this file only
wires them and turns user errors (:class:`pipeline.common.errors.UserError`: bad config, broker
down, unreadable weights, ...) into one line and exit code 2. Heavy libraries (torch,
ultralytics) are imported inside the handlers that need them, to keep ``vigil --help`` fast.
"""

from __future__ import annotations

import argparse
import logging
import sys

from pipeline.cli import alerts, detect, run
from pipeline.common.errors import UserError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vigil", description="Vigil smart-surveillance pipeline")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    for group in (run, detect, alerts):
        group.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("kafka", "ultralytics"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        return int(args.func(args) or 0)
    except UserError as e:
        print(f"vigil: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
