"""What every inference backend is: :class:`Backend` (the interface the detector drives) and
:class:`BackendError`. The backends themselves live next to it, one module each."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from detectors.errors import WeightsError
from detectors.preprocess import Allocator, Letterboxer


class BackendError(WeightsError):
    """A backend that cannot be used here; the message says why and how to get it."""


def as_output(y: Any) -> torch.Tensor:
    """The ``(B, 4 + nc, N)`` prediction out of whatever a model returns."""
    while isinstance(y, (list, tuple)):
        y = y[0]
    if isinstance(y, dict):
        y = next(iter(y.values()))
    return torch.from_numpy(y) if isinstance(y, np.ndarray) else y


class Backend:
    """Runs the network on letterboxed uint8 batches; see the module docstring."""

    name = "?"

    def __init__(self, device: str, half: bool = False) -> None:
        self.device = device
        self.half = half
        self.source = ""  # what was loaded (for logs and the bench)

    def allocator(self) -> Allocator | None:
        """How the letterbox canvas is allocated (pinned memory for a CUDA upload)."""
        return None

    def prepare(self, canvas: np.ndarray, boxer: Letterboxer) -> Any:
        return boxer.to_input(canvas)

    def run(self, x: Any) -> torch.Tensor:
        raise NotImplementedError

    def start(self, x: Any) -> Any:
        """Begin running a prepared batch; :meth:`finish` returns its output. The worker starts
        the next batch before it post-processes the previous one, so backends that can run in
        the background (OpenVINO) keep the cores busy meanwhile. ``x`` must stay untouched
        until then. Default: run now."""
        return self.run(x)

    def wait(self, handle: Any, timeout_s: float) -> bool:
        """Block until the backend has room for another batch next to ``handle`` (one of its
        streams has nothing left of it); False on timeout. Default: at once (synchronous)."""
        return True

    def finish(self, handle: Any) -> torch.Tensor:
        return as_output(handle)
