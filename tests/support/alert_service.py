"""An alert service under test: its config, its rules and running it in a thread."""

from __future__ import annotations

import json
import threading
from pathlib import Path

from alerts.service import AlertService
from pipeline.config import VigilConfig
from tests.support.config import make_config_dict
from tests.support.messages import ZONE

REPO = Path(__file__).resolve().parents[2]
ALERT_SCHEMA = json.loads((REPO / "alerts" / "schemas" / "alert.v1.json").read_text())
RULES = [
    {
        "id": "intrusion",
        "type": "zone_intrusion",
        "zone": ZONE,
        "classes": ["person"],
        "min_frames": 3,
        "clear_after_s": 1.0,
        "cooldown_s": 0,
        "severity": "high",
    },
    {
        "id": "loiter",
        "type": "loitering",
        "zone": ZONE,
        "classes": ["person"],
        "dwell_s": 1.5,
        "clear_after_s": 1.0,
        "cooldown_s": 0,
    },
]


class Running:
    """An AlertService in a thread of this process."""

    def __init__(self, cfg: VigilConfig) -> None:
        self.service = AlertService(cfg)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.service.run, args=(self.stop,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(30)
        assert not self.thread.is_alive(), "alert service did not stop"


def base_dict(bootstrap: str, rules=RULES, **service) -> dict:
    """A config dict of the test's own topics and keys with an alert service over ``rules``."""
    d = make_config_dict(bootstrap)
    tag = d["redis"]["key_prefix"].rstrip(":")
    d["alerts"] = {
        "rules": rules,
        "service": {
            "group_id": f"{tag}-alerts",
            "max_batch": 100,
            "poll_timeout_ms": 200,
            "session_timeout_ms": 6000,
            "retry_initial_s": 0.1,
            "retry_max_s": 1.0,
            **service,
        },
    }
    return d
