"""What training starts from (``--base``): a legacy YOLOv5 model (its backbone and neck
transferred into an ultralytics model with a fresh head), an ultralytics checkpoint, or a model
yaml (from scratch)."""

from __future__ import annotations

import copy
import datetime as _dt
import os
from pathlib import Path
from typing import Any

# Training never needs the network; without this ultralytics may look for updates or fonts.
# Set before anything imports ultralytics (train imports this module).
os.environ.setdefault("YOLO_OFFLINE", "1")

from detectors.errors import WeightsError  # noqa: E402


def _loading():
    """``detectors.loading`` imports torch; deferred so the CLI's argument parsing stays fast."""
    from detectors import loading  # noqa: PLC0415 (imports torch)

    return loading


def _legacy_source(path: Path) -> tuple[dict[str, Any], dict, int] | None:
    """(state, ultralytics cfg, head index) of a legacy YOLOv5 file or its Vigil conversion."""
    from detectors import yolov5_legacy  # noqa: PLC0415 (imports torch)

    if yolov5_legacy.is_legacy_yolov5(path):
        try:
            legacy = yolov5_legacy.read_legacy_checkpoint(path)
        except yolov5_legacy.LegacyCheckpointError as e:
            raise WeightsError(f"cannot read {path}: {e}") from None
        return legacy.state, yolov5_legacy._ultralytics_cfg(legacy), legacy.head_index
    model = _loading().load_model(str(path), device="cpu").model
    head = model.model[-1]
    if isinstance(head, yolov5_legacy.YOLOv5Detect):
        return model.state_dict(), copy.deepcopy(model.yaml), len(model.model) - 1
    return None


def transfer_backbone(base: str | Path, names: dict[int, str], out: str | Path) -> Path:
    """Backbone + neck of a YOLOv5 model into an ultralytics model with a fresh head; saved."""
    import ultralytics  # noqa: PLC0415 (imports torch)
    from ultralytics.nn.tasks import DetectionModel  # noqa: PLC0415 (imports torch)

    path = Path(base)
    src = _legacy_source(path)
    if src is None:
        raise WeightsError(f"{path} is not a YOLOv5 model (no anchor-based Detect head)")
    state, cfg, head_index = src
    cfg = copy.deepcopy(cfg)
    cfg["nc"] = len(names)
    model = DetectionModel(cfg, ch=3, nc=len(names), verbose=False)
    ours = model.state_dict()
    head = f"model.{head_index}."
    take = {
        k: v
        for k, v in state.items()
        if not k.startswith(head) and k in ours and ours[k].shape == v.shape
    }
    body = [k for k in ours if not k.startswith(head)]
    missing = [k for k in body if k not in take]
    if missing:
        raise WeightsError(
            f"cannot transfer {path}: {len(missing)} backbone/neck tensors do not match "
            f"(first: {', '.join(missing[:3])})"
        )
    model.load_state_dict(take, strict=False)
    model.names = dict(names)
    model.args = {"imgsz": 640}
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    ckpt = {
        "date": _dt.datetime.now().isoformat(),
        "version": ultralytics.__version__,
        "epoch": -1,
        "best_fitness": None,
        "model": model.float(),
        "ema": None,
        "updates": None,
        "optimizer": None,
        "train_args": {"task": "detect", "imgsz": 640, "model": path.name},
        "train_metrics": None,
        "train_results": None,
        "vigil": {
            "transferred_from": path.name,
            "source_sha256": _loading().file_sha256(path),
            "layers": f"0-{head_index - 1}",
        },
    }
    import torch  # noqa: PLC0415 (torch: `vigil --help` must not pay for loading it)

    torch.save(ckpt, out)
    return out


def resolve_base(base: str, names: dict[int, str], work: Path) -> tuple[str, str, int]:
    """(what to train from, kind, index of the head layer) for ``--base``."""
    text = str(base).strip()
    if text.endswith((".yaml", ".yml")):
        from ultralytics.nn.tasks import yaml_model_load  # noqa: PLC0415 (imports torch)

        try:
            cfg = yaml_model_load(text)
        except Exception as e:  # missing file or unknown model name
            raise WeightsError(f"model yaml {text!r} cannot be loaded ({e})") from None
        return text, "scratch", len(cfg["backbone"]) + len(cfg["head"]) - 1
    source = _loading().resolve_weights(text)
    if not isinstance(source, Path):
        raise WeightsError(
            f"base weights {text!r} not found locally; give the path of a .pt file "
            "(nothing is downloaded during training)"
        )
    if source.suffix != ".pt":
        raise WeightsError(f"{source} is not a PyTorch checkpoint (.pt); training needs one")
    model = _loading().load_model(
        str(source), device="cpu"
    )  # WeightsError for corrupt/wrong-task files
    if model.task != "detect":
        raise WeightsError(f"{source} is a {model.task} model; retraining needs a detection model")
    if _legacy_source(source) is not None:
        out = transfer_backbone(source, names, work / "base-transferred.pt")
        return str(out), "yolov5-transfer", len(model.model.model) - 1
    return str(source), "ultralytics", len(model.model.model) - 1
