"""Comparing two detectors' boxes frame by frame (the accuracy tolerance of issue 4)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pipeline.common.geometry import box_iou

IOU_MIN = 0.9
CONF_TOL = 0.05


def match_detections(
    ref: Sequence,
    test: Sequence,
    conf_thres: float,
    iou_min: float = IOU_MIN,
    tol: float = CONF_TOL,
) -> dict[str, Any]:
    """Compare two detection lists of one frame (objects with class_id, confidence, box).

    Greedy by reference confidence: a test detection of the same class with IoU >= ``iou_min``
    matches; a match whose confidences differ by more than ``tol`` is a failure. Unmatched
    detections count as failures unless their confidence is within ``tol`` of ``conf_thres``
    (a box at 0.26 on one side and 0.24 on the other is the same answer at the threshold).
    """
    used: set[int] = set()
    out = {"ref": len(ref), "test": len(test), "matched": 0, "missing": 0, "extra": 0}
    out.update({"borderline": 0, "conf_fail": 0, "min_iou": 1.0, "max_conf_diff": 0.0})
    for r in sorted(ref, key=lambda d: -d.confidence):
        best, best_iou = -1, 0.0
        for j, t in enumerate(test):
            if j in used or t.class_id != r.class_id:
                continue
            iou = box_iou(r.box, t.box)
            if iou > best_iou:
                best, best_iou = j, iou
        if best >= 0 and best_iou >= iou_min:
            used.add(best)
            out["matched"] += 1
            diff = abs(test[best].confidence - r.confidence)
            out["min_iou"] = min(out["min_iou"], best_iou)
            out["max_conf_diff"] = max(out["max_conf_diff"], diff)
            out["conf_fail"] += diff > tol
        elif r.confidence < conf_thres + tol:
            out["borderline"] += 1
        else:
            out["missing"] += 1
    for j, t in enumerate(test):
        if j not in used:
            if t.confidence < conf_thres + tol:
                out["borderline"] += 1
            else:
                out["extra"] += 1
    return out


def merge_matches(stats: list[dict[str, Any]]) -> dict[str, Any]:
    out = {k: sum(s[k] for s in stats) for k in ("ref", "test", "matched", "missing", "extra")}
    out["borderline"] = sum(s["borderline"] for s in stats)
    out["conf_fail"] = sum(s["conf_fail"] for s in stats)
    out["min_iou"] = round(min((s["min_iou"] for s in stats), default=1.0), 4)
    out["max_conf_diff"] = round(max((s["max_conf_diff"] for s in stats), default=0.0), 4)
    out["ok"] = out["missing"] == 0 and out["extra"] == 0 and out["conf_fail"] == 0
    return out
