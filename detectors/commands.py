"""``vigil detect`` and ``vigil models ...`` subcommands."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    """Owned by the detector work: adds `detect` and `models import-yolov5`."""
