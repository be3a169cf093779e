"""Detection messages and rules for feeding a RuleEngine directly, no Kafka; every alert it emits
is checked against alert.v1.json."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema

from alerts.engine import RuleEngine

SCHEMA = json.loads((Path(__file__).parents[2] / "alerts/schemas/alert.v1.json").read_text())
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)
T0 = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC
BOX_ZONE = [[0.1, 0.1], [0.9, 0.1], [0.9, 0.9], [0.1, 0.9]]


def det(label: str, box: list[float], conf: float = 0.9, tid: int | None = None) -> dict:
    d: dict[str, Any] = {"class_id": 0, "label": label, "confidence": conf, "box": box}
    if tid is not None:
        d["track_id"] = tid
    return d


def person(
    x: float, y: float, tid: int | None = None, conf: float = 0.9, label: str = "person"
) -> dict:
    """A person box whose bottom-centre (feet) is at (x, y)."""
    return det(label, [max(x - 0.03, 0.0), max(y - 0.2, 0.0), min(x + 0.03, 1.0), y], conf, tid)


def msg(ts: float, dets: list[dict], seq: int, cam: str = "lobby", epoch: int = 1) -> dict:
    return {
        "schema_version": 1,
        "camera_id": cam,
        "seq": seq,
        "epoch": epoch,
        "capture_ts": ts,
        "frame": {"width": 640, "height": 480},
        "model": {"name": "test", "version": "1"},
        "detections": dets,
    }


def run(engine: RuleEngine, messages: list[dict]) -> list[dict]:
    """Feed messages; every emitted alert must match alert.v1.json."""
    out = []
    for m in messages:
        for a in engine.process(m):
            d = a.to_dict()
            VALIDATOR.validate(d)
            json.dumps(d)
            out.append(d)
    return out


INTRUSION = {
    "id": "lobby-intrusion",
    "type": "zone_intrusion",
    "cameras": ["lobby"],
    "zone": BOX_ZONE,
    "classes": ["person"],
    "min_confidence": 0.4,
    "min_frames": 3,
    "severity": "high",
    "cooldown_s": 30,
}

LOITER = {
    "id": "loiter",
    "type": "loitering",
    "zone": BOX_ZONE,
    "classes": ["person"],
    "dwell_s": 10,
}


def visit(
    t_start: float, n: int, x: float = 0.5, y: float = 0.5, tid: int | None = 1, dt: float = 1.0
):
    return [(t_start + i * dt, [person(x, y, tid)]) for i in range(n)]


def empty(t_start: float, n: int, dt: float = 1.0):
    return [(t_start + i * dt, []) for i in range(n)]
