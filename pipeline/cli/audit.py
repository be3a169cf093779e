"""``vigil audit tail [-n N] [--follow] [--json]``: who changed a camera, a rule, a user or a model,
when and from where (the audit trail in Redis, docs/redis.md)."""

from __future__ import annotations

import argparse
import json
import threading

from pipeline.cli.support import config_args, config_from_args
from pipeline.common.audit import AuditLog, format_entry
from pipeline.common.lifecycle import install_signal_handlers


def register(sub: argparse._SubParsersAction) -> None:
    audit = sub.add_parser(
        "audit", help="the audit trail: who changed cameras, rules, users, models"
    ).add_subparsers(dest="audit_command", required=True, metavar="ACTION")
    p = audit.add_parser(
        "tail",
        help="the newest entries, oldest first",
        description="Print the newest audit entries (time UTC, who, via, address, action, "
        "target, details). --follow then waits for new ones until Ctrl-C.",
    )
    config_args(p, required=False)
    p.add_argument("-n", type=int, default=20, help="how many entries (default 20)")
    p.add_argument(
        "-f", "--follow", action="store_true", help="then print new entries as they come"
    )
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.set_defaults(func=cmd_tail)


def cmd_tail(args: argparse.Namespace) -> int:
    log = AuditLog(config_from_args(args, "console").redis)

    def show(e: dict) -> None:
        print(json.dumps(e, sort_keys=True) if args.json else format_entry(e), flush=True)

    entries = log.tail(max(1, args.n))
    for e in entries:
        show(e)
    if not entries and not args.follow and not args.json:
        print("no audit entries yet")
    if args.follow:
        stop = threading.Event()
        install_signal_handlers(stop)
        for e in log.follow(entries[-1]["id"] if entries else "$", stop=stop):
            show(e)
    return 0
