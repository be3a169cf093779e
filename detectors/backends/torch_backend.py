"""The ``torch`` backend: the ultralytics ``nn.Module`` itself (conv+bn fused). On CUDA: half
precision, a pinned host buffer for the uint8 canvas, colour/scale on the GPU, one
synchronisation per batch (when the detections are copied back).

torch is imported in the methods, not here: the registry imports every backend module to list
them (:mod:`detectors.backends.base`), also where only the config is checked."""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING

import numpy as np

from detectors.backends.base import Backend, BackendError, as_output

if TYPE_CHECKING:
    import torch

    from detectors.preprocess import Allocator, Letterboxer


class TorchBackend(Backend):
    key = "torch"
    # f16 on CUDA unless asked for f32 (half precision: ~2x the throughput on a GPU)
    precisions = {"cuda": ("f16", "f32"), "cpu": ("f32",), "mps": ("f32",)}
    auto_rank = 100  # always there: the last resort of auto

    @classmethod
    def load(cls, source, config, device: str, precision: str) -> TorchBackend:
        return cls(source, device, precision == "f16")

    def __init__(self, model, device: str, half: bool = False) -> None:
        import torch  # noqa: PLC0415 (heavy: only when this backend is built)

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

        import torch  # noqa: PLC0415 (loaded by then)

        def pinned(n: int) -> np.ndarray:
            buf = torch.empty(n, dtype=torch.uint8, pin_memory=True)
            self._pinned[buf.data_ptr()] = buf
            return buf.numpy()

        return pinned

    def prepare(self, canvas: np.ndarray, boxer: Letterboxer) -> torch.Tensor:
        import torch  # noqa: PLC0415 (loaded by then)

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
        import torch  # noqa: PLC0415 (loaded by then)

        with torch.inference_mode():
            return as_output(self.net(x))


def _takes_verbose(fn) -> bool:
    try:
        return "verbose" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


class CudaGraphs:
    """The network replayed as CUDA graphs, one captured per input shape and dtype: a replay
    launches the whole forward pass at once, without a kernel launch per layer from Python (the
    cost that dominates small batches on a fast GPU). Wraps ``TorchBackend.net`` (measured by
    deploy/gpu/bench_gpu.py; not a config option yet).

    Each graph reads fixed addresses: its input buffer (each batch is copied in), and every
    tensor the modules held when it was captured (e.g. the head's anchors, which the head
    replaces when the input shape changes), which are kept alive here for that reason. The output
    is a copy, so a caller may keep it while the next batch runs.
    """

    def __init__(self, net: torch.nn.Module, warmup: int = 3) -> None:
        self.net = net
        self.warmup = warmup
        self.graphs: dict[tuple, tuple] = {}

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        key = (tuple(x.shape), x.dtype)
        if key not in self.graphs:
            self.graphs[key] = self._capture(x)
        graph, static_in, static_out, _kept = self.graphs[key]
        static_in.copy_(x)
        graph.replay()
        return static_out.clone()

    def _capture(self, x: torch.Tensor) -> tuple:
        import torch  # noqa: PLC0415 (loaded by then)

        static_in = x.clone()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side), torch.inference_mode():
            for _ in range(self.warmup):  # lazily built state (anchors) is made here, not captured
                self.net(static_in)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.inference_mode(), torch.cuda.graph(graph):
            static_out = as_output(self.net(static_in))
        return graph, static_in, static_out, _module_tensors(self.net)


def _module_tensors(net: torch.nn.Module) -> list[torch.Tensor]:
    """The plain tensor attributes of ``net``'s modules, also those in lists (YOLOv5's grids)."""
    import torch  # noqa: PLC0415 (loaded by then)

    out = []
    for m in net.modules():
        for v in vars(m).values():
            items = v if isinstance(v, (list, tuple)) else [v]
            out += [t for t in items if isinstance(t, torch.Tensor)]
    return out
