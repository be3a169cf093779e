"""The shared footage (VIGIL_ASSETS): a missing clip fails the test, it does not skip it."""

from __future__ import annotations

import pytest

from pipeline.common.assets import footage


def footage_path(name: str) -> str:
    p = footage(name)
    if not p.exists():
        pytest.fail(f"footage {p} missing: set VIGIL_ASSETS to the shared assets folder")
    return str(p)
