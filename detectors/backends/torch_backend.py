"""The ``torch`` backend: the ultralytics ``nn.Module`` itself (conv+bn fused). On CUDA: half
precision, a pinned host buffer for the uint8 canvas, colour/scale on the GPU, one
synchronisation per batch (when the detections are copied back)."""

from __future__ import annotations

import inspect

import numpy as np
import torch

from detectors.backends.base import Backend, BackendError, as_output
from detectors.preprocess import Allocator, Letterboxer


class TorchBackend(Backend):
    name = "torch"

    def __init__(self, model, device: str, half: bool = False) -> None:
        super().__init__(device, half and device.startswith("cuda"))
        net = model.model
        if not isinstance(net, torch.nn.Module):
            raise BackendError("backend torch needs PyTorch (.pt) weights")
        if hasattr(net, "fuse"):
            net = net.fuse(verbose=False) if _takes_verbose(net.fuse) else net.fuse()
        net = net.to(device).eval()
        for p in net.parameters():
            p.requires_grad_(False)
        self.net = net.half() if self.half else net.float()
        self.source = f"{getattr(model, 'ckpt_path', '') or 'in-memory model'}"
        self._cuda = device.startswith("cuda")
        self._pinned: dict[int, torch.Tensor] = {}  # data pointer -> pinned letterbox buffer

    def allocator(self) -> Allocator | None:
        if not self._cuda:
            return None

        def pinned(n: int) -> np.ndarray:
            buf = torch.empty(n, dtype=torch.uint8, pin_memory=True)
            self._pinned[buf.data_ptr()] = buf
            return buf.numpy()

        return pinned

    def prepare(self, canvas: np.ndarray, boxer: Letterboxer) -> torch.Tensor:
        if not self._cuda:
            return torch.from_numpy(boxer.to_input(canvas))
        # uint8 upload from pinned memory (4x fewer bytes than float), then colour/scale on GPU
        src = torch.from_numpy(canvas)
        pinned = self._pinned.get(canvas.ctypes.data)
        if pinned is not None:
            src = pinned[: canvas.size].view(canvas.shape)  # the pinned tensor itself
        x = src.to(self.device, non_blocking=True)
        x = x.permute(0, 3, 1, 2).flip(1)
        return (x.half() if self.half else x.float()).mul_(1.0 / 255.0)

    def run(self, x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return as_output(self.net(x))


def _takes_verbose(fn) -> bool:
    try:
        return "verbose" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
