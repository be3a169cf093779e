"""The export cache: a backend with an ``export_format`` runs the weights exported with
ultralytics' own exporter (dynamic shapes), cached next to the weights in
``<stem>.exports/<format>-<imgsz>-<precision>-b<batch>/`` with a ``vigil-export.json`` that records
the weights' sha256; a different sha256 (new weights), a different ultralytics version or
exporter settings trigger a fresh export. Weights in a read-only folder export to the cache.

Separate from :mod:`detectors.backends` because it loads torch and ultralytics; the registry and
the chooser do not.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

from detectors.backends.base import BackendError
from detectors.loading import _open, cache_dir, file_sha256, precision_kwargs

log = logging.getLogger(__name__)

#: Bump when the export settings below change, so cached exports are rebuilt.
EXPORT_VERSION = 1


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
