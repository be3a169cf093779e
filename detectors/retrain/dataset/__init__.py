"""Training datasets in the YOLO layout, with a manifest that says where every image came from.

The folder's layout is described in :mod:`.layout`.

Nothing here is silent: a corrupt image or a malformed label line is reported with the file (and
line) and left out of training, never dropped without a word.

One module per job, imports going one way (each only imports those above it)::

    layout         file names, paths, data.yaml, DatasetError, Problem
    fingerprint    the manifest's perceptual-hash and thumbnail fields, near-duplicates
    manifest       manifest.jsonl (shared by several writers)
    labels         reading images and YOLO label files
    folder         the dataset folder as a whole (Dataset), validate
    reviewed       an operator's verdict on an alert as an example (hard negative / confirmed)
    pseudo_labels  labelling with a teacher model
    splitting      train/val/test by camera and time
    statistics     counts for people to read
    coco           COCO JSON export / import

Use the names below from this package (``from detectors.retrain import dataset as ds``).
"""

from __future__ import annotations

from detectors.retrain.dataset.coco import export_coco, import_coco
from detectors.retrain.dataset.fingerprint import (
    THUMB_SIZE,
    decode_thumb,
    encode_thumb,
    hamming,
    near_duplicate,
)
from detectors.retrain.dataset.folder import Dataset, ValidationReport, validate
from detectors.retrain.dataset.labels import Box, check_image, read_labels, write_labels
from detectors.retrain.dataset.layout import (
    DATA_YAML,
    HUMAN,
    IMAGE_SUFFIXES,
    MANIFEST,
    SPLITS,
    DatasetError,
    Problem,
    atomic_write,
    class_names,
    label_path,
    read_data_yaml,
    rel_path,
    safe_name,
    write_data_yaml,
)
from detectors.retrain.dataset.manifest import Manifest, record_ts
from detectors.retrain.dataset.pseudo_labels import LabelReport, label
from detectors.retrain.dataset.reviewed import (
    VERDICTS,
    add_reviewed_example,
    is_reviewed,
    review_image,
    write_reviewed_labels,
)
from detectors.retrain.dataset.splitting import SplitReport, heldout_split, split, split_images
from detectors.retrain.dataset.statistics import format_stats, stats

__all__ = [
    "DATA_YAML",
    "HUMAN",
    "IMAGE_SUFFIXES",
    "MANIFEST",
    "SPLITS",
    "THUMB_SIZE",
    "VERDICTS",
    "Box",
    "Dataset",
    "DatasetError",
    "LabelReport",
    "Manifest",
    "Problem",
    "SplitReport",
    "ValidationReport",
    "add_reviewed_example",
    "atomic_write",
    "check_image",
    "class_names",
    "decode_thumb",
    "encode_thumb",
    "export_coco",
    "format_stats",
    "hamming",
    "heldout_split",
    "import_coco",
    "is_reviewed",
    "label",
    "label_path",
    "near_duplicate",
    "read_data_yaml",
    "read_labels",
    "record_ts",
    "rel_path",
    "review_image",
    "safe_name",
    "split",
    "split_images",
    "stats",
    "validate",
    "write_data_yaml",
    "write_labels",
    "write_reviewed_labels",
]
