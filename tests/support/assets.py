"""The shared footage and weights (VIGIL_ASSETS): a missing file fails the test, it does not skip
it (a run without the assets is a broken setup, not a reason to pass)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pipeline.common.assets import footage, model


def require(*paths: Path | str) -> None:
    """Fail the test (or the fixture that calls this) when one of ``paths`` is not a file, naming
    each missing one and VIGIL_ASSETS."""
    missing = [str(p) for p in paths if not Path(p).is_file()]
    if missing:
        pytest.fail(
            f"{', '.join(missing)} missing: set VIGIL_ASSETS to the shared assets folder "
            f"(VIGIL_ASSETS={os.environ.get('VIGIL_ASSETS', '<unset>')})",
            pytrace=False,
        )


def footage_path(name: str) -> str:
    p = footage(name)
    require(p)
    return str(p)


def model_path(name: str) -> str:
    p = model(name)
    require(p)
    return str(p)
