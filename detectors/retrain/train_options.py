"""What ``vigil retrain`` can be told (:class:`TrainOptions`), what a run produced
(:class:`TrainResult`), and how the options become ultralytics trainer arguments."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.common.errors import UserError

OPTIMIZERS = ("auto", "SGD", "Adam", "AdamW")
#: Named freeze points for YOLOv5-style models (backbone = layers 0-9, neck 10-23, head 24).
FREEZE_NAMES = {"none": 0, "backbone": 10, "head": -1}


class TrainingError(UserError, ValueError):
    """Training cannot start or produced nothing usable; the message says why."""


@dataclass
class TrainOptions:
    """The knobs operators expect; defaults suit fixed cameras (no vertical flips or rotations)."""

    epochs: int = 30
    head_epochs: int = 0  # head-only warm-up epochs before the main phase
    freeze: int | str = "backbone"  # layers frozen in the main phase: N, backbone, head, none
    imgsz: int = 640
    batch: int = 16
    optimizer: str = "auto"
    lr0: float | None = (
        None  # None: 0.01 for SGD, 0.001 for Adam/AdamW, ultralytics' choice for auto
    )
    lrf: float = 0.01
    cos_lr: bool = False
    warmup_epochs: float = 1.0
    momentum: float = 0.937
    weight_decay: float = 5e-4
    dropout: float = 0.0
    patience: int = 10
    seed: int = 0
    fliplr: float = 0.5
    scale: float = 0.3
    translate: float = 0.1
    hsv_h: float = 0.015
    hsv_s: float = 0.5
    hsv_v: float = 0.4
    mosaic: float = 0.5
    close_mosaic: int = 2
    nbs: int | None = None  # nominal batch for gradient accumulation; None: the batch itself
    device: str = "auto"
    workers: int = 0
    cache: bool = False  # True: decoded images in RAM (faster; ultralytics: not deterministic)

    def check(self) -> None:
        if self.epochs < 0 or self.head_epochs < 0 or self.epochs + self.head_epochs == 0:
            raise TrainingError("train for at least one epoch (--epochs / --head-epochs)")
        if self.imgsz % 32 or self.imgsz < 32:
            raise TrainingError(f"--imgsz must be a multiple of 32, got {self.imgsz}")
        if self.batch < 1:
            raise TrainingError("--batch must be >= 1")
        if self.optimizer not in OPTIMIZERS:
            raise TrainingError(f"--optimizer must be one of {', '.join(OPTIMIZERS)}")
        if isinstance(self.freeze, str) and self.freeze not in FREEZE_NAMES:
            try:
                self.freeze = int(self.freeze)
            except ValueError:
                raise TrainingError(
                    f"--freeze must be a layer count or one of {', '.join(FREEZE_NAMES)}"
                ) from None
        if isinstance(self.freeze, int) and self.freeze < 0:
            raise TrainingError("--freeze must be >= 0")


@dataclass
class TrainResult:
    run_dir: Path
    weights: Path  # the candidate (best of the last phase)
    base: str
    base_kind: str
    names: dict[int, str]
    epochs_run: int = 0
    seconds: float = 0.0
    seconds_per_epoch: float = 0.0  # training only, validation excluded
    phases: list[dict[str, Any]] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def freeze_layers(freeze: int | str, head_index: int) -> int:
    """How many layers ``--freeze`` freezes in a model whose head is layer ``head_index``."""
    if isinstance(freeze, str):
        n = FREEZE_NAMES[freeze]
        return head_index if n < 0 else n
    return min(int(freeze), head_index)


def trainer_args(opts: TrainOptions, data_yaml: Path, device: str) -> dict[str, Any]:
    """ultralytics ``model.train`` arguments: hyper-parameters and augmentation (no vertical
    flips, rotations, shear or mixup: the cameras are fixed)."""
    lr0 = opts.lr0
    if lr0 is None and opts.optimizer != "auto":
        lr0 = 0.01 if opts.optimizer == "SGD" else 0.001
    args: dict[str, Any] = dict(
        data=str(data_yaml),
        imgsz=opts.imgsz,
        batch=opts.batch,
        optimizer=opts.optimizer,
        lrf=opts.lrf,
        cos_lr=opts.cos_lr,
        warmup_epochs=opts.warmup_epochs,
        momentum=opts.momentum,
        weight_decay=opts.weight_decay,
        dropout=opts.dropout,
        patience=opts.patience,
        seed=opts.seed,
        deterministic=True,
        fliplr=opts.fliplr,
        flipud=0.0,
        degrees=0.0,
        shear=0.0,
        perspective=0.0,
        scale=opts.scale,
        translate=opts.translate,
        hsv_h=opts.hsv_h,
        hsv_s=opts.hsv_s,
        hsv_v=opts.hsv_v,
        mosaic=opts.mosaic,
        mixup=0.0,
        nbs=opts.nbs or opts.batch,
        device=device,
        workers=opts.workers,
        cache="ram" if opts.cache else False,
        amp=device != "cpu",
        plots=False,  # ultralytics' plots fetch a font from the internet; Vigil draws its own
        val=True,
        exist_ok=True,
        verbose=True,
    )
    if lr0 is not None:
        args["lr0"] = lr0
    return args
