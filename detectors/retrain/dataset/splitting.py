"""Splitting into train/val/test by camera and time, so near-identical frames never straddle
splits; reading the split lists back."""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from detectors.retrain.dataset.fingerprint import decode_thumb, near_duplicate
from detectors.retrain.dataset.folder import Dataset
from detectors.retrain.dataset.layout import (
    SPLITS,
    DatasetError,
    Problem,
    atomic_write,
    class_names,
    read_data_yaml,
    write_data_yaml,
)
from detectors.retrain.dataset.manifest import record_ts


@dataclass
class SplitReport:
    counts: dict[str, int] = field(default_factory=dict)
    excluded: int = 0
    per_camera: dict[str, dict[str, int]] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)


def _segments(recs: list[dict[str, Any]], segment_s: float) -> list[list[dict[str, Any]]]:
    segs: list[list[dict[str, Any]]] = []
    start = None
    for r in recs:
        t = record_ts(r)
        if start is None or t - start >= segment_s:
            segs.append([])
            start = t
        segs[-1].append(r)
    return segs


def split(
    root: str | Path,
    *,
    val: float = 0.2,
    test: float = 0.0,
    by: str = "time",
    segment_s: float = 30.0,
    gap_s: float | None = None,
    holdout_cameras: Sequence[str] | None = None,
    dedup_distance: int = 6,
    dedup_pixel_delta: int = 12,
    seed: int = 0,
) -> SplitReport:
    """Assign every image to train/val/test so that near-identical frames never straddle splits.

    ``by="time"``: each camera's frames are cut into time segments of ``segment_s`` and whole
    segments go to one split (seeded shuffle, per camera, to the requested fractions); frames
    within ``gap_s`` (default ``segment_s / 10``) of a boundary between splits are excluded, and so
    is any held-out frame whose perceptual hash is within ``dedup_distance`` of a training frame of
    the same camera. ``by="camera"``: whole cameras are held out (``holdout_cameras`` or, if not
    given, chosen by the seed).

    Reviewed examples (operator verdicts, :mod:`.reviewed`) are split like every other frame, by
    their camera and capture time, so the held-out split gains human-checked labels; one that
    replaced the collector's copy of its alert frame keeps that copy's perceptual hash for the
    near-duplicate check (others have none, so only the time segments keep them apart).
    """
    if not 0 <= val < 1 or not 0 <= test < 1 or val + test >= 1:
        raise DatasetError(f"val ({val}) and test ({test}) must be fractions that sum below 1")
    if by not in ("time", "camera"):
        raise DatasetError(f"split by {by!r}: use 'time' or 'camera'")
    ds = Dataset.open(root)
    ds.require_images()
    class_names(ds.root)  # data.yaml must exist: a split of an unlabelled folder is useless
    gap = segment_s / 10 if gap_s is None else gap_s
    rng = random.Random(seed)
    by_cam: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in ds.records:
        by_cam[str(r.get("camera") or "unknown")].append(r)
    assign: dict[str, str | None] = {}
    report = SplitReport()

    if by == "camera":
        cams = sorted(by_cam)
        if holdout_cameras:
            unknown = [c for c in holdout_cameras if c not in by_cam]
            if unknown:
                raise DatasetError(
                    f"unknown camera(s) {', '.join(unknown)}; cameras: {', '.join(cams)}"
                )
            held = list(holdout_cameras)
        else:
            if len(cams) < 2:
                raise DatasetError("split by camera needs at least two cameras")
            held = rng.sample(cams, max(1, round(len(cams) * (val + test))))
        n_test = round(len(held) * test / (val + test)) if test else 0
        for i, cam in enumerate(held):
            for r in by_cam[cam]:
                assign[r["image"]] = "test" if i < n_test else "val"
        for cam in cams:
            if cam not in held:
                for r in by_cam[cam]:
                    assign[r["image"]] = "train"
    else:
        for cam in sorted(by_cam):
            recs = sorted(by_cam[cam], key=record_ts)
            segs = _segments(recs, segment_s)
            order = list(range(len(segs)))
            rng.shuffle(order)
            want = {"test": test * len(recs), "val": val * len(recs)}
            got = {"test": 0, "val": 0}
            seg_split = ["train"] * len(segs)
            for idx in order:
                # never hold out a camera's only segment: it would leave nothing to learn from
                if len(segs) < 2:
                    break
                for name in ("test", "val"):
                    if got[name] < want[name] and got[name] + len(segs[idx]) / 2 <= want[name]:
                        seg_split[idx] = name
                        got[name] += len(segs[idx])
                        break
            for i, seg in enumerate(segs):
                for r in seg:
                    assign[r["image"]] = seg_split[i]
            # guard band at boundaries between different splits
            for i in range(1, len(segs)):
                if seg_split[i] == seg_split[i - 1]:
                    continue
                boundary = record_ts(segs[i][0])
                for r in segs[i - 1] + segs[i]:
                    if abs(record_ts(r) - boundary) < gap:
                        assign[r["image"]] = None
    # perceptual-hash guard: a held-out frame may not look like a training frame of its camera
    if dedup_distance > 0:
        train_hashes: dict[str, list[tuple[int, Any]]] = defaultdict(list)
        for r in ds.records:
            if assign.get(r["image"]) == "train" and r.get("phash"):
                train_hashes[str(r.get("camera"))].append(
                    (int(r["phash"], 16), decode_thumb(r.get("thumb")))
                )
        for r in ds.records:
            if assign.get(r["image"]) in ("val", "test") and r.get("phash"):
                h, th = int(r["phash"], 16), decode_thumb(r.get("thumb"))
                if any(
                    near_duplicate(h, th, t, tt, dedup_distance, dedup_pixel_delta)
                    for t, tt in train_hashes[str(r.get("camera"))]
                ):
                    assign[r["image"]] = None
    lists: dict[str, list[str]] = {s: [] for s in SPLITS}
    for r in ds.records:
        cam = str(r.get("camera") or "unknown")
        s = assign.get(r["image"])
        per = report.per_camera.setdefault(cam, {k: 0 for k in (*SPLITS, "excluded")})
        if s is None:
            report.excluded += 1
            per["excluded"] += 1
            ds.manifest.update(r["image"], split=None, split_excluded="boundary or near-duplicate")
            continue
        per[s] += 1
        lists[s].append(r["image"])
        ds.manifest.update(r["image"], split=s, split_excluded=None)
    for s in SPLITS:
        path = ds.root / f"{s}.txt"
        if lists[s]:
            atomic_write(path, "".join(f"./{rel}\n" for rel in lists[s]))
        else:
            path.unlink(missing_ok=True)
        report.counts[s] = len(lists[s])
    if not lists["train"]:
        raise DatasetError("the split left no training images; lower --val/--test")
    if not lists["val"] and not lists["test"]:
        raise DatasetError(
            "the split left no held-out images; use more footage, a shorter --segment, "
            "or --by camera"
        )
    data = read_data_yaml(ds.root)
    for s in SPLITS:
        data.pop(s, None)
    names = data.pop("names")
    data.pop("nc", None)
    held = "val" if lists["val"] else "test"
    extra = {s: f"{s}.txt" for s in SPLITS if lists[s]}
    extra.setdefault("val", f"{held}.txt")
    write_data_yaml(ds.root, names, **{k: v for k, v in data.items() if k != "path"}, **extra)
    ds.save()
    return report


def split_images(root: str | Path, name: str) -> list[str]:
    """Images (relative paths) of split ``name`` as written by :func:`split`."""
    root = Path(root)
    path = root / f"{name}.txt"
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line:
            out.append(line[2:] if line.startswith("./") else line)
    return out


def heldout_split(root: str | Path) -> str:
    """``test`` when the dataset has one, else ``val``."""
    if split_images(root, "test"):
        return "test"
    if split_images(root, "val"):
        return "val"
    raise DatasetError(
        f"dataset {root} has no held-out images: run `vigil dataset split {root}` first"
    )
