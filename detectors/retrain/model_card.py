"""``MODEL_CARD.md``: what a trained model was made from, how, how well it does, and its limits."""

from __future__ import annotations

import contextlib
import datetime as _dt
from dataclasses import asdict
from pathlib import Path
from typing import Any

from detectors.retrain import dataset as ds
from detectors.retrain.train_options import TrainOptions, TrainResult


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
