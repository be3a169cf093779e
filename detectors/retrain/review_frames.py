"""More frames of a reviewed alert (``review.frames``): frames of the alert's clip, besides its
triggering frame, added to the dataset as images that still need labels (docs/retraining.md,
"Reviewed examples").

The triggering frame is the reviewed example (:mod:`detectors.retrain.dataset.reviewed`): its
labels are the alert frame's detections with the operator's verdict applied. The other frames come
from the recording, decoded by the caller (the console composes the recording stage with this
one). Nobody has checked their boxes: the live model's detections for those exact frames are not
kept anywhere, and the object that raised the alert may have moved, been hidden or left. So they
go in *unlabelled* (``label_source: null``, reason ``review_clip``), with ``review_clip: {alert_id,
verdict, reviewer, offset_s}`` in the manifest: ``vigil dataset label`` gives them teacher labels
like any collected frame, and an annotator finds them by that field (COCO round trip) to turn a
false positive's frames into hard negatives. Near-duplicates are skipped with the collection
policy's dedup (a parked car that fooled the detector for a minute is one picture, not N), and a
second review of the alert replaces its earlier clip frames.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from detectors.retrain.config import CollectionPolicy
from detectors.retrain.dataset import Dataset, DatasetError, label_path
from detectors.retrain.dataset.reviewed import VERDICTS
from detectors.retrain.sampling import Collector

#: The manifest field and the reason of a reviewed alert's clip frames.
CLIP_FIELD = "review_clip"
CLIP_REASON = "review_clip"


@dataclass
class ClipFramesResult:
    added: list[str] = field(default_factory=list)  # image paths relative to the dataset folder
    duplicates: int = 0  # near-duplicates of an image already kept (skipped)
    replaced: int = 0  # clip frames of an earlier review of the alert, removed


def spread_times(
    start: float, end: float, trigger: float, n: int, min_span_s: float
) -> list[float]:
    """The times of the ``n - 1`` frames besides the triggering one: ``n`` times spread evenly over
    ``[start, end]`` (widened to ``min_span_s`` around ``trigger`` when shorter), less the one
    nearest ``trigger`` (the triggering frame stands for it)."""
    if n <= 1:
        return []
    if end - start < min_span_s:
        start, end = trigger - min_span_s / 2, trigger + min_span_s / 2
    times = [float(t) for t in np.linspace(start, end, n)]
    times.pop(min(range(n), key=lambda i: abs(times[i] - trigger)))
    return times


def add_review_clip_frames(
    root: str | Path,
    frames: Sequence[tuple[np.ndarray, float]],
    *,
    camera_id: str,
    alert_id: str,
    verdict: str,
    reviewer: str,
    trigger_ts: float,
    policy: CollectionPolicy,
    disk_budget_mb: float = 2048.0,
    jpeg_quality: int = 92,
) -> ClipFramesResult:
    """Add ``frames`` (``(BGR image, capture time)``) of ``alert_id``'s clip to the dataset folder
    ``root`` as unlabelled images, replacing those of an earlier review of the alert."""
    if verdict not in VERDICTS:
        raise DatasetError(f"verdict {verdict!r}: expected one of {', '.join(VERDICTS)}")
    result = ClipFramesResult()
    if not frames and not Path(root).expanduser().is_dir():
        return result  # nothing to add, nothing to replace: no folder made for nothing
    dset = Dataset.open(root, create=True)
    for rec in list(dset.manifest.records.values()):
        if (rec.get(CLIP_FIELD) or {}).get("alert_id") == alert_id:
            (dset.root / rec["image"]).unlink(missing_ok=True)
            label_path(dset.root, rec["image"]).unlink(missing_ok=True)
            dset.manifest.remove(rec["image"], f"replaced by a new review of alert {alert_id}")
            result.replaced += 1
    if not frames:
        return result
    collector = Collector(
        dset.root,
        policy,
        disk_budget_mb=disk_budget_mb,
        jpeg_quality=jpeg_quality,
        source=CLIP_REASON,
    )
    for image, ts in frames:
        meta = {
            CLIP_FIELD: {
                "alert_id": alert_id,
                "verdict": verdict,
                "reviewer": reviewer,
                "offset_s": round(float(ts) - float(trigger_ts), 3),
            }
        }
        before = collector.stats.duplicates
        rel = collector.offer(camera_id, image, ts, [CLIP_REASON], meta=meta)
        if rel is not None:
            result.added.append(rel)
        elif collector.stats.duplicates > before:
            result.duplicates += 1
    return result
