"""Errors a user can fix, importable without loading torch (the CLI catches them)."""


class WeightsError(ValueError):
    """Weights that cannot be used; the message names the file and how to fix it."""
