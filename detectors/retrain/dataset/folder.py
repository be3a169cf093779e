"""The dataset folder as a whole: its manifest records, images it does not list, validation."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from detectors.retrain.dataset.labels import check_image, read_labels
from detectors.retrain.dataset.layout import (
    IMAGE_SUFFIXES,
    SPLITS,
    DatasetError,
    Problem,
    class_names,
    label_path,
    rel_path,
)
from detectors.retrain.dataset.manifest import Manifest, record_ts


@dataclass
class Dataset:
    """A dataset folder: its manifest records, discovering images the manifest does not list."""

    root: Path
    manifest: Manifest

    @classmethod
    def open(cls, root: str | Path, *, create: bool = False) -> Dataset:
        root = Path(root).expanduser()
        if not root.is_dir():
            if not create:
                raise DatasetError(f"dataset folder {root} not found")
            root.mkdir(parents=True)
        manifest = Manifest.load(root)
        images_dir = root / "images"
        if images_dir.is_dir():
            known = set(manifest.records)
            for p in sorted(images_dir.rglob("*")):
                if p.suffix.lower() not in IMAGE_SUFFIXES or not p.is_file():
                    continue
                rel = rel_path(root, p)
                if rel in known:
                    continue
                sub = p.parent.relative_to(images_dir).parts
                camera = sub[0] if sub and sub[0] not in SPLITS else "unknown"
                split = next((s for s in sub if s in SPLITS), None)
                manifest.update(
                    rel,
                    camera=camera,
                    capture_ts=p.stat().st_mtime,
                    reasons=["imported"],
                    label_source="file" if label_path(root, rel).is_file() else None,
                    split=split,
                )
        for rel in list(manifest.records):
            if not (root / rel).is_file():
                manifest.problems.append(Problem(rel, "listed in the manifest but missing"))
                manifest.forget(rel)
        return cls(root, manifest)

    @property
    def records(self) -> list[dict[str, Any]]:
        return sorted(
            self.manifest.records.values(),
            key=lambda r: (r.get("camera", ""), record_ts(r), r["image"]),
        )

    def require_images(self) -> None:
        if not self.manifest.records:
            raise DatasetError(
                f"dataset {self.root} has no images; collect some first "
                "(`vigil dataset collect VIDEO... -o DIR` or the live collector)"
            )

    def label_file(self, image: str) -> Path:
        return label_path(self.root, image)

    def save(self) -> None:
        self.manifest.save()


@dataclass
class ValidationReport:
    good: list[str] = field(default_factory=list)  # images usable for training
    problems: list[Problem] = field(default_factory=list)
    unlabeled: list[str] = field(default_factory=list)
    boxes: int = 0

    def summary(self) -> str:
        return (
            f"{len(self.good)} usable image(s), {self.boxes} box(es), "
            f"{len(self.unlabeled)} unlabeled, {len(self.problems)} problem(s)"
        )


def validate(
    root: str | Path,
    *,
    images: Sequence[str] | None = None,
    require_labels: bool = True,
    check_images: bool = True,
) -> ValidationReport:
    """Check images and label files. Problems are reported (file, line) and their images excluded."""
    ds = Dataset.open(root)
    nc = len(class_names(ds.root))
    report = ValidationReport()
    report.problems.extend(ds.manifest.problems)
    for rel in images if images is not None else [r["image"] for r in ds.records]:
        img = ds.root / rel
        if check_images:
            why = check_image(img)
            if why:
                report.problems.append(Problem(rel, why))
                continue
        lab = ds.label_file(rel)
        if not lab.is_file():
            report.unlabeled.append(rel)
            if require_labels:
                continue
        boxes, problems = read_labels(lab, nc, rel_path(ds.root, lab) if lab.is_file() else None)
        if problems:
            report.problems.extend(problems)
            continue  # a half-read label file would teach the model that objects are background
        report.boxes += len(boxes)
        report.good.append(rel)
    return report
