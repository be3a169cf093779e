"""Errors a user can fix, importable without loading torch (the CLI catches them)."""

from __future__ import annotations

from pipeline.common.errors import UserError


class WeightsError(UserError, ValueError):
    """Weights that cannot be used; the message names the file and how to fix it."""
