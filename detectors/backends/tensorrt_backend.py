"""The ``tensorrt`` backend (NVIDIA): an fp16 engine with a dynamic batch up to ``max_batch``,
run through ultralytics' ``AutoBackend``; input prepared like the CUDA torch path."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from detectors.backends.base import Backend, as_output
from detectors.backends.torch_backend import TorchBackend

if TYPE_CHECKING:
    import torch


class TensorRTBackend(TorchBackend):
    """TensorRT engine through ultralytics' AutoBackend; input prepared like the CUDA torch path."""

    key = "tensorrt"
    precisions = {"cuda": ("f16",)}
    export_format = "engine"
    auto_rank = 10  # first on CUDA when installed
    requires = "tensorrt"
    install_hint = "install TensorRT for your CUDA version (pip install tensorrt)"

    @classmethod
    def load(cls, source: Path, config, device: str, precision: str) -> TensorRTBackend:
        return cls(source, device)

    def __init__(self, path: Path, device: str) -> None:
        Backend.__init__(self, device, True)
        import torch  # noqa: PLC0415 (heavy: kept out of the registry's import)
        from ultralytics.nn.autobackend import AutoBackend  # noqa: PLC0415 (heavy: ultralytics + TensorRT)

        self.net = AutoBackend(str(path), device=torch.device(device), fp16=True, verbose=False)
        self.source = str(path)
        self._cuda = True
        self._pinned = {}

    def run(self, x: torch.Tensor) -> torch.Tensor:
        import torch  # noqa: PLC0415 (loaded by then)

        with torch.inference_mode():
            return as_output(self.net(x))
