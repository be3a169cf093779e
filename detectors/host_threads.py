"""Thread pools of the host-side libraries while another engine runs the network.

With OpenVINO or ONNX Runtime (or a GPU) running the network, PyTorch is left with NMS and box
maths on small tensors and OpenCV with a few resizes per batch. Their default pools (a thread per
core each) then wake up on every call, spin-wait afterwards and compete with the inference
engine's own threads for the same cores. On the 2-core bench machine one thread each cut the
detector's CPU time by 2.6 ms per frame (24.7 -> 22.1 ms at batch 4, BENCHMARKS.md) at the same
wall time. A PyTorch network on the CPU keeps the defaults: it needs those threads.

Process-wide settings: the ingest worker applies them once at start (``detector.host_threads``).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class HostThreads:
    torch: int
    opencv: int


def current() -> HostThreads:
    import cv2  # noqa: PLC0415 (torch/cv2: only when a worker starts)
    import torch  # noqa: PLC0415 (torch/cv2: only when a worker starts)

    return HostThreads(torch.get_num_threads(), cv2.getNumThreads())


def wanted(setting: int | str, backend: str, device: str) -> int | None:
    """Threads per host library for ``setting`` (``auto`` or a number); None: leave as is."""
    if setting != "auto":
        return int(setting)
    if device == "cpu" and backend in ("torch", "ultralytics"):
        return None  # the network itself runs on these pools
    return 1


def apply(setting: int | str, backend: str, device: str) -> HostThreads:
    """Apply ``setting`` for ``backend`` on ``device``; returns the previous values (for
    :func:`restore`)."""
    import cv2  # noqa: PLC0415 (torch/cv2: only when a worker starts)
    import torch  # noqa: PLC0415 (torch/cv2: only when a worker starts)

    before = current()
    n = wanted(setting, backend, device)
    if n is not None:
        torch.set_num_threads(n)
        cv2.setNumThreads(n)
    return before


def restore(previous: HostThreads) -> None:
    import cv2  # noqa: PLC0415 (torch/cv2: only when a worker starts)
    import torch  # noqa: PLC0415 (torch/cv2: only when a worker starts)

    torch.set_num_threads(previous.torch)
    cv2.setNumThreads(previous.opencv)
