"""Counts per camera, split, collection reason, label source, class and review, for people to
read."""

from __future__ import annotations

import contextlib
import datetime as _dt
from collections import Counter
from pathlib import Path
from typing import Any

from detectors.retrain.dataset.folder import Dataset
from detectors.retrain.dataset.labels import read_labels
from detectors.retrain.dataset.layout import DATA_YAML, class_names, rel_path
from detectors.retrain.dataset.manifest import record_ts
from detectors.retrain.dataset.reviewed import is_reviewed


def stats(root: str | Path) -> dict[str, Any]:
    """Counts per camera, split, collection reason, label source and class; disk use; reviewed
    examples (``reviewed``: images, true/false positives, boxes in their labels, per split)."""
    ds = Dataset.open(root)
    names = class_names(ds.root) if (ds.root / DATA_YAML).is_file() else {}
    out: dict[str, Any] = {
        "root": str(ds.root),
        "images": len(ds.manifest.records),
        "classes": names,
        "cameras": {},
        "splits": Counter(),
        "reasons": Counter(),
        "label_sources": Counter(),
        "boxes_per_class": Counter(),
        "unlabeled": 0,
        "background": 0,
        "bytes": 0,
        "problems": [str(p) for p in ds.manifest.problems],
        "reviewed": {
            "images": 0,
            "true_positive": 0,
            "false_positive": 0,
            "boxes": 0,  # labels in reviewed images (what the promotion gate counts)
            "splits": Counter(),
        },
    }
    rv = out["reviewed"]
    nc = len(names) or 10**6
    first = last = None
    for r in ds.records:
        cam = str(r.get("camera") or "unknown")
        c = out["cameras"].setdefault(cam, {"images": 0, "boxes": 0})
        c["images"] += 1
        out["splits"][r.get("split") or "unassigned"] += 1
        for why in r.get("reasons") or ["unknown"]:
            out["reasons"][why] += 1
        src = str(r.get("label_source") or "none")
        out["label_sources"][src.split("@")[0]] += 1
        with contextlib.suppress(OSError):
            out["bytes"] += (ds.root / r["image"]).stat().st_size
        reviewed = is_reviewed(r)
        if reviewed:
            rv["images"] += 1
            rv[r["review"]["verdict"]] += 1
            rv["splits"][r.get("split") or "unassigned"] += 1
        t = record_ts(r)
        first = t if first is None else min(first, t)
        last = t if last is None else max(last, t)
        lab = ds.label_file(r["image"])
        if not lab.is_file():
            out["unlabeled"] += 1
            continue
        boxes, problems = read_labels(lab, nc, rel_path(ds.root, lab))
        out["problems"].extend(str(p) for p in problems)
        if not boxes:
            out["background"] += 1
        c["boxes"] += len(boxes)
        if reviewed:
            rv["boxes"] += len(boxes)
        for b in boxes:
            out["boxes_per_class"][names.get(b.cls, str(b.cls))] += 1
    out["time_range"] = [first, last]
    for k in ("splits", "reasons", "label_sources", "boxes_per_class"):
        out[k] = dict(out[k])
    rv["splits"] = dict(rv["splits"])
    return out


def format_stats(s: dict[str, Any]) -> str:
    def ts(t: float | None) -> str:
        if t is None:
            return "-"
        return _dt.datetime.fromtimestamp(t, _dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")

    lines = [
        f"dataset {s['root']}: {s['images']} image(s), {s['bytes'] / 1e6:.1f} MB, "
        f"{s['unlabeled']} unlabeled, {s['background']} background (no boxes)",
        f"  captured {ts(s['time_range'][0])} .. {ts(s['time_range'][1])}",
        "  classes: " + (", ".join(f"{k}:{v}" for k, v in s["classes"].items()) or "-"),
        "  splits: " + ", ".join(f"{k} {v}" for k, v in sorted(s["splits"].items())),
        "  reasons: " + ", ".join(f"{k} {v}" for k, v in sorted(s["reasons"].items())),
        "  labels: " + ", ".join(f"{k} {v}" for k, v in sorted(s["label_sources"].items())),
        "  boxes: " + (", ".join(f"{k} {v}" for k, v in s["boxes_per_class"].items()) or "none"),
        _format_reviewed(s.get("reviewed")),
        "  cameras:",
    ]
    for cam, c in sorted(s["cameras"].items()):
        lines.append(f"    {cam:<24} {c['images']:>6} image(s) {c['boxes']:>7} box(es)")
    if s["problems"]:
        lines.append(f"  {len(s['problems'])} problem(s):")
        lines.extend(f"    {p}" for p in s["problems"][:50])
    return "\n".join(lines)


def _format_reviewed(rv: dict[str, Any] | None) -> str:
    if not rv or not rv["images"]:
        return "  reviewed: none"
    splits = ", ".join(f"{k} {v}" for k, v in sorted(rv["splits"].items()))
    return (
        f"  reviewed: {rv['images']} image(s) ({rv['true_positive']} true positive, "
        f"{rv['false_positive']} false positive), {rv['boxes']} box(es); {splits}"
    )
