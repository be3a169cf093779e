"""Promotion by hand (``vigil models promote``, the console's Models page): one gate for both.

A version, or a weights file registered first, becomes production only when its weights load the
way the workers will load them (``verify``: from the store, sha256-checked, with
``torch.load(weights_only=True)``), so a broken or code-carrying file is refused here and not by
every worker at its next hot reload. Promotion signs the entry with ``models.signing_key_file``
(:meth:`ModelRegistry.promote`): workers load nothing else.
"""

from __future__ import annotations

from pathlib import Path

from detectors.loading import load_model, safe_loading
from detectors.retrain.model_registry import ModelRegistry, ModelVersion, RegistryError


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
        with safe_loading():  # refuse what workers would refuse
            load_model(str(reg.fetch(mv)), device="cpu")
    return reg.promote(mv.version, reason=reason)
