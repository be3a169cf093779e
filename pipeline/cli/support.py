"""Helpers every ``vigil`` subcommand shares: the config from ``-c``/``--bootstrap``, the
one-line error with exit code 2, and the small argument and output helpers the groups repeat."""

from __future__ import annotations

import argparse
import getpass
import os
import socket
import sys
from collections.abc import Callable
from typing import Any

import redis
from pydantic import ValidationError

from pipeline.common.audit import AuditLog
from pipeline.common.config import validation_messages
from pipeline.common.redis import Component
from pipeline.config import VigilConfig, load_config


def config_from_args(args: argparse.Namespace, component: Component | None = None) -> VigilConfig:
    """The config of ``-c``; with ``component``, as that component runs it (its own Redis ACL
    user from ``redis.users``, so a command can do only what its component may)."""
    cfg = load_config(args.config) if getattr(args, "config", None) else VigilConfig()
    if getattr(args, "bootstrap", None):
        cfg.kafka.bootstrap_servers = args.bootstrap
    return cfg if component is None else cfg.for_component(component)


def config_args(p: argparse.ArgumentParser, required: bool = True) -> None:
    """``-c``/``--bootstrap`` (and ``--metrics-port`` for the long-running processes)."""
    p.add_argument("-c", "--config", required=required, help="vigil.yaml")
    p.add_argument(
        "--bootstrap", default=None, help="Kafka bootstrap servers (overrides the config)"
    )
    if required:
        p.add_argument("--metrics-port", type=int, default=None, help="Prometheus /metrics port")


def fail(message: object) -> int:
    print(f"vigil: {message}", file=sys.stderr)
    return 2


def comma_list(text: str) -> list[str]:
    """``"a, b,,c"`` -> ``["a", "b", "c"]`` (class names, camera ids...)."""
    return [item.strip() for item in text.split(",") if item.strip()]


def validation_errors(e: ValidationError, prefix: str = "") -> str:
    """pydantic's errors on one line: ``<prefix>key.path: message; ...``."""
    return "; ".join(f"{prefix}{loc}: {msg}" for loc, msg in validation_messages(e))


def progress(what: str) -> Callable[[int, int], None]:
    """A one-line progress indicator on stderr (only on a terminal)."""
    tty = sys.stderr.isatty()

    def show(done: int, total: int) -> None:
        if tty and total:
            print(f"\r{what}: {done}/{total}", end="" if done < total else "\n", file=sys.stderr)

    return show


def os_user() -> str:
    """Who runs this command: the OS user (``uid N`` where the name is unknown)."""
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return f"uid {os.getuid()}"


def audit(
    cfg: VigilConfig, action: str, target: str, details: dict[str, Any] | None = None
) -> None:
    """Record a change made from the command line in the audit trail (who: the OS user, from:
    this host). After the change: Redis away is one warning line, not a failed command."""
    try:
        # the trail is the console's: its Redis user writes it (redis.users.console)
        AuditLog(cfg.for_component("console").redis).record(
            who=os_user(),
            via="cli",
            address=socket.gethostname(),
            action=action,
            target=target,
            details=details,
        )
    except (redis.RedisError, ValueError) as e:
        print(
            f"vigil: warning: {action} {target} is not in the audit trail "
            f"(Redis: {type(e).__name__})",
            file=sys.stderr,
        )
