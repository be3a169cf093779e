"""Where the shared footage and weights live.

The assets are never committed; they are found through ``VIGIL_ASSETS`` or, in a checkout that
sits next to ``shared/``, at ``../shared/assets``.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]

#: The sample clips that stand for cameras (in ``<assets>/footage/``): the bench replays them, and
#: `vigil models quantize` calibrates on them when no labelled frames are given.
CAMERA_FILES = (
    "one-by-one-person-detection.mp4",  # 768x432
    "people-detection.mp4",  # 480x270
    "bottle-detection.mp4",  # 640x360
    "classroom.mp4",  # 480x270
    "person-bicycle-car-detection.mp4",
    "face-demographics-walking.mp4",
    "car-detection.mp4",  # 768x432
    "one-by-one-person-detection.mp4",
)


def assets_dir() -> Path:
    env = os.environ.get("VIGIL_ASSETS")
    if env:
        return Path(env).expanduser().resolve()
    for candidate in (
        REPO_ROOT.parent / "shared" / "assets",
        Path.cwd().parent / "shared" / "assets",
    ):
        if candidate.is_dir():
            return candidate.resolve()
    return (REPO_ROOT.parent / "shared" / "assets").resolve()


def footage(name: str) -> Path:
    return assets_dir() / "footage" / name


def model(name: str) -> Path:
    return assets_dir() / "models" / name
