"""Micro-benchmark of the rule engine alone (no Kafka, no Redis, no JSON decoding).

Synthetic but shaped like production: cameras interleaved at 5 fps, a few people walking through
each frame plus a parked bag, every rule type in the mix, all rules on all cameras.
"""

from __future__ import annotations

import random
import time
from typing import Any

from alerts.engine import RuleEngine

_ZONE = [[0.1, 0.1], [0.9, 0.1], [0.9, 0.9], [0.5, 0.95], [0.1, 0.9]]
_RULES: list[dict[str, Any]] = [
    {"type": "zone_intrusion", "zone": _ZONE, "classes": ["person"], "min_frames": 3},
    {"type": "loitering", "zone": _ZONE, "classes": ["person"], "dwell_s": 20},
    {"type": "line_crossing", "line": [[0.5, 0.0], [0.5, 1.0]], "classes": ["person"]},
    {"type": "crowding", "zone": _ZONE, "classes": ["person"], "min_count": 4, "min_seconds": 5},
    {"type": "object_left", "classes": ["backpack", "suitcase"], "min_seconds": 30},
    {"type": "object_removed", "classes": ["backpack", "suitcase"], "present_s": 60},
    {"type": "count_anomaly", "classes": ["person"], "min_samples": 10},
    {
        "type": "zone_intrusion",
        "zone": [[0.0, 0.5], [0.3, 0.5], [0.3, 1.0], [0.0, 1.0]],
        "min_seconds": 1,
    },
    {"type": "crowding", "classes": ["car"], "min_count": 3},
    {
        "type": "zone_intrusion",
        "zone": _ZONE,
        "classes": ["person"],
        "schedule": {"timezone": "Europe/Paris", "windows": [{"start": "22:00", "end": "06:00"}]},
    },
]


def make_rules(n_rules: int) -> list[dict[str, Any]]:
    return [{**_RULES[i % len(_RULES)], "id": f"r{i}"} for i in range(n_rules)]


def make_messages(
    n_messages: int, n_cameras: int, *, people: int = 4, track_ids: bool = True, seed: int = 7
) -> list[dict[str, Any]]:
    """Detection messages round-robin over cameras; people walk across and are replaced."""
    rng = random.Random(seed)
    state = {}
    for c in range(n_cameras):
        walkers = [
            [rng.random(), rng.uniform(0.2, 0.8), rng.uniform(-0.02, 0.02), c * 1000 + k]
            for k in range(people)
        ]
        state[c] = (walkers, [c * 1000 + people])
    out = []
    t0 = 1_700_000_000.0
    for i in range(n_messages):
        c = i % n_cameras
        frame = i // n_cameras
        walkers, next_id = state[c]
        dets = []
        for w in walkers:
            w[0] += w[2]
            if not 0.0 <= w[0] <= 0.95:  # left the frame: a new person enters
                w[0], w[1], w[2] = (
                    rng.random() * 0.9,
                    rng.uniform(0.2, 0.8),
                    rng.uniform(-0.02, 0.02),
                )
                w[3] = next_id[0]
                next_id[0] += 1
            x, y = w[0], w[1]
            d = {
                "class_id": 0,
                "label": "person",
                "confidence": 0.8,
                "box": [x, y - 0.15, min(x + 0.05, 1.0), y],
            }
            if track_ids:
                d["track_id"] = w[3]
            dets.append(d)
        dets.append(
            {"class_id": 24, "label": "backpack", "confidence": 0.6, "box": [0.7, 0.8, 0.75, 0.88]}
        )
        if track_ids:
            dets[-1]["track_id"] = c * 1000 + 999
        out.append(
            {
                "schema_version": 1,
                "camera_id": f"cam{c}",
                "seq": frame,
                "epoch": 1,
                "capture_ts": t0 + frame * 0.2,
                "frame": {"width": 1280, "height": 720},
                "model": {"name": "yolov5n", "version": "bench"},
                "detections": dets,
            }
        )
    return out


def bench_rules(
    n_messages: int = 20_000, n_cameras: int = 50, n_rules: int = 10, *, track_ids: bool = True
) -> float:
    """Messages per second through ``RuleEngine.process`` (parse + track + rules), one core."""
    msgs = make_messages(n_messages, n_cameras, track_ids=track_ids)
    engine = RuleEngine({"rules": make_rules(n_rules)})
    process = engine.process
    start = time.perf_counter()
    for m in msgs:
        process(m)
    elapsed = time.perf_counter() - start
    return n_messages / elapsed


if __name__ == "__main__":
    for ids in (True, False):
        rate = bench_rules(track_ids=ids)
        print(f"track_ids={'ingest' if ids else 'engine tracker'}: {rate:,.0f} msgs/s")
