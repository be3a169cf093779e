"""The ``vigil`` command line: one obvious entry point per task.

Each area registers its own subcommands (``register(subparsers)``) so this file only wires them;
heavy imports (torch, ultralytics) happen inside the handlers to keep ``vigil --help`` fast.
"""

from __future__ import annotations

import argparse
import logging
import sys

from pipeline.config import ConfigError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vigil", description="Vigil smart-surveillance pipeline")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    from detectors import commands as detector_commands
    from pipeline import commands as pipeline_commands

    pipeline_commands.register(sub)
    detector_commands.register(sub)
    try:
        from alerts import commands as alert_commands
    except ImportError:  # alert service not installed in this build
        alert_commands = None
    if alert_commands is not None:
        alert_commands.register(sub)
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
    from pipeline.kafka_io import KafkaUnavailable

    user_errors: tuple[type[Exception], ...] = (ConfigError, KafkaUnavailable)
    try:
        from detectors.errors import WeightsError

        user_errors += (WeightsError,)
    except ImportError:
        pass
    try:
        return int(args.func(args) or 0)
    except user_errors as e:
        print(f"vigil: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
