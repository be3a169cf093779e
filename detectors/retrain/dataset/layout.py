"""The dataset folder's layout: file names, paths, ``data.yaml``, and the error types.

A dataset folder::

    DIR/
      data.yaml          class names and the split lists (ultralytics reads it as-is)
      manifest.jsonl     one JSON object per image: camera, capture time, why it was collected,
                         where its labels came from, split (last line per image wins; a line with
                         "removed": true deletes it)
      images/<camera>/<camera>-<capture ms>-<n>.jpg
      labels/<camera>/<same name>.txt      YOLO lines: class cx cy w h (normalised)
      train.txt val.txt test.txt           written by ``split`` ("./images/..." lines)
"""

from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from pipeline.common.errors import UserError

DATA_YAML = "data.yaml"
MANIFEST = "manifest.jsonl"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
SPLITS = ("train", "val", "test")
#: Label sources in order of trust; a human label is never replaced by a teacher's.
HUMAN = "human"


class DatasetError(UserError, ValueError):
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


def atomic_write(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` so readers see the old or the new file, never half of one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def label_path(root: Path, image: str) -> Path:
    """``images/a/b.jpg`` -> ``ROOT/labels/a/b.txt`` (the rule ultralytics applies)."""
    rel = Path(image)
    parts = list(rel.parts)
    if parts and parts[0] == "images":
        parts[0] = "labels"
    else:
        parts.insert(0, "labels")
    return root.joinpath(*parts).with_suffix(".txt")


def rel_path(root: Path, path: Path) -> str:
    """``path`` relative to the dataset folder ``root``, with forward slashes."""
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
    atomic_write(path, yaml.safe_dump(data, sort_keys=False))
    return path
