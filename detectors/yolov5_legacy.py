"""Legacy YOLOv5 (anchor-based, v6.x) checkpoints turned into ultralytics models.

The official ``yolov5*.pt`` files are pickles of classes from the YOLOv5 repository
(``models.yolo.Detect``, ``models.common.C3``...). Loading them normally needs that code on
``sys.path`` and lets the pickle call anything it names. Instead a restricted unpickler
(:mod:`detectors.yolov5_unpickle`, its names re-exported here) maps those classes (and
``torch.nn`` modules) to inert placeholders, lets through only what torch needs to rebuild
tensors, and refuses everything else. The recovered tensors fill an ultralytics
``DetectionModel`` built from ``yolov5.yaml`` (same backbone and neck), whose anchor-free head is
replaced by :class:`YOLOv5Detect`, an anchor-based head that decodes like YOLOv5 and emits the
``(batch, 4 + nc, N)`` layout that the ultralytics predictor, NMS and trackers already accept.
"""

from __future__ import annotations

import copy
import datetime as _dt
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from detectors.yolov5_unpickle import (
    Placeholder,
    RestrictedUnpickler,
    UnsafePickleError,
    checkpoint_globals,
    is_legacy_yolov5,
    restricted_loads,
    restricted_pickle,
)

__all__ = [
    "CONVERTER_VERSION",
    "LegacyCheckpoint",
    "LegacyCheckpointError",
    "RestrictedUnpickler",
    "UnsafePickleError",
    "YOLOv5Detect",
    "checkpoint_globals",
    "convert",
    "file_sha256",
    "import_yolov5",
    "is_legacy_yolov5",
    "read_legacy_checkpoint",
    "register_safe_globals",
    "restricted_loads",
    "restricted_pickle",
    "save_checkpoint",
]

#: Bump when the converted model changes, so cached conversions are rebuilt.
CONVERTER_VERSION = 1


class LegacyCheckpointError(ValueError):
    """A YOLOv5 checkpoint that cannot be converted (unsupported variant or not a detector)."""


# --------------------------------------------------------------------------------------------
# Reading the legacy checkpoint


@dataclass
class LegacyCheckpoint:
    """Tensors and metadata recovered from a YOLOv5 checkpoint without its code."""

    state: dict[str, torch.Tensor]
    names: dict[int, str]
    nc: int
    anchors: torch.Tensor  # (levels, anchors per level, 2), in grid units
    strides: torch.Tensor  # (levels,)
    depth: float
    width: float
    head_index: int
    bn: dict[str, tuple[float, float]] = field(default_factory=dict)  # path -> (eps, momentum)
    half: bool = False
    yaml: dict = field(default_factory=dict)  # the YOLOv5 model description stored in the file


def _type_name(obj: Any) -> str:
    return getattr(type(obj), "_qualname", type(obj).__name__)


def _flatten(obj: Any, prefix: str, out: dict[str, torch.Tensor], bn: dict) -> None:
    """Walk ``_parameters``/``_buffers``/``_modules`` like ``state_dict()`` (old pickles lack it)."""
    d = obj.__dict__
    for key in ("_parameters", "_buffers"):
        for name, t in (d.get(key) or {}).items():
            if isinstance(t, torch.Tensor):
                out[prefix + name] = t.detach()
    if _type_name(obj).endswith("BatchNorm2d"):
        bn[prefix.rstrip(".")] = (float(d.get("eps", 1e-5)), float(d.get("momentum", 0.1) or 0.1))
    for name, child in (d.get("_modules") or {}).items():
        if child is not None:
            _flatten(child, f"{prefix}{name}.", out, bn)


def read_legacy_checkpoint(path: str | Path) -> LegacyCheckpoint:
    """Load a YOLOv5 ``.pt`` with the restricted unpickler and extract what conversion needs."""
    ckpt = torch.load(
        str(path), map_location="cpu", pickle_module=restricted_pickle, weights_only=False
    )
    model = (ckpt.get("ema") or ckpt.get("model")) if isinstance(ckpt, dict) else ckpt
    if not isinstance(model, Placeholder) or "_modules" not in model.__dict__:
        raise LegacyCheckpointError("no YOLOv5 model found in the checkpoint ('model' key missing)")
    kind = _type_name(model)
    if not kind.endswith((".Model", ".DetectionModel")):
        raise LegacyCheckpointError(
            f"it holds a {kind.rsplit('.', 1)[-1]}, not a YOLOv5 detection model"
        )
    layers = model.__dict__["_modules"].get("model")
    seq = layers.__dict__.get("_modules", {}) if layers is not None else {}
    if not seq:
        raise LegacyCheckpointError("the YOLOv5 model has no layers")
    head_index = max(int(k) for k in seq)
    head = seq[str(head_index)]
    if not _type_name(head).endswith(".Detect"):
        raise LegacyCheckpointError(
            f"its last layer is {_type_name(head).rsplit('.', 1)[-1]}, not Detect "
            "(segmentation/classification YOLOv5 models are not supported)"
        )
    state: dict[str, torch.Tensor] = {}
    bn: dict[str, tuple[float, float]] = {}
    _flatten(model, "", state, bn)
    hd = head.__dict__
    anchors = hd.get("_buffers", {}).get("anchors")
    stride = hd.get("stride", getattr(model, "stride", None))
    if anchors is None or stride is None:
        raise LegacyCheckpointError("the Detect layer has no anchors/stride (very old YOLOv5?)")
    yaml = getattr(model, "yaml", None) or {}
    names = getattr(model, "names", None) or hd.get("names")
    nc = int(hd.get("nc") or yaml.get("nc") or 0)
    if isinstance(names, (list, tuple)):
        names = dict(enumerate(names))
    if not isinstance(names, dict) or len(names) != nc:
        names = {i: f"class{i}" for i in range(nc)}
    return LegacyCheckpoint(
        state={k: v.float() for k, v in state.items()},
        names={int(k): str(v) for k, v in names.items()},
        nc=nc,
        anchors=anchors.detach().float().clone(),
        strides=torch.as_tensor(stride).detach().float().flatten().clone(),
        depth=float(yaml.get("depth_multiple", 1.0)),
        width=float(yaml.get("width_multiple", 1.0)),
        head_index=head_index,
        bn=bn,
        half=any(t.dtype == torch.float16 for t in state.values()),
        yaml=dict(yaml) if isinstance(yaml, dict) else {},
    )


# --------------------------------------------------------------------------------------------
# The anchor-based head


class YOLOv5Detect(nn.Module):
    """YOLOv5's anchor-based head, emitting ultralytics' ``(batch, 4 + nc, N)`` xywh-pixel output.

    Decoding (after sigmoid): ``xy = (2s - 0.5 + grid) * stride``, ``wh = (2s)^2 * anchor * stride``,
    class score = class probability * objectness, which is what YOLOv5's NMS ranked on.
    """

    def __init__(
        self, nc: int, anchors: torch.Tensor, strides: torch.Tensor, ch: list[int]
    ) -> None:
        super().__init__()
        self.nc = nc
        self.no = nc + 5
        self.nl, self.na = int(anchors.shape[0]), int(anchors.shape[1])
        self.register_buffer("anchors", anchors.clone().float())  # grid units, like YOLOv5
        self.register_buffer("stride", strides.clone().float(), persistent=False)
        self.m = nn.ModuleList(nn.Conv2d(c, self.na * self.no, 1) for c in ch)
        # Layer bookkeeping that ultralytics' DetectionModel reads (set again by the converter).
        self.f: list[int] = []
        self.i = 0
        self.type = f"{__name__}.YOLOv5Detect"
        self.np = sum(p.numel() for p in self.parameters())

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        out = []
        for i, x in enumerate(xs):
            p = self.m[i](x)
            b, _, h, w = p.shape
            p = p.view(b, self.na, self.no, h, w).permute(0, 1, 3, 4, 2).sigmoid()
            gy, gx = torch.meshgrid(
                torch.arange(h, device=p.device, dtype=p.dtype),
                torch.arange(w, device=p.device, dtype=p.dtype),
                indexing="ij",
            )
            grid = torch.stack((gx, gy), -1).view(1, 1, h, w, 2)
            stride = self.stride[i].to(p.dtype)
            anchor = (self.anchors[i] * self.stride[i]).to(p.dtype).view(1, self.na, 1, 1, 2)
            xy = (p[..., :2] * 2 - 0.5 + grid) * stride
            wh = (p[..., 2:4] * 2) ** 2 * anchor
            cls = p[..., 5:] * p[..., 4:5]
            out.append(torch.cat((xy, wh, cls), -1).reshape(b, -1, 4 + self.nc))
        return torch.cat(out, 1).permute(0, 2, 1).contiguous()


# --------------------------------------------------------------------------------------------
# Conversion


_SCALES = {
    "n": (0.33, 0.25),
    "s": (0.33, 0.50),
    "m": (0.67, 0.75),
    "l": (1.0, 1.0),
    "x": (1.33, 1.25),
}


def _scale_letter(depth: float, width: float) -> str:
    for letter, (d, w) in _SCALES.items():
        if abs(d - depth) < 1e-6 and abs(w - width) < 1e-6:
            return letter
    return ""


def _ultralytics_cfg(legacy: LegacyCheckpoint) -> dict:
    """``yolov5.yaml`` (or ``yolov5-p6.yaml``) with the checkpoint's own depth/width multiples."""
    from ultralytics.nn.tasks import yaml_model_load  # noqa: PLC0415 (heavy: ultralytics)

    if legacy.anchors.shape[0] not in (3, 4):
        raise LegacyCheckpointError(f"{legacy.anchors.shape[0]} detection levels are not supported")
    cfg = copy.deepcopy(
        yaml_model_load("yolov5.yaml" if legacy.anchors.shape[0] == 3 else "yolov5-p6.yaml")
    )
    cfg.pop("scales", None)  # use the legacy multiples as-is (YOLOv5 had no channel cap)
    letter = _scale_letter(legacy.depth, legacy.width)
    cfg.update(
        nc=legacy.nc,
        depth_multiple=legacy.depth,
        width_multiple=legacy.width,
        scale=letter,
        yaml_file=f"yolov5{letter}{'6' if legacy.anchors.shape[0] == 4 else ''}-legacy.yaml",
    )
    return cfg


def convert(legacy: LegacyCheckpoint) -> nn.Module:
    """Build an ultralytics ``DetectionModel`` carrying the legacy weights and an anchor-based head."""
    from ultralytics.nn.tasks import DetectionModel  # noqa: PLC0415 (heavy: ultralytics)

    model = DetectionModel(_ultralytics_cfg(legacy), ch=3, nc=legacy.nc, verbose=False)
    if len(model.model) != legacy.head_index + 1:
        raise LegacyCheckpointError(
            f"the checkpoint has {legacy.head_index + 1} layers, the YOLOv5 v6 layout has "
            f"{len(model.model)} (only YOLOv5 v6.x architectures are supported)"
        )
    old = model.model[-1]
    prefix = f"model.{legacy.head_index}."
    ch = []
    for level in range(legacy.anchors.shape[0]):
        w = legacy.state.get(f"{prefix}m.{level}.weight")
        if w is None or w.shape[0] != legacy.anchors.shape[1] * (legacy.nc + 5):
            raise LegacyCheckpointError(
                f"unexpected Detect layer (missing or odd {prefix}m.{level})"
            )
        ch.append(int(w.shape[1]))
    head = YOLOv5Detect(legacy.nc, legacy.anchors, legacy.strides, ch)
    head.f, head.i = old.f, old.i
    model.model[-1] = head
    state = {k: v for k, v in legacy.state.items() if not k.endswith("anchor_grid")}
    ours = model.state_dict()
    problems = [k for k in ours if k not in state] + [k for k in state if k not in ours]
    problems += [k for k in ours if k in state and ours[k].shape != state[k].shape]
    if problems:
        raise LegacyCheckpointError(
            "layers do not match the YOLOv5 v6 architecture (first differences: "
            f"{', '.join(problems[:4])}); only YOLOv5 v6.x P5/P6 detection models are supported"
        )
    model.load_state_dict(state, strict=True)
    for name, mod in model.named_modules():
        if isinstance(mod, nn.BatchNorm2d) and name in legacy.bn:
            mod.eps, mod.momentum = legacy.bn[name]
    model.stride = legacy.strides.clone()
    model.names = dict(legacy.names)
    model.task = "detect"
    return model.eval()


def save_checkpoint(model: nn.Module, out: str | Path, *, source: Path, half: bool) -> Path:
    """Write an ultralytics-format checkpoint (``ultralytics.YOLO(out)`` loads it) atomically."""
    import ultralytics  # noqa: PLC0415 (heavy: only for its version)

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    m = copy.deepcopy(model).float()
    if half:
        m = m.half()
    ckpt = {
        "date": _dt.datetime.now().isoformat(),
        "version": ultralytics.__version__,
        "license": "AGPL-3.0 License (https://ultralytics.com/license)",
        "docs": "https://docs.ultralytics.com",
        "epoch": -1,
        "best_fitness": None,
        "model": m,
        "ema": None,
        "updates": None,
        "optimizer": None,
        "train_args": {"task": "detect", "imgsz": 640, "model": source.name},
        "train_metrics": None,
        "train_results": None,
        "vigil": {
            "converter": f"{__name__}/{CONVERTER_VERSION}",
            "source": source.name,
            "source_sha256": file_sha256(source),
        },
    }
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        torch.save(ckpt, tmp)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def import_yolov5(src: str | Path, out: str | Path) -> Path:
    """Read, convert and save a legacy YOLOv5 checkpoint; returns ``out``."""
    src = Path(src)
    legacy = read_legacy_checkpoint(src)
    return save_checkpoint(convert(legacy), out, source=src, half=legacy.half)


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def register_safe_globals() -> None:
    """Let ``torch.load(weights_only=True)`` (``ULTRALYTICS_SAFE_LOAD=1``) rebuild the head class."""
    add = getattr(torch.serialization, "add_safe_globals", None)
    if add is not None:
        add([YOLOv5Detect])
