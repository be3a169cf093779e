"""COCO JSON export / import, for annotation tools (CVAT, Label Studio, ...)."""

from __future__ import annotations

import datetime as _dt
import json
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from detectors.retrain.dataset.folder import Dataset
from detectors.retrain.dataset.labels import Box, check_image, read_labels, write_labels
from detectors.retrain.dataset.layout import (
    DATA_YAML,
    HUMAN,
    DatasetError,
    Problem,
    atomic_write,
    class_names,
    rel_path,
    write_data_yaml,
)
from detectors.retrain.dataset.splitting import split_images


def export_coco(root: str | Path, out: str | Path, *, split_name: str | None = None) -> dict:
    """Write the dataset's labels as COCO JSON; ``file_name`` is relative to ``images/``.

    Category ids are class id + 1 (COCO reserves 0). Returns counts.
    """
    import cv2  # noqa: PLC0415 (cv2: ~0.2 s, and this package loads with the CLI)

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
        boxes, probs = read_labels(
            lab, len(names), rel_path(ds.root, lab) if lab.is_file() else None
        )
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
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(out, json.dumps(coco, indent=1))
    except OSError as e:  # a read-only folder, a path that is a folder...
        raise DatasetError(f"cannot write {out}: {e.strerror or e}") from None
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
