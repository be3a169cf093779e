"""The ``vigil`` command line: one obvious entry point per task.

One module per verb group registers its subcommands (``register(subparsers)``) with handlers
named ``cmd_<verb>``: run (run, ingest), record, cameras, detect, models, dataset, retrain (retrain,
evaluate), alerts, rules; the camera simulator, the benchmark and the demo register their own.
This file only wires them and turns user errors (:class:`pipeline.common.errors.UserError`: bad
config, broker down, unreadable weights, ...) into one line and exit code 2. Heavy libraries
(torch, ultralytics) are imported inside the handlers that need them, to keep ``vigil --help``
fast.

The groups are loaded lazily (:data:`GROUPS`): ``vigil bench ...`` imports the bench alone, not
the console, the notifier or the Kafka and Redis clients, so a command runs on a machine that
only has what it needs (deploy/gpu/bench_gpu.sh on a bare GPU machine). ``vigil --help`` loads
every group; one that cannot be imported there is listed with the reason. A command missing
from the table loads every group, so a new group works before it is added here.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from types import ModuleType

from pipeline.common.errors import UserError

# The module registering each verb group and the commands it registers, in the order
# ``vigil --help`` lists them (tests/pipeline/test_cli_imports.py checks the commands).
GROUPS: dict[str, tuple[str, ...]] = {
    "pipeline.cli.run": ("run", "ingest"),
    "pipeline.cli.cameras": ("cameras",),
    "pipeline.cli.console": ("console", "users"),
    "pipeline.camera_sim": ("camera-sim",),
    "pipeline.bench": ("bench",),
    "pipeline.demo": ("demo",),
    "pipeline.cli.detect": ("detect",),
    "pipeline.cli.models": ("models",),
    "pipeline.cli.dataset": ("dataset",),
    "pipeline.cli.retrain": ("retrain", "evaluate"),
    "pipeline.cli.alerts": ("alerts",),
    "pipeline.cli.rules": ("rules",),
    "pipeline.cli.notify": ("notify",),
    "pipeline.cli.audit": ("audit",),
    "pipeline.cli.recordings": ("recordings",),
    "pipeline.cli.record": ("record",),
    "pipeline.cli.clips": ("clips",),
}


def _command(argv: list[str]) -> str | None:
    """The command word of ``argv`` (the first argument that is not an option)."""
    return next((a for a in argv if not a.startswith("-")), None)


def _groups_for(argv: list[str] | None) -> list[str]:
    """The group modules to load for ``argv``: the one owning its command, else all of them."""
    if argv is not None:
        word = _command(argv)
        for name, commands in GROUPS.items():
            if word in commands:
                return [name]
    return list(GROUPS)


def _unavailable(sub: argparse._SubParsersAction, name: str, error: ImportError) -> None:
    """List a group that cannot be imported here (``vigil --help`` on a partial install)."""

    def fail(_args: argparse.Namespace) -> int:
        raise UserError(f"{name} cannot run here: {error}")

    for command in GROUPS[name]:
        p = sub.add_parser(command, help=f"(unavailable here: {error})", add_help=False)
        p.add_argument("rest", nargs=argparse.REMAINDER)
        p.set_defaults(func=fail)


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The ``vigil`` parser; with ``argv``, only the group its command belongs to is loaded."""
    parser = argparse.ArgumentParser(prog="vigil", description="Vigil smart-surveillance pipeline")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    names = _groups_for(argv)
    for name in names:
        try:
            group: ModuleType = importlib.import_module(name)
        except ImportError as e:
            if len(names) == 1:
                raise
            _unavailable(sub, name, e)
            continue
        group.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("ultralytics").setLevel(logging.WARNING)
    # pipeline.common.kafka.quiet_library_logs, without importing the Kafka client here
    logging.getLogger("kafka").setLevel(logging.WARNING if args.verbose else logging.CRITICAL)
    try:
        return int(args.func(args) or 0)
    except UserError as e:
        print(f"vigil: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
