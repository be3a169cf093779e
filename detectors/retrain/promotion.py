"""Promotion by hand (``vigil models promote``, the console's Models page): one gate for both.

A version, or a weights file registered first, becomes production only when its weights load the
way the workers will load them (``verify``), so a broken file is refused here and not by every
worker at its next hot reload.
"""

from __future__ import annotations

from pathlib import Path

from detectors.loading import load_model
from detectors.retrain.registry import ModelRegistry, ModelVersion, RegistryError


def promote_checked(
    reg: ModelRegistry, ref: str, *, reason: str = "manual promotion", verify: bool = True
) -> ModelVersion:
    """Promote ``ref`` (version id/prefix, ``vN``, or a weights file) after the load check."""
    mv = reg.get(ref)
    if mv is None:
        if not Path(ref).expanduser().is_file():
            raise RegistryError(f"{ref!r} is neither a registered version nor a weights file")
        mv = reg.register(ref, verify=verify)
    elif verify:
        load_model(str(reg.fetch(mv)), device="cpu")  # refuse what workers would refuse
    return reg.promote(mv.version, reason=reason)
