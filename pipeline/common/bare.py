"""What a bare GPU machine has, and what the detector bench must run without.

deploy/gpu/bench_gpu.sh runs on a lent machine that has only :data:`GPU_MACHINE` installed;
``make gpu-carry`` (deploy/gpu/carry.py) brings the rest from requirements.lock, and
tests/pipeline/test_cli_imports.py checks that ``vigil bench``'s detector path imports none of
:data:`NOT_FOR_THE_BENCH`. :func:`hide` makes packages uninstalled for this process.
"""

from __future__ import annotations

import importlib.machinery
import sys
from collections.abc import Iterable

#: The distributions the GPU machine has (Python 3.12, torch with CUDA).
GPU_MACHINE = (
    "torch",
    "torchvision",
    "opencv-python-headless",
    "onnx",
    "onnxruntime",
    "numpy",
    "scipy",
    "matplotlib",
    "pyyaml",
    "pillow",
    "prometheus-client",
    "psutil",
    "requests",
)

#: Top-level modules of the services (console, notifier, Kafka, Redis) and of backends the GPU
#: machine lacks: the detector bench must run where they are not installed. pydantic is not
#: here: the detector's settings are pydantic models, so the carry brings it.
NOT_FOR_THE_BENCH = (
    "fastapi",
    "starlette",
    "uvicorn",
    "argon2",
    "paho",
    "kafka",
    "redis",
    "orjson",
    "hiredis",
    "crc32c",
    "openvino",
)


class _Hidden(importlib.machinery.PathFinder):
    """The path finder, blind to some top-level packages: they look uninstalled
    (``import`` raises ModuleNotFoundError, ``importlib.util.find_spec`` returns None)."""

    hidden: frozenset[str] = frozenset()

    @classmethod
    def find_spec(cls, fullname, path=None, target=None):
        if fullname.partition(".")[0] in cls.hidden:
            return None
        return super().find_spec(fullname, path, target)


def hide(modules: Iterable[str]) -> None:
    """Make ``modules`` (top-level names) unimportable in this process, as if not installed."""
    _Hidden.hidden = frozenset(modules)
    sys.meta_path[:] = [
        _Hidden if f is importlib.machinery.PathFinder else f for f in sys.meta_path
    ]
    loaded = [m for m in sys.modules if m.partition(".")[0] in _Hidden.hidden]
    if loaded:
        raise RuntimeError(f"already imported: {', '.join(sorted(loaded))}")
