"""Pseudo-labelling with a teacher model; labels a person made are never replaced."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from detectors.retrain.config import detector_settings
from detectors.retrain.dataset.folder import Dataset
from detectors.retrain.dataset.labels import Box, check_image, write_labels
from detectors.retrain.dataset.layout import (
    DATA_YAML,
    HUMAN,
    DatasetError,
    Problem,
    class_names,
    write_data_yaml,
)
from detectors.retrain.dataset.reviewed import write_reviewed_labels


@dataclass
class LabelReport:
    labeled: int = 0
    skipped_human: int = 0
    skipped_existing: int = 0
    boxes: int = 0
    reviewed: int = 0  # reviewed examples whose label file was written from their review
    problems: list[Problem] = field(default_factory=list)
    names: dict[int, str] = field(default_factory=dict)


def _class_mapping(
    teacher_names: dict[int, str], names: dict[int, str] | None, classes: Sequence[str] | None
) -> tuple[dict[int, str], dict[int, int]]:
    """Dataset names and teacher id -> dataset id, matching class names case-insensitively."""
    by_name = {v.lower(): k for k, v in teacher_names.items()}
    if names is None:
        if classes:
            unknown = [c for c in classes if c.lower() not in by_name]
            if unknown:
                raise DatasetError(
                    f"the teacher does not know class(es) {', '.join(unknown)}; its classes: "
                    + ", ".join(teacher_names[k] for k in sorted(teacher_names))
                )
            names = {i: teacher_names[by_name[c.lower()]] for i, c in enumerate(classes)}
        else:
            names = dict(teacher_names)
    elif classes and [c.lower() for c in classes] != [names[i].lower() for i in sorted(names)]:
        raise DatasetError(
            f"--classes {','.join(classes)} differs from the dataset's data.yaml names "
            f"({', '.join(names[i] for i in sorted(names))}); relabel into a new folder"
        )
    mapping = {}
    for i, n in names.items():
        if n.lower() in by_name:
            mapping[by_name[n.lower()]] = i
    if not mapping:
        raise DatasetError(
            "the teacher knows none of the dataset's classes "
            f"({', '.join(names[i] for i in sorted(names))})"
        )
    return names, mapping


def label(
    root: str | Path,
    teacher: str,
    *,
    classes: Sequence[str] | None = None,
    conf: float = 0.4,
    iou: float = 0.5,
    imgsz: int = 640,
    device: str = "auto",
    overwrite: bool = False,
    batch: int = 8,
    progress: Callable[[int, int], None] | None = None,
) -> LabelReport:
    """Write teacher predictions as labels (pseudo-labels); human labels are never replaced.

    Reviewed examples are human-labelled: they are skipped, and those reviewed before the folder
    had a ``data.yaml`` get their label files from their recorded review boxes.

    Images already labelled by a teacher are kept unless ``overwrite``. Images with no detection
    get an empty label file (a background example), so "no label" always means "not labelled".
    """
    import cv2  # noqa: PLC0415 (cv2: ~0.2 s, and this package loads with the CLI)

    from detectors.engine import Detector  # noqa: PLC0415 (imports torch)

    ds = Dataset.open(root)
    ds.require_images()
    existing = None
    if (ds.root / DATA_YAML).is_file():
        existing = class_names(ds.root)
    dcfg = detector_settings(
        "teacher",
        weights=teacher,
        device=device,
        imgsz=imgsz,
        conf=conf,
        iou=iou,
        tracker="none",
        max_batch=batch,
    )
    det = Detector(dcfg, warmup=False)
    names, mapping = _class_mapping(det.names, existing, classes)
    write_data_yaml(ds.root, names)
    report = LabelReport(names=names)
    # reviews that came before the folder had class names get their label files now
    report.reviewed = write_reviewed_labels(ds, names)
    source = f"teacher:{det.name}@{det.version}"
    todo: list[str] = []
    for rec in ds.records:
        src = rec.get("label_source")
        if src == HUMAN or (src and str(src).startswith("coco")):
            report.skipped_human += 1
        elif src and not overwrite and ds.label_file(rec["image"]).is_file():
            report.skipped_existing += 1
        else:
            todo.append(rec["image"])
    done = 0
    for start in range(0, len(todo), batch):
        chunk = todo[start : start + batch]
        imgs, ok = [], []
        for rel in chunk:
            why = check_image(ds.root / rel)
            img = None if why else cv2.imread(str(ds.root / rel))
            if img is None:
                report.problems.append(Problem(rel, why or "cannot be decoded"))
                continue
            imgs.append(img)
            ok.append(rel)
        for rel, dets in zip(ok, det.detect(imgs) if imgs else [], strict=True):
            boxes = []
            for d in dets:
                if d.class_id not in mapping:
                    continue
                x1, y1, x2, y2 = d.box
                if x2 <= x1 or y2 <= y1:
                    continue
                boxes.append(
                    Box(mapping[d.class_id], (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1)
                )
            write_labels(ds.label_file(rel), boxes)
            ds.manifest.update(rel, label_source=source, labeled_at=time.time())
            report.labeled += 1
            report.boxes += len(boxes)
        done += len(chunk)
        if progress is not None:
            progress(done, len(todo))
    ds.save()
    return report
