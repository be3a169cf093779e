"""Inference backends for the batched detector: PyTorch, ONNX Runtime, OpenVINO, TensorRT.

Each backend runs the *same* network on a letterboxed batch and returns the raw head output
``(batch, 4 + nc, anchors)`` as a torch tensor; the detector does NMS and box scaling itself, so
every backend gives the same detections (tests/detectors/test_backends.py checks it on the
footage).

* ``torch``: the ultralytics ``nn.Module`` itself (conv+bn fused). On CUDA: half precision, a
  pinned host buffer for the uint8 canvas, colour/scale on the GPU, one synchronisation per batch
  (when the detections are copied back).
* ``onnxruntime`` / ``openvino`` (CPU): exported with ultralytics' own exporter (dynamic shapes),
  cached next to the weights in ``<stem>.exports/<format>-<imgsz>-<precision>-b<batch>/`` with a
  ``vigil-export.json`` that records the weights' sha256; a different sha256 (new weights), a
  different ultralytics version or exporter settings trigger a fresh export. OpenVINO compiles
  one static-shape model per input shape it sees (about 0.1 s each, kept in a small LRU): static
  shapes run about 10 % faster than the dynamic model on CPU.
* ``tensorrt`` (NVIDIA): an fp16 engine with a dynamic batch up to ``max_batch``, run through
  ultralytics' ``AutoBackend``.

``backend: auto`` takes the first available of ``tensorrt, torch`` on CUDA and
``openvino, onnxruntime, torch`` on CPU, the order measured by ``vigil bench`` (BENCHMARKS.md).
Weights that are already an exported file (``.onnx``, ``*_openvino_model/``, ``.engine``) run
through ultralytics' ``predict`` (backend ``ultralytics``).

The chooser, the export cache and :func:`create_backend` are here; :class:`Backend` in
:mod:`detectors.backends.base`, each backend in its own module (``torch_backend``, ...).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

from detectors.backends.base import Backend, BackendError, as_output
from detectors.backends.onnxruntime_backend import OnnxRuntimeBackend
from detectors.backends.openvino_backend import OpenVinoBackend, anchors_last
from detectors.backends.openvino_backend import _stack_candidates as _stack_candidates
from detectors.backends.tensorrt_backend import TensorRTBackend
from detectors.backends.torch_backend import TorchBackend
from detectors.loading import _open, cache_dir, file_sha256, precision_kwargs

log = logging.getLogger(__name__)

__all__ = [
    "AUTO_ORDER",
    "BACKENDS",
    "CHOICES",
    "EXPORT_FORMATS",
    "EXPORT_VERSION",
    "Backend",
    "BackendError",
    "OnnxRuntimeBackend",
    "OpenVinoBackend",
    "TensorRTBackend",
    "TorchBackend",
    "anchors_last",
    "as_output",
    "available_backends",
    "backend_unavailable",
    "choose_backend",
    "create_backend",
    "export_root",
    "exported_model",
]

BACKENDS = ("torch", "onnxruntime", "openvino", "tensorrt")
CHOICES = ("auto", *BACKENDS, "ultralytics")
AUTO_ORDER = {"cuda": ("tensorrt", "torch"), "cpu": ("openvino", "onnxruntime", "torch")}
#: Bump when the export settings below change, so cached exports are rebuilt.
EXPORT_VERSION = 1
EXPORT_FORMATS = {"onnxruntime": "onnx", "openvino": "openvino", "tensorrt": "engine"}
_INSTALL_HINT = {
    "onnxruntime": "pip install onnxruntime",
    "openvino": "pip install openvino",
    "tensorrt": "install TensorRT for your CUDA version (pip install tensorrt)",
}
_MODULE = {"onnxruntime": "onnxruntime", "openvino": "openvino", "tensorrt": "tensorrt"}


# -- choosing ------------------------------------------------------------------------------------


def backend_unavailable(name: str, device: str) -> str | None:
    """Why ``name`` cannot run on ``device`` (None when it can)."""
    cuda = device.startswith("cuda")
    if name == "torch":
        return None
    if name == "tensorrt" and not cuda:
        return "TensorRT needs an NVIDIA GPU (device cuda)"
    if name in ("onnxruntime", "openvino") and device != "cpu":
        return f"Vigil runs {name} on the CPU only; use device: cpu (or backend: torch/tensorrt)"
    if importlib.util.find_spec(_MODULE[name]) is None:
        return f"{name} is not installed ({_INSTALL_HINT[name]})"
    return None


def available_backends(device: str) -> list[str]:
    return [b for b in BACKENDS if backend_unavailable(b, device) is None]


def choose_backend(requested: str, device: str, native_weights: bool) -> str:
    """The backend to use for ``requested`` (``auto`` or a name); ``BackendError`` if impossible.

    ``native_weights``: the weights are a PyTorch checkpoint (not an already exported file).
    """
    requested = (requested or "auto").lower()
    if requested not in CHOICES:
        raise BackendError(f"unknown backend {requested!r}; use one of {', '.join(CHOICES)}")
    if requested == "ultralytics":
        return requested
    if not native_weights:
        if requested == "auto":
            return "ultralytics"
        raise BackendError(
            f"backend {requested!r} needs PyTorch (.pt) weights; these are already exported, "
            "use backend: auto (runs them through ultralytics) or give the .pt file"
        )
    if requested == "auto":
        kind = "cuda" if device.startswith("cuda") else "cpu"
        for name in AUTO_ORDER[kind]:
            if backend_unavailable(name, device) is None:
                return name
        return "torch"
    why = backend_unavailable(requested, device)
    if why:
        raise BackendError(f"backend {requested!r} cannot be used: {why}")
    return requested


# -- export cache --------------------------------------------------------------------------------


def _writable(folder: Path) -> bool:
    """Whether exports may go next to the weights. A folder whose mode grants no write at all
    (a read-only assets mount) counts as read-only even for root, whom ``os.access`` lets write
    anywhere."""
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        return False
    return bool(folder.stat().st_mode & 0o222)


def export_root(weights: Path) -> Path:
    """``<weights dir>/<stem>.exports``, or a per-sha256 folder in the cache when read-only."""
    if _writable(weights.parent):
        return weights.parent / f"{weights.stem}.exports"
    return cache_dir() / "exports" / file_sha256(weights)[:16]


def _export_meta(weights: Path, fmt: str, imgsz: int, half: bool, batch: int) -> dict[str, Any]:
    import ultralytics  # noqa: PLC0415 (heavy: only when exporting)

    return {
        "vigil_export": EXPORT_VERSION,
        "weights_sha256": file_sha256(weights),
        "format": fmt,
        "imgsz": imgsz,
        "half": half,
        "batch": batch,
        "dynamic": True,
        "ultralytics": ultralytics.__version__,
    }


def _artifact(folder: Path, stem: str, fmt: str) -> Path:
    if fmt == "openvino":
        return folder / f"{stem}_openvino_model"
    return folder / f"{stem}.{'engine' if fmt == 'engine' else 'onnx'}"


def exported_model(
    weights: Path, fmt: str, *, imgsz: int, half: bool = False, batch: int = 1, device: str = "cpu"
) -> Path:
    """The exported model for ``weights`` (exporting it now if the cache is missing or stale)."""
    weights = Path(weights)
    if fmt != "engine":
        batch = 1  # ONNX / OpenVINO exports have a dynamic batch: one file serves every size
    meta = _export_meta(weights, fmt, imgsz, half, batch)
    folder = export_root(weights) / f"{fmt}-{imgsz}-{'fp16' if half else 'fp32'}-b{batch}"
    artifact = _artifact(folder, weights.stem, fmt)
    sidecar = folder / "vigil-export.json"
    with contextlib.suppress(OSError, ValueError):
        if artifact.exists() and json.loads(sidecar.read_text()) == meta:
            return artifact
    folder.parent.mkdir(parents=True, exist_ok=True)
    log.info("exporting %s to %s (imgsz %d, batch %d) -> %s", weights, fmt, imgsz, batch, folder)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        src = tmp / weights.name
        shutil.copy2(weights, src)  # ultralytics writes its output next to the file it loads
        _run_export(src, fmt, imgsz=imgsz, half=half, batch=batch, device=device)
        src.unlink()
        (tmp / "vigil-export.json").write_text(json.dumps(meta, indent=1))
        old = folder.with_name(folder.name + f".old-{os.getpid()}")
        if folder.exists():
            folder.rename(old)
        try:
            tmp.rename(folder)
        except OSError:  # another process finished the same export first: use theirs
            if not folder.exists():
                raise
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if not artifact.exists():
        raise BackendError(f"export to {fmt} produced no {artifact.name} in {folder}")
    return artifact


def _run_export(src: Path, fmt: str, *, imgsz: int, half: bool, batch: int, device: str) -> None:
    model = _open(src, str(src))
    kw: dict[str, Any] = dict(format=fmt, imgsz=imgsz, dynamic=True, batch=batch, verbose=False)
    kw["device"] = "cpu" if fmt in ("onnx", "openvino") else device
    if fmt == "onnx":
        kw["simplify"] = False  # onnxslim is optional; ONNX Runtime optimises the graph itself
    kw.update(precision_kwargs(half))
    from ultralytics.utils import LOGGER  # noqa: PLC0415 (heavy: ultralytics)

    level = LOGGER.level
    LOGGER.setLevel(logging.WARNING)  # the exporter prints a banner and usage hints
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit.trace deprecation
            model.export(**kw)
    except Exception as e:  # the exporter raises anything from its toolchains
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise BackendError(f"cannot export {src.name} to {fmt}: {msg}") from None
    finally:
        LOGGER.setLevel(level)


# -- building ------------------------------------------------------------------------------------


def create_backend(name: str, model, config, device: str) -> Backend:
    """Build backend ``name`` (already chosen) for an ultralytics ``model`` loaded from a .pt."""
    if name == "torch":
        return TorchBackend(model, device, config.half)
    weights = getattr(model, "ckpt_path", None)
    if not weights or not Path(weights).is_file():
        raise BackendError(f"backend {name!r} needs the weights file to export from")
    fmt = EXPORT_FORMATS[name]
    half = name == "tensorrt"
    batch = config.max_batch
    path = exported_model(
        Path(weights), fmt, imgsz=config.imgsz, half=half, batch=batch, device=device
    )
    if name == "onnxruntime":
        return OnnxRuntimeBackend(path)
    if name == "openvino":
        return OpenVinoBackend(
            path,
            max_batch=config.max_batch,
            precision=getattr(config, "cpu_precision", "f32"),
            min_score=config.conf,
        )
    return TensorRTBackend(path, device)
