"""Training datasets in the YOLO layout, with a manifest that says where every image came from.

A dataset folder::

    DIR/
      data.yaml          class names and the split lists (ultralytics reads it as-is)
      manifest.jsonl     one JSON object per image: camera, capture time, why it was collected,
                         where its labels came from, split (last line per image wins; a line with
                         "removed": true deletes it)
      images/<camera>/<camera>-<capture ms>-<n>.jpg
      labels/<camera>/<same name>.txt      YOLO lines: class cx cy w h (normalised)
      train.txt val.txt test.txt           written by ``split`` ("./images/..." lines)

Nothing here is silent: a corrupt image or a malformed label line is reported with the file (and
line) and left out of training, never dropped without a word.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import logging
import os
import random
import re
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

DATA_YAML = "data.yaml"
MANIFEST = "manifest.jsonl"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
SPLITS = ("train", "val", "test")
#: Label sources in order of trust; a human label is never replaced by a teacher's.
HUMAN = "human"


class DatasetError(ValueError):
    """A dataset that cannot be used; the message names the folder or file and how to fix it."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a dataset file; ``line`` is 1-based (None: the whole file)."""

    file: str
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        return f"{where}: {self.message}"


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


# --------------------------------------------------------------------------------------------
# Manifest


class Manifest:
    """``manifest.jsonl``: an append-only log (last line per image wins), compacted by :meth:`save`.

    Several writers may share a folder (live collectors on several workers, an offline tool):
    every append and every compaction holds ``.manifest.lock`` (``flock``), and :meth:`save` merges
    this object's pending changes into what is on disk *now*, so nobody's lines are lost.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.path = self.root / MANIFEST
        self.records: dict[str, dict[str, Any]] = {}
        self.problems: list[Problem] = []
        self._pending: dict[str, dict[str, Any]] = {}
        self._forgotten: set[str] = set()

    @classmethod
    def load(cls, root: str | Path) -> Manifest:
        m = cls(root)
        m.records, m.problems = _read_manifest(m.path)
        return m

    @contextlib.contextmanager
    def _locked(self):
        self.root.mkdir(parents=True, exist_ok=True)
        if fcntl is None:  # no flock on this platform: single writer only
            yield
            return
        fd = os.open(self.root / ".manifest.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def append(self, rec: dict[str, Any]) -> None:
        """Add or change an image's record, on disk at once."""
        self.records[rec["image"]] = {**self.records.get(rec["image"], {}), **rec}
        self._write_line(rec)

    def remove(self, image: str, why: str) -> None:
        """Delete an image's record, on disk at once (a tombstone line)."""
        self.records.pop(image, None)
        self._pending.pop(image, None)
        self._write_line({"image": image, "removed": True, "why": why})

    def update(self, image: str, **fields: Any) -> None:
        """Change fields in memory; :meth:`save` writes them."""
        self.records.setdefault(image, {"image": image}).update(fields)
        self._pending.setdefault(image, {"image": image}).update(fields)

    def forget(self, image: str) -> None:
        """Drop a record (its file is gone) when :meth:`save` runs."""
        self.records.pop(image, None)
        self._pending.pop(image, None)
        self._forgotten.add(image)

    def _write_line(self, rec: dict[str, Any]) -> None:
        line = json.dumps(rec, separators=(",", ":"), sort_keys=True) + "\n"
        with self._locked():
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, line.encode())
            finally:
                os.close(fd)

    def save(self) -> None:
        """Compact the log to one line per live image, keeping other writers' lines (atomic)."""
        with self._locked():
            disk, _ = _read_manifest(self.path)
            for image, fields in self._pending.items():
                if image in disk or (self.root / image).is_file():
                    disk.setdefault(image, {"image": image}).update(fields)
            for image in self._forgotten:
                disk.pop(image, None)
            lines = [
                json.dumps(r, separators=(",", ":"), sort_keys=True)
                for r in sorted(disk.values(), key=lambda r: r["image"])
            ]
            _atomic_write(self.path, "".join(x + "\n" for x in lines))
        self.records = disk
        self._pending.clear()
        self._forgotten.clear()


def _read_manifest(path: Path) -> tuple[dict[str, dict[str, Any]], list[Problem]]:
    records: dict[str, dict[str, Any]] = {}
    problems: list[Problem] = []
    if not path.is_file():
        return records, problems
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
                if not isinstance(rec, dict) or not isinstance(rec.get("image"), str):
                    raise ValueError("not an object with an 'image' path")
            except ValueError as e:
                problems.append(Problem(MANIFEST, f"malformed manifest line ({e})", n))
                continue
            if rec.get("removed"):
                records.pop(rec["image"], None)
            else:
                records[rec["image"]] = {**records.get(rec["image"], {}), **rec}
    return records, problems


def label_path(root: Path, image: str) -> Path:
    """``images/a/b.jpg`` -> ``ROOT/labels/a/b.txt`` (the rule ultralytics applies)."""
    rel = Path(image)
    parts = list(rel.parts)
    if parts and parts[0] == "images":
        parts[0] = "labels"
    else:
        parts.insert(0, "labels")
    return root.joinpath(*parts).with_suffix(".txt")


def _rel(root: Path, path: Path) -> str:
    return path.resolve().relative_to(root.resolve()).as_posix()


_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def safe_name(text: str) -> str:
    """A file-name-safe camera id (``lobby cam/2`` -> ``lobby_cam_2``)."""
    return _SAFE.sub("_", text).strip("._") or "camera"


# --------------------------------------------------------------------------------------------
# data.yaml


def read_data_yaml(root: str | Path) -> dict[str, Any]:
    """The dataset's ``data.yaml``; :class:`DatasetError` when missing or unusable."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"dataset folder {root} not found")
    path = root / DATA_YAML
    if not path.is_file():
        raise DatasetError(
            f"{path} not found: a dataset needs data.yaml with its class names; "
            f"`vigil dataset label {root} --teacher WEIGHTS` writes one"
        )
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise DatasetError(f"malformed YAML in {path}: {e}") from None
    if not isinstance(data, dict):
        raise DatasetError(f"{path}: top level must be a mapping")
    names = data.get("names")
    if isinstance(names, list):
        names = dict(enumerate(names))
    if not isinstance(names, dict) or not names:
        raise DatasetError(f"{path}: 'names' (the class names) is missing or empty")
    try:
        names = {int(k): str(v) for k, v in names.items()}
    except (TypeError, ValueError):
        raise DatasetError(f"{path}: 'names' keys must be class ids 0..N-1") from None
    if sorted(names) != list(range(len(names))):
        raise DatasetError(f"{path}: 'names' must have ids 0..{len(names) - 1} without gaps")
    data["names"] = names
    return data


def class_names(root: str | Path) -> dict[int, str]:
    return read_data_yaml(root)["names"]


def write_data_yaml(root: str | Path, names: dict[int, str], **extra: Any) -> Path:
    """Write ``data.yaml`` (keeping keys already there, e.g. the split lists)."""
    root = Path(root)
    path = root / DATA_YAML
    data: dict[str, Any] = {}
    if path.is_file():
        with contextlib.suppress(yaml.YAMLError):
            data = yaml.safe_load(path.read_text()) or {}
    data.update(extra)
    data["names"] = {int(k): str(v) for k, v in sorted(names.items())}
    for split in SPLITS:
        if (root / f"{split}.txt").is_file():
            data[split] = f"{split}.txt"
    data.setdefault("train", "train.txt")
    data.setdefault("val", "val.txt")
    root.mkdir(parents=True, exist_ok=True)
    _atomic_write(path, yaml.safe_dump(data, sort_keys=False))
    return path


# --------------------------------------------------------------------------------------------
# Reading images and labels


def check_image(path: Path) -> str | None:
    """None when ``path`` decodes as a complete image, else why not."""
    import cv2

    try:
        data = path.read_bytes()
    except OSError as e:
        return f"cannot read image ({e.strerror or e})"
    if not data:
        return "empty image file"
    suffix = path.suffix.lower()
    if suffix in (".jpg", ".jpeg") and not data.rstrip(b"\x00").endswith(b"\xff\xd9"):
        return "corrupt image (truncated JPEG: no end-of-image marker)"
    if suffix == ".png" and b"IEND" not in data[-16:]:
        return "corrupt image (truncated PNG)"
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if img is None or img.size == 0:
        return "corrupt image (cannot be decoded)"
    return None


@dataclass
class Box:
    cls: int
    cx: float
    cy: float
    w: float
    h: float

    def xyxy(self) -> tuple[float, float, float, float]:
        return (
            self.cx - self.w / 2,
            self.cy - self.h / 2,
            self.cx + self.w / 2,
            self.cy + self.h / 2,
        )

    def line(self) -> str:
        return f"{self.cls} {self.cx:.6f} {self.cy:.6f} {self.w:.6f} {self.h:.6f}"


def read_labels(path: Path, nc: int, shown: str | None = None) -> tuple[list[Box], list[Problem]]:
    """Boxes of a YOLO label file and one :class:`Problem` per malformed line (skipped)."""
    shown = shown or str(path)
    boxes: list[Box] = []
    problems: list[Problem] = []
    try:
        text = path.read_text()
    except FileNotFoundError:
        return [], []
    except (OSError, UnicodeDecodeError) as e:
        return [], [Problem(shown, f"cannot read label file ({e})")]
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) != 5:
            problems.append(
                Problem(shown, f"expected 5 values 'class cx cy w h', got {len(parts)}", n)
            )
            continue
        try:
            cls = int(parts[0])
        except ValueError:
            problems.append(Problem(shown, f"class id {parts[0]!r} is not an integer", n))
            continue
        try:
            cx, cy, w, h = (float(p) for p in parts[1:])
        except ValueError:
            problems.append(Problem(shown, "box values must be numbers", n))
            continue
        if not 0 <= cls < nc:
            problems.append(
                Problem(shown, f"class id {cls} out of range (data.yaml has {nc} classes)", n)
            )
            continue
        if not all(np.isfinite((cx, cy, w, h))) or w <= 0 or h <= 0:
            problems.append(Problem(shown, "box width and height must be positive", n))
            continue
        eps = 1e-3
        if (
            not (-eps <= cx - w / 2 and cx + w / 2 <= 1 + eps and -eps <= cy - h / 2)
            or not cy + h / 2 <= 1 + eps
        ):
            problems.append(Problem(shown, "box outside the image (coordinates are 0..1)", n))
            continue
        boxes.append(Box(cls, cx, cy, w, h))
    return boxes, problems


def write_labels(path: Path, boxes: Iterable[Box]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write(path, "".join(b.line() + "\n" for b in boxes))


# --------------------------------------------------------------------------------------------
# The dataset as a whole


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
                rel = _rel(root, p)
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
            self.manifest.records.values(), key=lambda r: (r.get("camera", ""), _ts(r), r["image"])
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


def _ts(rec: dict[str, Any]) -> float:
    try:
        return float(rec.get("capture_ts") or 0.0)
    except (TypeError, ValueError):
        return 0.0


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
        boxes, problems = read_labels(lab, nc, _rel(ds.root, lab) if lab.is_file() else None)
        if problems:
            report.problems.extend(problems)
            continue  # a half-read label file would teach the model that objects are background
        report.boxes += len(boxes)
        report.good.append(rel)
    return report


# --------------------------------------------------------------------------------------------
# Pseudo-labelling with a teacher


@dataclass
class LabelReport:
    labeled: int = 0
    skipped_human: int = 0
    skipped_existing: int = 0
    boxes: int = 0
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

    Images already labelled by a teacher are kept unless ``overwrite``. Images with no detection
    get an empty label file (a background example), so "no label" always means "not labelled".
    """
    import cv2

    from detectors.config import DetectorConfig
    from detectors.engine import Detector

    ds = Dataset.open(root)
    ds.require_images()
    existing = None
    if (ds.root / DATA_YAML).is_file():
        existing = class_names(ds.root)
    det = Detector(
        DetectorConfig(
            weights=teacher,
            device=device,
            imgsz=imgsz,
            conf=conf,
            iou=iou,
            tracker="none",
            max_batch=batch,
        ),
        warmup=False,
    )
    names, mapping = _class_mapping(det.names, existing, classes)
    write_data_yaml(ds.root, names)
    report = LabelReport(names=names)
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


# --------------------------------------------------------------------------------------------
# Splitting by camera and time


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
        t = _ts(r)
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
            recs = sorted(by_cam[cam], key=_ts)
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
                boundary = _ts(segs[i][0])
                for r in segs[i - 1] + segs[i]:
                    if abs(_ts(r) - boundary) < gap:
                        assign[r["image"]] = None
    # perceptual-hash guard: a held-out frame may not look like a training frame of its camera
    if dedup_distance > 0:
        from detectors.retrain.sampling import decode_thumb, near_duplicate

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
            _atomic_write(path, "".join(f"./{rel}\n" for rel in lists[s]))
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


# --------------------------------------------------------------------------------------------
# Statistics


def stats(root: str | Path) -> dict[str, Any]:
    """Counts per camera, split, collection reason, label source and class; disk use."""
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
    }
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
        t = _ts(r)
        first = t if first is None else min(first, t)
        last = t if last is None else max(last, t)
        lab = ds.label_file(r["image"])
        if not lab.is_file():
            out["unlabeled"] += 1
            continue
        boxes, problems = read_labels(lab, nc, _rel(ds.root, lab))
        out["problems"].extend(str(p) for p in problems)
        if not boxes:
            out["background"] += 1
        c["boxes"] += len(boxes)
        for b in boxes:
            out["boxes_per_class"][names.get(b.cls, str(b.cls))] += 1
    out["time_range"] = [first, last]
    for k in ("splits", "reasons", "label_sources", "boxes_per_class"):
        out[k] = dict(out[k])
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
        "  cameras:",
    ]
    for cam, c in sorted(s["cameras"].items()):
        lines.append(f"    {cam:<24} {c['images']:>6} image(s) {c['boxes']:>7} box(es)")
    if s["problems"]:
        lines.append(f"  {len(s['problems'])} problem(s):")
        lines.extend(f"    {p}" for p in s["problems"][:50])
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# COCO JSON export / import (for annotation tools: CVAT, Label Studio, ...)


def export_coco(root: str | Path, out: str | Path, *, split_name: str | None = None) -> dict:
    """Write the dataset's labels as COCO JSON; ``file_name`` is relative to ``images/``.

    Category ids are class id + 1 (COCO reserves 0). Returns counts.
    """
    import cv2

    ds = Dataset.open(root)
    ds.require_images()
    names = class_names(ds.root)
    wanted = set(split_images(ds.root, split_name)) if split_name else None
    images, annotations, problems = [], [], []
    for r in ds.records:
        rel = r["image"]
        if wanted is not None and rel not in wanted:
            continue
        why = check_image(ds.root / rel)
        if why:
            problems.append(Problem(rel, why))
            continue
        w, h = r.get("width"), r.get("height")
        if not w or not h:
            img = cv2.imread(str(ds.root / rel))
            h, w = img.shape[:2]
        img_id = len(images) + 1
        images.append(
            {
                "id": img_id,
                "file_name": rel.removeprefix("images/"),
                "width": int(w),
                "height": int(h),
                "camera": r.get("camera"),
                "capture_ts": r.get("capture_ts"),
            }
        )
        lab = ds.label_file(rel)
        boxes, probs = read_labels(lab, len(names), _rel(ds.root, lab) if lab.is_file() else None)
        problems.extend(probs)
        for b in boxes:
            x1, y1, x2, y2 = b.xyxy()
            bw, bh = (x2 - x1) * w, (y2 - y1) * h
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": img_id,
                    "category_id": b.cls + 1,
                    "bbox": [round(x1 * w, 2), round(y1 * h, 2), round(bw, 2), round(bh, 2)],
                    "area": round(bw * bh, 2),
                    "iscrowd": 0,
                }
            )
    coco = {
        "info": {
            "description": f"Vigil dataset {ds.root.name}",
            "date_created": _dt.datetime.now(_dt.timezone.utc).isoformat(),
        },
        "images": images,
        "annotations": annotations,
        "categories": [
            {"id": i + 1, "name": n, "supercategory": "object"} for i, n in sorted(names.items())
        ],
    }
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write(out, json.dumps(coco, indent=1))
    return {"images": len(images), "annotations": len(annotations), "problems": problems}


def import_coco(
    root: str | Path, coco_file: str | Path, *, source: str = HUMAN, add_classes: bool = False
) -> dict:
    """Replace the labels of the images listed in a COCO JSON file (e.g. corrected by a person).

    Images are matched by ``file_name`` (relative to ``images/``, or just the base name when that
    is unique). Unknown images, unknown categories and boxes outside the image are reported and
    skipped. Imported images get ``label_source: human`` so no teacher overwrites them.
    """
    ds = Dataset.open(root)
    names = class_names(ds.root) if (ds.root / DATA_YAML).is_file() else {}
    path = Path(coco_file)
    shown = path.name
    try:
        coco = json.loads(path.read_text())
    except FileNotFoundError:
        raise DatasetError(f"COCO file {path} not found") from None
    except (OSError, ValueError) as e:
        raise DatasetError(f"{path} is not valid JSON ({e})") from None
    if not isinstance(coco, dict) or not isinstance(coco.get("images"), list):
        raise DatasetError(f"{path}: not a COCO detection file (no 'images' list)")
    problems: list[Problem] = []
    by_lower = {v.lower(): k for k, v in names.items()}
    cat_map: dict[Any, int] = {}
    for cat in coco.get("categories") or []:
        name = str(cat.get("name", ""))
        if name.lower() in by_lower:
            cat_map[cat.get("id")] = by_lower[name.lower()]
        elif add_classes:
            new = len(names)
            names[new] = name
            by_lower[name.lower()] = new
            cat_map[cat.get("id")] = new
        else:
            problems.append(
                Problem(
                    shown,
                    f"category {name!r} is not a dataset class "
                    f"({', '.join(names.values()) or 'none'}); its boxes are skipped "
                    "(use --add-classes to add it)",
                )
            )
    if not names:
        raise DatasetError(f"{path}: no categories, and the dataset has no data.yaml")
    by_rel = {r["image"].removeprefix("images/"): r["image"] for r in ds.records}
    by_base: dict[str, list[str]] = defaultdict(list)
    for rel in ds.manifest.records:
        by_base[Path(rel).name].append(rel)
    img_map: dict[Any, tuple[str, int, int]] = {}
    for im in coco["images"]:
        fname = str(im.get("file_name", "")).replace("\\", "/")
        rel = by_rel.get(fname) or by_rel.get(fname.removeprefix("images/"))
        if rel is None and len(by_base.get(Path(fname).name, [])) == 1:
            rel = by_base[Path(fname).name][0]
        if rel is None:
            problems.append(Problem(shown, f"image {fname!r} is not in the dataset; skipped"))
            continue
        try:
            img_map[im["id"]] = (rel, int(im["width"]), int(im["height"]))
        except (KeyError, TypeError, ValueError):
            problems.append(Problem(shown, f"image {fname!r} lacks id/width/height; skipped"))
    boxes: dict[str, list[Box]] = {rel: [] for rel, _, _ in img_map.values()}
    skipped = 0
    for k, ann in enumerate(coco.get("annotations") or []):
        where = f"annotation {ann.get('id', k)}"
        target = img_map.get(ann.get("image_id"))
        if target is None:
            skipped += 1
            continue
        rel, w, h = target
        if ann.get("category_id") not in cat_map:
            skipped += 1
            continue
        try:
            x, y, bw, bh = (float(v) for v in ann["bbox"])
        except (KeyError, TypeError, ValueError):
            problems.append(Problem(shown, f"{where}: bbox must be [x, y, width, height]"))
            continue
        if bw <= 0 or bh <= 0 or w <= 0 or h <= 0:
            problems.append(Problem(shown, f"{where}: empty box"))
            continue
        x1, y1 = max(0.0, x), max(0.0, y)
        x2, y2 = min(float(w), x + bw), min(float(h), y + bh)
        if x2 - x1 < 1 or y2 - y1 < 1:
            problems.append(Problem(shown, f"{where}: box outside the {w}x{h} image"))
            continue
        if (x1, y1, x2, y2) != (x, y, x + bw, y + bh):
            problems.append(Problem(shown, f"{where}: box clipped to the image"))
        boxes[rel].append(
            Box(
                cat_map[ann["category_id"]],
                (x1 + x2) / 2 / w,
                (y1 + y2) / 2 / h,
                (x2 - x1) / w,
                (y2 - y1) / h,
            )
        )
    for rel, bs in boxes.items():
        write_labels(ds.label_file(rel), bs)
        ds.manifest.update(rel, label_source=source, labeled_at=time.time())
    write_data_yaml(ds.root, names)
    ds.save()
    return {"images": len(boxes), "boxes": sum(map(len, boxes.values())), "problems": problems}
