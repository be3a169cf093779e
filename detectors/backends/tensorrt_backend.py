"""The ``tensorrt`` backend (NVIDIA): an fp16 engine with a dynamic batch up to ``max_batch``,
run through ultralytics' ``AutoBackend``; input prepared like the CUDA torch path."""

from __future__ import annotations

from pathlib import Path

import torch

from detectors.backends.base import Backend, as_output
from detectors.backends.torch_backend import TorchBackend


class TensorRTBackend(TorchBackend):
    """TensorRT engine through ultralytics' AutoBackend; input prepared like the CUDA torch path."""

    name = "tensorrt"

    def __init__(self, path: Path, device: str) -> None:
        Backend.__init__(self, device, True)
        from ultralytics.nn.autobackend import AutoBackend  # noqa: PLC0415 (heavy: ultralytics + TensorRT)

        self.net = AutoBackend(str(path), device=torch.device(device), fp16=True, verbose=False)
        self.source = str(path)
        self._cuda = True
        self._pinned = {}

    def run(self, x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return as_output(self.net(x))
