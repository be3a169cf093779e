"""Fine-tuning a detector on a collected dataset with ultralytics' trainer.

The base can be:

* a legacy YOLOv5 checkpoint (``yolov5n.pt``) or its Vigil conversion: its backbone and neck are
  transferred into the matching ultralytics model (``yolov5{n,s,...}u``) with a fresh anchor-free
  head for the dataset's classes, and the result is saved as a checkpoint first (the trainer
  rebuilds a model from its yaml, i.e. from random weights, unless it starts from a file);
* any ultralytics detection checkpoint (a previous Vigil model, ``best.pt``...);
* a model yaml (``yolov5nu.yaml``): training from scratch, for comparisons.

Training runs in phases: optional head-only epochs (everything but the head frozen), then the main
phase with the first ``freeze`` layers frozen (0 trains all). Each run directory holds
ultralytics' output per phase, ``metrics.json``, ``results.png`` and ``MODEL_CARD.md``.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import datetime as _dt
import json
import logging
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

# Training never needs the network; without this ultralytics may look for updates or fonts.
os.environ.setdefault("YOLO_OFFLINE", "1")

from detectors.errors import WeightsError  # noqa: E402
from detectors.retrain import dataset as ds  # noqa: E402

log = logging.getLogger(__name__)


def _loading():
    """``detectors.loading`` imports torch; deferred so the CLI's argument parsing stays fast."""
    from detectors import loading

    return loading


OPTIMIZERS = ("auto", "SGD", "Adam", "AdamW")
#: Named freeze points for YOLOv5-style models (backbone = layers 0-9, neck 10-23, head 24).
FREEZE_NAMES = {"none": 0, "backbone": 10, "head": -1}


class TrainingError(ValueError):
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


# --------------------------------------------------------------------------------------------
# Data


def prepare_data(root: str | Path, out: Path) -> tuple[Path, dict[str, Any], list[ds.Problem]]:
    """Validated absolute-path split lists and a data.yaml for the trainer, under ``out``.

    Corrupt images and images with malformed label lines are left out and returned as problems.
    """
    root = Path(root).expanduser()
    names = ds.class_names(root)
    dset = ds.Dataset.open(root)
    dset.require_images()
    lists = {s: ds.split_images(root, s) for s in ds.SPLITS}
    if not lists["train"]:
        raise ds.DatasetError(
            f"dataset {root} has no train split: run `vigil dataset split {root}`"
        )
    if not lists["val"] and not lists["test"]:
        raise ds.DatasetError(f"dataset {root} has no val/test split: run `vigil dataset split`")
    out.mkdir(parents=True, exist_ok=True)
    problems: list[ds.Problem] = []
    counts: dict[str, int] = {}
    data: dict[str, Any] = {"names": names}
    for s, images in lists.items():
        if not images:
            continue
        report = ds.validate(root, images=images, require_labels=True)
        problems.extend(report.problems)
        problems.extend(ds.Problem(u, "no label file; left out") for u in report.unlabeled)
        counts[s] = len(report.good)
        if not report.good:
            continue
        path = out / f"{s}.txt"
        path.write_text("".join(f"{(root / rel).resolve()}\n" for rel in report.good))
        data[s] = str(path)
    if not counts.get("train"):
        raise ds.DatasetError(
            f"dataset {root}: no usable training images (all corrupt or unlabelled); "
            f"label them with `vigil dataset label {root} --teacher WEIGHTS`"
        )
    data.setdefault("val", data.get("test"))
    if not data.get("val"):
        raise ds.DatasetError(f"dataset {root}: no usable held-out images")
    yaml_path = out / "data.yaml"
    import yaml

    yaml_path.write_text(yaml.safe_dump({"path": str(out), **data}, sort_keys=False))
    return yaml_path, {"counts": counts, "names": names, "root": str(root)}, problems


# --------------------------------------------------------------------------------------------
# Base models


def _legacy_source(path: Path) -> tuple[dict[str, Any], dict, int] | None:
    """(state, ultralytics cfg, head index) of a legacy YOLOv5 file or its Vigil conversion."""
    from detectors import yolov5_legacy

    if yolov5_legacy.is_legacy_yolov5(path):
        legacy = yolov5_legacy.read_legacy_checkpoint(path)
        return legacy.state, yolov5_legacy._ultralytics_cfg(legacy), legacy.head_index
    model = _loading().load_model(str(path), device="cpu").model
    head = model.model[-1]
    if isinstance(head, yolov5_legacy.YOLOv5Detect):
        return model.state_dict(), copy.deepcopy(model.yaml), len(model.model) - 1
    return None


def transfer_backbone(base: str | Path, names: dict[int, str], out: str | Path) -> Path:
    """Backbone + neck of a YOLOv5 model into an ultralytics model with a fresh head; saved."""
    import ultralytics
    from ultralytics.nn.tasks import DetectionModel

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
    import torch  # lazily: `vigil --help` must not pay for loading torch

    torch.save(ckpt, out)
    return out


def resolve_base(base: str, names: dict[int, str], work: Path) -> tuple[str, str, int]:
    """(what to train from, kind, index of the head layer) for ``--base``."""
    text = str(base).strip()
    if text.endswith((".yaml", ".yml")):
        from ultralytics.nn.tasks import yaml_model_load

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


# --------------------------------------------------------------------------------------------
# Training


def _freeze_layers(freeze: int | str, head_index: int) -> int:
    if isinstance(freeze, str):
        n = FREEZE_NAMES[freeze]
        return head_index if n < 0 else n
    return min(int(freeze), head_index)


def _train_args(opts: TrainOptions, data_yaml: Path, device: str) -> dict[str, Any]:
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


def _read_results(path: Path) -> list[dict[str, float]]:
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        rows = []
        for row in csv.DictReader(f):
            clean = {}
            for k, v in row.items():
                try:
                    clean[k.strip()] = float(v)
                except (TypeError, ValueError):
                    continue
            rows.append(clean)
        return rows


def train(
    data: str | Path,
    base: str,
    opts: TrainOptions | None = None,
    *,
    project: str | Path = "runs/retrain",
    name: str | None = None,
) -> TrainResult:
    """Fine-tune ``base`` on the dataset folder ``data``; returns the candidate and the run dir."""
    from ultralytics import YOLO

    from detectors.loading import select_device

    opts = opts or TrainOptions()
    opts.check()
    device = select_device(opts.device)
    run_name = name or _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    run_dir = (Path(project).expanduser() / run_name).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    data_yaml, data_info, problems = prepare_data(data, run_dir / "data")
    for p in problems:
        log.warning("dataset: %s (skipped)", p)
    names = data_info["names"]
    start, kind, head_index = resolve_base(base, names, run_dir)
    phases: list[tuple[str, int, int]] = []
    if opts.head_epochs:
        phases.append(("head", opts.head_epochs, head_index))
    if opts.epochs:
        phases.append(("main", opts.epochs, _freeze_layers(opts.freeze, head_index)))
    result = TrainResult(
        run_dir=run_dir,
        weights=run_dir / "model.pt",
        base=str(base),
        base_kind=kind,
        names=names,
        data=data_info,
        problems=[str(p) for p in problems],
    )
    weights = start
    t_all = time.perf_counter()
    train_seconds = 0.0
    for phase, epochs, freeze in phases:
        model = YOLO(weights)
        timing: dict[str, float] = {"train": 0.0, "t0": 0.0, "epochs": 0}

        def epoch_start(_trainer, timing=timing) -> None:
            timing["t0"] = time.perf_counter()

        def epoch_end(_trainer, timing=timing) -> None:
            timing["train"] += time.perf_counter() - timing["t0"]
            timing["epochs"] += 1

        model.add_callback("on_train_epoch_start", epoch_start)
        model.add_callback("on_train_epoch_end", epoch_end)
        args = _train_args(opts, data_yaml, device)
        args.update(
            epochs=epochs,
            freeze=freeze,
            project=str(run_dir),
            name=phase,
            close_mosaic=min(opts.close_mosaic, epochs),
            pretrained=kind != "scratch" or phase != phases[0][0],
        )
        log.info("training phase %s: %d epoch(s), first %d layer(s) frozen", phase, epochs, freeze)
        t0 = time.perf_counter()
        model.train(**args)
        phase_dir = run_dir / phase
        best = phase_dir / "weights" / "best.pt"
        last = phase_dir / "weights" / "last.pt"
        weights = str(best if best.is_file() else last)
        if not Path(weights).is_file():
            raise TrainingError(f"training phase {phase} produced no weights in {phase_dir}")
        rows = _read_results(phase_dir / "results.csv")
        train_seconds += timing["train"]
        result.epochs_run += int(timing["epochs"])
        result.phases.append(
            {
                "phase": phase,
                "epochs": epochs,
                "epochs_run": int(timing["epochs"]),
                "freeze": freeze,
                "seconds": round(time.perf_counter() - t0, 2),
                "train_seconds": round(timing["train"], 2),
                "results": rows,
                "weights": weights,
            }
        )
    result.seconds = round(time.perf_counter() - t_all, 2)
    result.seconds_per_epoch = round(train_seconds / max(result.epochs_run, 1), 2)
    shutil.copy2(weights, result.weights)
    _plot(result)
    (run_dir / "train.json").write_text(
        json.dumps(
            {
                "options": asdict(opts),
                "base": result.base,
                "base_kind": kind,
                "epochs_run": result.epochs_run,
                "seconds": result.seconds,
                "seconds_per_epoch": result.seconds_per_epoch,
                "phases": [{k: v for k, v in p.items() if k != "results"} for p in result.phases],
                "data": data_info,
                "problems": result.problems,
            },
            indent=2,
            default=str,
        )
    )
    return result


def _plot(result: TrainResult) -> Path | None:
    """``results.png``: losses and mAP per epoch across phases (matplotlib, no downloads)."""
    rows = [r for p in result.phases for r in p["results"]]
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = list(range(1, len(rows) + 1))
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for key in ("train/box_loss", "train/cls_loss", "val/box_loss", "val/cls_loss"):
        if key in rows[0]:
            axes[0].plot(epochs, [r.get(key) for r in rows], marker=".", label=key)
    axes[0].set_xlabel("epoch")
    axes[0].set_title("loss")
    axes[0].legend()
    for key in ("metrics/mAP50(B)", "metrics/mAP50-95(B)", "metrics/precision(B)"):
        if key in rows[0]:
            axes[1].plot(epochs, [r.get(key) for r in rows], marker=".", label=key)
    axes[1].set_xlabel("epoch")
    axes[1].set_title("validation")
    axes[1].legend()
    fig.tight_layout()
    out = result.run_dir / "results.png"
    fig.savefig(out, dpi=80)
    plt.close(fig)
    return out


# --------------------------------------------------------------------------------------------
# Model card


def _fmt(v: Any) -> str:
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def write_model_card(
    result: TrainResult,
    opts: TrainOptions,
    evaluation: dict[str, Any] | None = None,
    decision: dict[str, Any] | None = None,
) -> Path:
    """``MODEL_CARD.md`` in the run directory: data, base, knobs, results, promotion decision."""
    d = result.data
    lines = [
        f"# Model card: {result.run_dir.name}",
        "",
        f"Trained {_dt.datetime.now().strftime('%Y-%m-%d %H:%M')} with Vigil "
        "(`vigil retrain`, ultralytics trainer).",
        "",
        "## Data",
        f"- dataset: `{d.get('root')}`",
        "- classes: " + ", ".join(f"{k}: {v}" for k, v in result.names.items()),
        "- images used: " + ", ".join(f"{k} {v}" for k, v in (d.get("counts") or {}).items()),
        f"- problems (skipped): {len(result.problems)}",
    ]
    with_stats = None
    with contextlib.suppress(ds.DatasetError, OSError):
        with_stats = ds.stats(d.get("root"))
    if with_stats:
        lines.append(
            "- cameras: "
            + ", ".join(f"{c} ({v['images']})" for c, v in with_stats["cameras"].items())
        )
        lines.append(
            "- label sources: "
            + ", ".join(f"{k} {v}" for k, v in with_stats["label_sources"].items())
        )
        lines.append(
            "- collected because: "
            + ", ".join(f"{k} {v}" for k, v in with_stats["reasons"].items())
        )
    lines += [
        "",
        "## Base",
        f"- `{result.base}` ({result.base_kind})",
    ]
    if result.base_kind == "yolov5-transfer":
        lines.append(
            "- backbone and neck transferred from the legacy YOLOv5 model; the anchor-free head "
            "is new (trained from random initialisation)"
        )
    lines += ["", "## Training", "| knob | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in asdict(opts).items()]
    phases = ", ".join(
        "{phase} {epochs_run}/{epochs} epoch(s), first {freeze} layer(s) frozen".format(**p)
        for p in result.phases
    )
    lines += [
        "",
        f"Phases: {phases}; {result.seconds:.0f} s in all, "
        f"{result.seconds_per_epoch:.1f} s per training epoch (validation excluded).",
        "",
    ]
    if evaluation:
        lines += ["## Results (held-out split)", _eval_table(evaluation), ""]
    if decision:
        lines += [
            "## Promotion",
            f"- decision: **{_verdict(decision)}**",
            *(f"- {r}" for r in decision.get("reasons", [])),
            "",
        ]
    lines += [
        "## Limits",
        "- Labels may be pseudo-labels from a teacher model: the scores above measure agreement "
        "with that teacher, not with the truth, unless the label source says 'human'.",
        "- Valid for the cameras and conditions in the data; check the drift report "
        "(`vigil models drift`) before trusting it elsewhere.",
        "",
    ]
    out = result.run_dir / "MODEL_CARD.md"
    out.write_text("\n".join(lines))
    return out


def _verdict(decision: dict[str, Any]) -> str:
    if not decision.get("promote"):
        return "production kept"
    if decision.get("promoted") is True:
        return "promoted to production"
    if decision.get("promoted") is False:
        return "better than production, not promoted (dry run or no registry)"
    return "promote"


def _eval_table(e: dict[str, Any]) -> str:
    rows = [
        "| metric | value |",
        "|---|---|",
        f"| mAP50 | {_fmt(e.get('map50'))} |",
        f"| mAP50-95 | {_fmt(e.get('map50_95'))} |",
        f"| precision | {_fmt(e.get('precision'))} |",
        f"| recall | {_fmt(e.get('recall'))} |",
        f"| speed (ms/image) | {_fmt(e.get('ms_per_image'))} |",
    ]
    for cls, v in (e.get("per_class") or {}).items():
        rows.append(f"| AP50 {cls} ({v.get('instances')} boxes) | {_fmt(v.get('ap50'))} |")
    return "\n".join(rows)
