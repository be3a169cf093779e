"""Inference backends for the batched detector: PyTorch, ONNX Runtime, OpenVINO, TensorRT.

Each backend runs the *same* network on a letterboxed batch and returns the raw head output
``(batch, 4 + nc, anchors)`` as a torch tensor; the detector does NMS and box scaling itself, so
every backend gives the same detections (tests/detectors/test_backends.py checks it on the
footage).

* ``torch``: the ultralytics ``nn.Module`` itself (conv+bn fused). On CUDA: half precision, a
  pinned host buffer for the uint8 canvas, colour/scale on the GPU, one synchronisation per batch
  (when the detections are copied back).
* ``onnxruntime`` / ``openvino`` (CPU): exported with ultralytics' own exporter and cached next
  to the weights (:mod:`detectors.backends.export`). OpenVINO compiles one static-shape model
  per input shape it sees (about 0.1 s each, kept in a small LRU): static shapes run about 10 %
  faster than the dynamic model on CPU.
* ``tensorrt`` (NVIDIA): an fp16 engine with a dynamic batch up to ``max_batch``, run through
  ultralytics' ``AutoBackend``.

Each backend is a :class:`Backend` subclass in ``detectors/backends/<name>_backend.py`` that
declares its key, the devices and precisions it runs, its export format and its rank for
``auto``; defining it registers it (:mod:`detectors.backends.base`). This package finds the
modules, chooses (:func:`choose_backend`) and builds (:func:`create_backend`); nothing here
names a backend. ``backend: auto`` takes the first available by rank that runs the device and
the precision: ``tensorrt, torch`` on CUDA and ``openvino, onnxruntime, torch`` on CPU, the order
measured by ``vigil bench`` (BENCHMARKS.md). Weights that are already an exported file
(``.onnx``, ``*_openvino_model/``, ``.engine``) run through ultralytics' ``predict`` (backend
``ultralytics``).

Importing this package is cheap (no torch, no runtime library): the config validates
``detector.backend`` against :func:`backend_choices`.
"""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
from pathlib import Path

from detectors.backends import base
from detectors.backends.base import (
    SPECIAL,
    Backend,
    BackendError,
    Precision,
    as_output,
    check_precision,
    describe_precisions,
    device_kind,
)

__all__ = [
    "ULTRALYTICS_PRECISIONS",
    "Backend",
    "BackendError",
    "Precision",
    "as_output",
    "available_backends",
    "backend_choices",
    "backend_class",
    "backend_classes",
    "backend_unavailable",
    "check_precision",
    "choose_backend",
    "create_backend",
    "describe_precisions",
    "device_kind",
]

#: What the ``ultralytics`` path (already exported weights) runs: fp16 on CUDA like torch.
ULTRALYTICS_PRECISIONS = {"cuda": ("f16", "f32"), "cpu": ("f32",), "mps": ("f32",)}

_found = False


def _find_modules() -> None:
    """Import every ``*_backend`` module of this package once (each registers its class)."""
    global _found  # noqa: PLW0603 (a once-only import flag)
    if _found:
        return
    for info in pkgutil.iter_modules(__path__):
        if info.name.endswith("_backend"):
            importlib.import_module(f"{__name__}.{info.name}")
    _found = True


def backend_classes() -> dict[str, type[Backend]]:
    """Every registered backend, ``key -> class``, in ``auto`` order (unranked last)."""
    _find_modules()
    classes = sorted(
        base._REGISTRY.values(),
        key=lambda c: (c.auto_rank is None, c.auto_rank or 0, c.key),
    )
    return {c.key: c for c in classes}


def backend_choices() -> tuple[str, ...]:
    """The valid ``detector.backend`` values."""
    return ("auto", *backend_classes(), "ultralytics")


def backend_class(name: str) -> type[Backend]:
    cls = backend_classes().get(name)
    if cls is None:
        raise BackendError(f"unknown backend {name!r}; use one of {', '.join(backend_choices())}")
    return cls


# -- choosing ------------------------------------------------------------------------------------


def backend_unavailable(name: str, device: str) -> str | None:
    """Why ``name`` cannot run on ``device`` (None when it can)."""
    cls = backend_class(name)
    kind = device_kind(device)
    if kind not in cls.precisions:
        needs = " or ".join(base.DEVICE_NAMES.get(k, f"device {k}") for k in cls.precisions)
        return f"{name} needs {needs}; this device is {device}"
    if cls.requires and importlib.util.find_spec(cls.requires) is None:
        return f"{name} is not installed ({cls.install_hint or f'pip install {cls.requires}'})"
    return None


def available_backends(device: str) -> list[str]:
    return [b for b in backend_classes() if backend_unavailable(b, device) is None]


def choose_backend(
    requested: str, device: str, native_weights: bool, precision: str | None = None
) -> str:
    """The backend to use for ``requested`` (``auto`` or a name); ``BackendError`` if impossible.

    ``native_weights``: the weights are a PyTorch checkpoint (not an already exported file).
    ``precision``: ``detector.precision``; ``auto`` skips backends that cannot run it here, an
    explicit backend that cannot is refused with what it runs.
    """
    requested = (requested or "auto").lower()
    classes = backend_classes()
    if requested not in classes and requested not in SPECIAL:
        raise BackendError(
            f"unknown backend {requested!r}; use one of {', '.join(backend_choices())}"
        )
    if requested == "ultralytics":
        check_precision(requested, ULTRALYTICS_PRECISIONS, precision, device)
        return requested
    if not native_weights:
        if requested == "auto":
            check_precision("ultralytics", ULTRALYTICS_PRECISIONS, precision, device)
            return "ultralytics"
        raise BackendError(
            f"backend {requested!r} needs PyTorch (.pt) weights; these are already exported, "
            "use backend: auto (runs them through ultralytics) or give the .pt file"
        )
    if requested == "auto":
        ranked = [c for c in classes.values() if c.auto_rank is not None]
        for cls in ranked:
            if backend_unavailable(cls.key, device) is None and cls.supports(precision, device):
                return cls.key
        here = [c for c in ranked if backend_unavailable(c.key, device) is None]
        runs = "; ".join(
            f"{c.key} runs {', '.join(c.precisions[device_kind(device)])}" for c in here
        )
        raise BackendError(
            f"no backend available here runs precision {precision!r} on {device}"
            + (f" ({runs})" if runs else "")
        )
    why = backend_unavailable(requested, device)
    if why:
        raise BackendError(f"backend {requested!r} cannot be used: {why}")
    classes[requested].runs(precision, device)  # refused here, before anything is exported
    return requested


# -- building ------------------------------------------------------------------------------------


def create_backend(name: str, model, config, device: str) -> Backend:
    """Build backend ``name`` (already chosen) for an ultralytics ``model`` loaded from a .pt,
    at ``config.precision`` as the backend runs it on ``device``; exporting backends get their
    export (made now if the cache has none)."""
    cls = backend_class(name)
    precision = cls.runs(getattr(config, "precision", None), device)
    if cls.export_format is None:
        return cls.load(model, config, device, precision)
    weights = getattr(model, "ckpt_path", None)
    if not weights or not Path(weights).is_file():
        raise BackendError(f"backend {name!r} needs the weights file to export from")
    from detectors.backends.export import exported_model  # noqa: PLC0415 (torch, ultralytics)

    path = exported_model(
        Path(weights),
        cls.export_format,
        imgsz=config.imgsz,
        half=precision == "f16",
        batch=config.max_batch,
        device=device,
    )
    return cls.load(path, config, device, precision)
