"""Which reduced precisions passed the accuracy gate for a model on this machine, and the
precision the OpenVINO backend runs for a requested one (:func:`resolve`).

Why a module of its own: this is what the backend reads at run time (json and file checks, no
NNCF, no OpenCV). Making the INT8 model is :mod:`detectors.quantize` (NNCF, calibration frames);
the gate that scores it on labelled frames is ``detectors/retrain/precision_gate.py``, which
writes its verdict here through :func:`write_record`. Neither is imported by the backend.

Layout, in the weights' export root (``<stem>.exports/``, see
:func:`detectors.backends.export.export_root`)::

    openvino-640-fp32-b1/<stem>_openvino_model/   the f32 export (detectors.backends.export)
    openvino-640-int8-<key>/                      INT8 IR made by detectors.quantize
    precision-640.json                            the gate's verdicts (:func:`write_record`)

A refused gate leaves the f32 export untouched and in use: ``precision: int8`` and ``auto`` only
ever pick a model whose record says it passed, for these weights, on this CPU.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: The precisions the gate can judge (f32 is its baseline).
PRECISIONS = ("f32", "bf16", "int8")


def machine_id() -> str:
    """This CPU (model name and the ISA flags that change reduced-precision speed)."""
    name, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and name in ("", platform.machine()):
                name = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    isa = [
        f for f in ("avx512_bf16", "amx_bf16", "amx_int8", "avx512_vnni", "avx_vnni") if f in flags
    ]
    return f"{name} [{' '.join(isa) or 'no bf16/vnni'}] x{os.cpu_count()}"


def record_path(export_root: Path, imgsz: int) -> Path:
    return Path(export_root) / f"precision-{imgsz}.json"


@dataclass
class GateRecord:
    """The gate's verdicts for one weights file at one input size on one machine."""

    weights_sha256: str
    imgsz: int
    machine: str
    tolerance: float  # points of mAP (0-100 scale)
    heldout: str  # what the held-out labelled frames were
    f32: dict[str, Any]  # map50, map50_95, ms_per_frame
    results: dict[str, dict[str, Any]]  # precision -> figures + passed + reasons
    int8_dir: str | None = None
    at: float = field(default_factory=time.time)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def passed(self) -> list[str]:
        return [p for p, r in self.results.items() if r.get("passed")]


def write_record(path: Path, record: GateRecord) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(record.to_dict(), indent=1))
    os.replace(tmp, path)


def read_record(path: Path) -> GateRecord | None:
    try:
        data = json.loads(Path(path).read_text())
        known = GateRecord.__dataclass_fields__
        return GateRecord(**{k: v for k, v in data.items() if k in known})
    except (OSError, ValueError, TypeError):
        return None


def resolve(f32_export: Path, requested: str) -> tuple[Path, str, str]:
    """``(model folder, INFERENCE_PRECISION_HINT, precision actually used)`` for ``requested``.

    ``f32`` / ``bf16``: the f32 export with that hint (``bf16`` explicitly asked is the user's
    opt-in, as before). ``int8``: the INT8 model whose gate passed for these weights on this
    machine, else f32 with a warning (a refused or missing gate never replaces f32).
    ``auto``: the fastest precision that passed the gate here, else f32.
    """
    requested = (requested or "f32").lower()
    if requested in ("f32", "bf16"):
        return Path(f32_export), requested, requested
    record, sha = _record_for(Path(f32_export))
    if record is None:
        if requested == "int8":
            log.warning(
                "precision int8: no accuracy gate passed yet for %s on this machine; running f32 "
                "(run `vigil models quantize`)",
                f32_export,
            )
        return Path(f32_export), "f32", "f32"
    passed = record.passed()
    int8 = Path(record.int8_dir) if record.int8_dir else None
    if int8 is None or not (int8 / "model.xml").is_file():
        passed = [p for p in passed if p != "int8"]
    if requested == "int8":
        if "int8" in passed and int8 is not None:
            return int8, "f32", "int8"
        why = (record.results.get("int8") or {}).get("reason", "no INT8 model")
        log.warning("precision int8 refused by the accuracy gate (%s); running f32", why)
        return Path(f32_export), "f32", "f32"
    # auto: fastest of f32 and whatever passed, by the gate's own timing
    speeds = {"f32": float(record.f32.get("ms_per_frame") or 1e9)}
    for p in passed:
        speeds[p] = float(record.results[p].get("ms_per_frame") or 1e9)
    best = min(speeds, key=speeds.__getitem__)
    if best == "int8" and int8 is not None:
        return int8, "f32", "int8"
    return Path(f32_export), best, best


def _record_for(f32_export: Path) -> tuple[GateRecord | None, str | None]:
    """The gate record next to ``f32_export`` if it is for the same weights and this machine."""
    try:
        meta = json.loads((f32_export.parent / "vigil-export.json").read_text())
    except (OSError, ValueError):
        return None, None
    sha, imgsz = meta.get("weights_sha256"), meta.get("imgsz")
    record = read_record(record_path(f32_export.parent.parent, int(imgsz or 0)))
    if record is None or record.weights_sha256 != sha or record.machine != machine_id():
        return None, sha
    return record, sha
