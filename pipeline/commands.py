"""``vigil run``, ``vigil ingest``, ``vigil cameras ...`` and ``vigil camera-sim``."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    from pipeline import camera_sim

    camera_sim.register(sub)
