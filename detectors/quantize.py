"""The INT8 tool for the OpenVINO backend: NNCF post-training quantization on calibration
frames (``vigil models quantize``, through ``detectors/retrain/precision_gate.py``).

Offline only: the backend never imports this module (NNCF, OpenCV). What it reads at run time,
the gate's verdicts and which model a precision runs, is :mod:`detectors.precision_record`.

The INT8 IR goes in the weights' export root (``<stem>.exports/``, see
:func:`detectors.backends.export.export_root`), next to the f32 export it was made from::

    openvino-640-int8-<key>/                      INT8 IR; key = sha256 of (weights sha256,
        model.xml, model.bin, vigil-quantize.json   calibration-set hash, settings)[:12]
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from detectors.errors import WeightsError
from detectors.preprocess import Letterboxer

log = logging.getLogger(__name__)

DEFAULT_IMAGES = 300
MIN_IMAGES = 32  # fewer calibration frames give unreliable activation ranges
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
QUANTIZE_VERSION = 2  # bump when the quantization settings change: keys change with it
SIDECAR = "vigil-quantize.json"


class QuantizeError(WeightsError):
    """Calibration input or weights that cannot be quantized; the message names the input."""


# -- calibration set -------------------------------------------------------------------------


@dataclass
class CalibrationSet:
    """Letterboxed canvases (uint8 BGR ``(1, H, W, 3)``, as the backend's input) and their hash."""

    canvases: list[np.ndarray]
    source: str
    sha256: str
    skipped: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.canvases)


def letterbox_frames(frames: Sequence[np.ndarray], imgsz: int) -> list[np.ndarray]:
    """Each frame letterboxed exactly as :class:`~detectors.engine.Detector` does (stride 32,
    rectangular canvas), copied out of the letterboxer's reused buffer."""
    boxer = Letterboxer(imgsz, 32, True)
    return [boxer.letterbox([f])[0].copy() for f in frames]


def canvas_hash(canvases: Sequence[np.ndarray]) -> str:
    h = hashlib.sha256()
    for c in canvases:
        h.update(str(c.shape).encode())
        h.update(np.ascontiguousarray(c).tobytes())
    return h.hexdigest()


def image_files(folder: str | Path) -> list[Path]:
    """Image files under ``folder`` (recursive, sorted); :class:`QuantizeError` if it is not a
    readable folder."""
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise QuantizeError(f"calibration folder {root} does not exist or is not a folder")
    if not os.access(root, os.R_OK | os.X_OK):
        raise QuantizeError(f"calibration folder {root} is not readable")
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def spread(items: Sequence, n: int) -> list:
    """``n`` items evenly spread over ``items`` (all of them when there are fewer)."""
    if len(items) <= n:
        return list(items)
    idx = np.linspace(0, len(items) - 1, n).round().astype(int)
    return [items[i] for i in idx]


def calibration_from_files(
    files: Sequence[Path],
    imgsz: int,
    images: int = DEFAULT_IMAGES,
    *,
    source: str,
    min_images: int = MIN_IMAGES,
) -> CalibrationSet:
    """Up to ``images`` of ``files`` (evenly spread), read and letterboxed; unreadable files are
    skipped and named; fewer than ``min(images, min_images)`` usable: :class:`QuantizeError`."""
    import cv2  # noqa: PLC0415 (cv2: ~0.2 s; importing this module stays cheap)

    if not files:
        raise QuantizeError(
            f"calibration folder {source} has no images ({', '.join(IMAGE_SUFFIXES)})"
        )
    frames, skipped = [], []
    for p in spread(files, images):
        img = cv2.imread(str(p))
        if img is None or img.ndim != 3:
            skipped.append(str(p))
            continue
        frames.append(img)
    need = min(images, min_images)
    if len(frames) < need:
        what = f"{len(frames)} readable image(s)" + (
            f" ({len(skipped)} unreadable, e.g. {skipped[0]})" if skipped else ""
        )
        raise QuantizeError(
            f"calibration folder {source}: {what}; at least {need} are needed ({images} asked for)"
        )
    canvases = letterbox_frames(frames, imgsz)
    return CalibrationSet(canvases, source, canvas_hash(canvases), skipped)


def calibration_from_frames(
    frames: Sequence[np.ndarray], imgsz: int, *, source: str, min_images: int = MIN_IMAGES
) -> CalibrationSet:
    if len(frames) < min_images:
        raise QuantizeError(
            f"calibration from {source}: {len(frames)} frame(s); at least {min_images} are needed"
        )
    canvases = letterbox_frames(frames, imgsz)
    return CalibrationSet(canvases, source, canvas_hash(canvases))


def footage_frames(files: Sequence[Path], n: int, *, phase: float = 0.0) -> list[np.ndarray]:
    """``n`` frames evenly spread over the clips ``files`` (round-robin). ``phase`` in [0, 1)
    shifts the positions by that fraction of the step, so ``phase=0`` (calibration) and
    ``phase=0.5`` (the gate's held-out frames) never share a frame."""
    import cv2  # noqa: PLC0415 (cv2: ~0.2 s)

    files = [Path(f) for f in files if Path(f).is_file()]
    if not files:
        raise QuantizeError(
            "no footage to calibrate on: set VIGIL_ASSETS or pass --calibration DIR"
        )
    per = [n // len(files) + (1 if i < n % len(files) else 0) for i in range(len(files))]
    out: list[np.ndarray] = []
    for path, k in zip(files, per, strict=True):
        cap = cv2.VideoCapture(str(path))
        total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) or 0
        if total <= 0 or k <= 0:
            cap.release()
            continue
        step = total / k
        wanted = sorted({min(total - 1, int((i + phase) * step)) for i in range(k)})
        for idx in wanted:
            cap.set(cv2.CAP_PROP_POS_FRAMES, idx)
            ok, frame = cap.read()
            if ok:
                out.append(frame)
        cap.release()
    return out


# -- quantizing ------------------------------------------------------------------------------


def int8_key(weights_sha256: str, calibration_sha256: str, preset: str) -> str:
    text = f"{weights_sha256}:{calibration_sha256}:{preset}:{QUANTIZE_VERSION}"
    return hashlib.sha256(text.encode()).hexdigest()[:12]


@dataclass
class Quantized:
    folder: Path  # holds model.xml / model.bin and the sidecar
    key: str
    weights_sha256: str
    calibration_sha256: str
    images: int
    seconds: float
    cached: bool
    method: str = "quantize"  # or "accuracy_control"


def _f32_model_xml(export: Path) -> Path:
    xml = next(Path(export).glob("*.xml"), None)
    if xml is None:
        raise QuantizeError(f"no OpenVINO model (.xml) in {export}")
    return xml


def _calibration_items(canvases: Sequence[np.ndarray]) -> list[np.ndarray]:
    """The model's own input (RGB float NCHW in [0, 1]): what the backend's in-graph
    preprocessing makes of the uint8 BGR canvas."""
    boxer = Letterboxer(32)
    return [boxer.to_input(c).copy() for c in canvases]


def quantize_openvino(
    weights: str | Path,
    f32_export: Path,
    calib: CalibrationSet,
    *,
    preset: str = "mixed",
    validation: Any = None,
    max_drop: float = 0.01,
    force: bool = False,
) -> Quantized:
    """The INT8 IR of ``f32_export`` calibrated on ``calib`` (cached by the weights' sha256 and
    the calibration set's hash). ``validation``: ``(validation_items, validation_fn)`` runs
    NNCF's ``quantize_with_accuracy_control`` instead of plain ``quantize`` (the layers whose
    quantization costs more than ``max_drop`` of the metric stay in f32)."""
    import nncf  # noqa: PLC0415 (heavy: nncf + openvino, only when quantizing)
    import openvino as ov  # noqa: PLC0415 (heavy)

    from detectors.loading import file_sha256  # noqa: PLC0415 (imports torch)

    weights = Path(weights)
    sha = file_sha256(weights)
    method = "accuracy_control" if validation is not None else "quantize"
    settings = f"{preset}-{method}"
    if validation is not None:  # the layers kept in f32 depend on the validation frames too
        vals = [validation[1](item) for item in validation[0]]
        settings += f"-{max_drop:g}-{canvas_hash(vals)[:16]}"
    key = int8_key(sha, calib.sha256, settings)
    imgsz = _export_imgsz(f32_export)
    root = Path(f32_export).parent.parent
    folder = root / f"openvino-{imgsz}-int8-{key}"
    sidecar = folder / SIDECAR
    if not force and (folder / "model.xml").is_file() and sidecar.is_file():
        meta = json.loads(sidecar.read_text())
        if meta.get("weights_sha256") == sha and meta.get("calibration_sha256") == calib.sha256:
            return Quantized(folder, key, sha, calib.sha256, len(calib), 0.0, True, method)
    # NNCF logs every quantizer it places or skips at INFO: keep warnings only
    logging.getLogger("nncf").setLevel(max(logging.WARNING, log.getEffectiveLevel()))
    core = ov.Core()
    model = core.read_model(str(_f32_model_xml(f32_export)))
    items = _calibration_items(calib.canvases)
    dataset = nncf.Dataset(items)
    t0 = time.perf_counter()
    kw: dict[str, Any] = {
        "preset": getattr(nncf.QuantizationPreset, preset.upper()),
        "subset_size": len(items),
    }
    scope = head_ignored_scope(model)
    if scope:
        kw["ignored_scope"] = nncf.IgnoredScope(patterns=scope, validate=False)
    if validation is None:
        qmodel = nncf.quantize(model, dataset, **kw)
    else:
        val_items, val_transform, val_fn = validation
        qmodel = nncf.quantize_with_accuracy_control(
            model,
            calibration_dataset=dataset,
            validation_dataset=nncf.Dataset(val_items, val_transform),
            validation_fn=val_fn,
            max_drop=max_drop,
            drop_type=nncf.DropType.ABSOLUTE,
            **kw,
        )
    seconds = time.perf_counter() - t0
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    ov.save_model(qmodel, str(tmp / "model.xml"))
    meta = {
        "vigil_quantize": QUANTIZE_VERSION,
        "weights": str(weights),
        "weights_sha256": sha,
        "calibration_sha256": calib.sha256,
        "calibration_source": calib.source,
        "images": len(calib),
        "preset": preset,
        "method": method,
        "max_drop": max_drop,
        "nncf": nncf.__version__,
        "openvino": ov.__version__,
        "seconds": round(seconds, 1),
        "imgsz": imgsz,
    }
    (tmp / SIDECAR).write_text(json.dumps(meta, indent=1))
    if folder.exists():
        import shutil  # noqa: PLC0415 (only on a forced rebuild)

        shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    return Quantized(folder, key, sha, calib.sha256, len(calib), seconds, False, method)


def head_ignored_scope(model) -> list[str]:
    """Name patterns of the detection head's box arithmetic (sigmoid, grid/anchor add, multiply,
    power, divide), which stays f32: quantized, it moves every box by a step of the INT8 grid
    (the same choice ultralytics' own INT8 export makes). The head is the module that makes the
    last computed op before the output (``__module.model.24`` in the converted yolov5n)."""
    ops = [o for o in model.get_ordered_ops() if o.get_type_name() not in ("Constant", "Result")]
    if not ops:
        return []
    head = ops[-1].get_friendly_name().split("/", 1)[0]
    if not head or head == ops[-1].get_friendly_name():
        return []
    arithmetic = "Add|Subtract|Sub|Multiply|Mul|Divide|Div|Power|Pow|Sigmoid|Exp"
    return [f"{re.escape(head)}/.*/({arithmetic}).*"]


def _export_imgsz(f32_export: Path) -> int:
    """The export's input size, from the sidecar :func:`detectors.backends.export.exported_model`
    writes (``openvino-<imgsz>-...`` folder name as a fallback)."""
    sidecar = Path(f32_export).parent / "vigil-export.json"
    try:
        return int(json.loads(sidecar.read_text())["imgsz"])
    except (OSError, ValueError, KeyError):
        return int(Path(f32_export).parent.name.split("-")[1])
