"""A console with something to show: cameras in the registry and an ended alert on a camera's
recording, with a snapshot, as the alert service writes it (a person in a zone), so the alert's
detail plays its clip and the camera's timeline shows the recording and the alert.

Used by the phone tests and by ``make ui-audit`` (deploy/ui-audit/audit.py runs from the
repository root with the repository on ``sys.path``): so this module imports production code
only, never pytest or another test helper."""

from __future__ import annotations

from collections.abc import Sequence

from alerts.events import AlertEvent
from alerts.store import AlertStore, AlertWrite
from pipeline.cameras.registry import put_cameras
from pipeline.cameras.spec import CameraSpec
from pipeline.config import VigilConfig
from pipeline.record.segment import Segment


def seed_camera_alert(
    cfg: VigilConfig,
    cameras: Sequence[CameraSpec],
    segments: Sequence[Segment],
    *,
    alert_id: str,
    rule_id: str,
    offset_s: float,
    duration_s: float,
    snapshot: bytes,
) -> float:
    """``cameras`` put in the camera registry, and an alert ``alert_id`` of the camera of
    ``segments`` (its recording, already indexed) that started ``offset_s`` after the recording
    and ended ``duration_s`` later: its started event with ``snapshot`` (also the frame the
    camera saw), then its ended one. Returns when the alert started."""
    put_cameras(cfg.kafka, list(cameras))
    at = segments[0].start + offset_s
    started = AlertEvent(
        id=alert_id,
        camera_id=segments[0].camera_id,
        rule_id=rule_id,
        rule_type="zone_intrusion",
        status="started",
        severity="high",
        started_at=at,
        updated_at=at,
        ended_at=None,
        frame_seq=1,
        epoch=1,
        label="person",
        track_id=1,
        box=(0.4, 0.3, 0.6, 0.95),
        confidence=0.9,
        zone=[[0.30, 0.55], [0.90, 0.55], [0.90, 1.0], [0.30, 1.0]],
        details={"frames": 3},
    ).to_dict()
    end = at + duration_s
    ended = {**started, "status": "ended", "updated_at": end, "ended_at": end}
    ended["details"] = {"reason": "cleared"}
    store = AlertStore(cfg.redis)  # the snapshot comes with the started event
    store.write_alert(AlertWrite(started, at, snapshot=snapshot, source=snapshot))
    store.write_alert(AlertWrite(ended, end))
    return at
