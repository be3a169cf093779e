"""Where the test services are and configs whose topics, groups and keys belong to one test."""

from __future__ import annotations

import os
import uuid

from pipeline.config import VigilConfig, parse_config

KAFKA = os.environ.get("VIGIL_TEST_KAFKA", "127.0.0.1:9092")
REDIS_URL = os.environ.get("VIGIL_TEST_REDIS", "redis://127.0.0.1:6379/15")


def make_config(bootstrap: str, **overrides) -> VigilConfig:
    """A config whose topics and groups belong to one test only, so tests never see each other."""
    return parse_config(make_config_dict(bootstrap, **overrides), "test")


def make_config_dict(bootstrap: str, **overrides) -> dict:
    tag = uuid.uuid4().hex[:8]
    data = {
        "kafka": {
            "bootstrap_servers": bootstrap,
            "topics": {
                "cameras": f"t{tag}.cameras",
                "detections": f"t{tag}.detections",
                "alerts": f"t{tag}.alerts",
                "detections_dlq": f"t{tag}.detections.dlq",
                "control": f"t{tag}.control",
                "rules": f"t{tag}.rules",
                "notify_dlq": f"t{tag}.notify.dlq",
                "motion": f"t{tag}.motion",
                "clips": f"t{tag}.clips",
                "reviews": f"t{tag}.reviews",
            },
            "cameras_partitions": 8,
            "detections_partitions": 2,
        },
        "redis": {"url": REDIS_URL, "key_prefix": f"t{tag}:"},
        "detector": {"imgsz": 640, "max_batch": 4},
        "ingest": {
            "group_id": f"t{tag}-ingest",
            "default_fps": 4,
            "open_timeout_s": 5,
            "read_timeout_s": 5,
            "reconnect": {"initial_s": 0.5, "max_s": 2.0},
            "session_timeout_ms": 6000,
        },
        # the recorders' groups (cameras, and "-alerts" for the alert follower) are the test's
        # own: a recorder of another test in a shared group would stall its rebalances
        "recordings": {"group_id": f"t{tag}-record"},
    }
    for key, value in overrides.items():
        if isinstance(value, dict):
            data.setdefault(key, {}).update(value)
        else:
            data[key] = value
    return data
