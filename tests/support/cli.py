"""Running ``vigil`` commands in-process, and the environment detector tests run them in."""

from __future__ import annotations

import contextlib
import io
import sys
from collections.abc import Iterator

import pytest

from pipeline.cli import main


@contextlib.contextmanager
def model_test_env(cache_dir, threads: int = 2, **env: str) -> Iterator[None]:
    """A private model/export cache and a modest PyTorch thread count (the CPU is shared) for a
    test module; extra environment variables in ``env``. Restores everything afterwards."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("VIGIL_CACHE", str(cache_dir))
            for key, value in env.items():
                mp.setenv(key, value)
            yield
    finally:
        torch.set_num_threads(before)


def run_detector_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    """``vigil <detector command> ...`` in-process, as ``vigil`` runs it (a user error is one
    line and exit code 2): (exit code, stdout, stderr)."""
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def run_vigil(argv: list[str], capsys, monkeypatch, stdin: str = "") -> tuple[int, str, str]:
    """``vigil ...`` in-process with ``stdin`` as its standard input (a pipe, not a terminal, as
    a script gives it): (exit code, stdout, stderr)."""
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err
