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

Modules: this one (the data the trainer reads, the training run), :mod:`.train_options` (the
knobs, the result, the trainer arguments), :mod:`.base_model` (what training starts from),
:mod:`.model_card`. ``TrainOptions``, ``TrainResult``, ``TrainingError`` and
``write_model_card`` are importable from here.
"""

from __future__ import annotations

import csv
import datetime as _dt
import json
import logging
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import yaml

from detectors.retrain import dataset as ds
from detectors.retrain.base_model import resolve_base  # sets YOLO_OFFLINE (offline training)
from detectors.retrain.model_card import write_model_card
from detectors.retrain.train_options import (
    TrainingError,
    TrainOptions,
    TrainResult,
    freeze_layers,
    trainer_args,
)

__all__ = [
    "TrainOptions",
    "TrainResult",
    "TrainingError",
    "prepare_data",
    "train",
    "write_model_card",
]

log = logging.getLogger(__name__)


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
    yaml_path.write_text(yaml.safe_dump({"path": str(out), **data}, sort_keys=False))
    return yaml_path, {"counts": counts, "names": names, "root": str(root)}, problems


# --------------------------------------------------------------------------------------------
# Training


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
    from ultralytics import YOLO  # noqa: PLC0415 (imports torch)

    from detectors.loading import select_device  # noqa: PLC0415 (imports torch)

    opts = opts or TrainOptions()
    opts.check()
    device = select_device(opts.device)
    run_name = name or _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    run_dir = (Path(project).expanduser() / run_name).resolve()
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # --project in a read-only place, or a file
        raise TrainingError(f"cannot create the run folder {run_dir}: {e.strerror or e}") from None
    data_yaml, data_info, problems = prepare_data(data, run_dir / "data")
    for p in problems:
        log.warning("dataset: %s (skipped)", p)
    names = data_info["names"]
    start, kind, head_index = resolve_base(base, names, run_dir)
    phases: list[tuple[str, int, int]] = []
    if opts.head_epochs:
        phases.append(("head", opts.head_epochs, head_index))
    if opts.epochs:
        phases.append(("main", opts.epochs, freeze_layers(opts.freeze, head_index)))
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
        args = trainer_args(opts, data_yaml, device)
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
    import matplotlib  # noqa: PLC0415 (matplotlib: slow to import, only needed here)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415 (matplotlib: slow to import, only needed here)

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
