"""Helpers every ``vigil`` subcommand shares: the config from ``-c``/``--bootstrap`` and the
one-line error with exit code 2."""

from __future__ import annotations

import argparse
import sys

from pipeline.config import VigilConfig, load_config


def config_from_args(args: argparse.Namespace) -> VigilConfig:
    cfg = load_config(args.config) if getattr(args, "config", None) else VigilConfig()
    if getattr(args, "bootstrap", None):
        cfg.kafka.bootstrap_servers = args.bootstrap
    return cfg


def fail(message: object) -> int:
    print(f"vigil: {message}", file=sys.stderr)
    return 2
