"""What flows through the rules: a parsed detection message in, alert events out.

``FrameEvent.from_message`` validates by hand (not jsonschema, not pydantic): it runs once per
message on the hot path, and a malformed message must fail with a reason that can go to the
dead-letter queue rather than crash the consumer.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from dataclasses import dataclass, field
from typing import Any, Literal

from pipeline.common.contracts import CAMERA_ID

ALERT_SCHEMA_VERSION = 1
_NUM = (int, float)


class Det:
    """One detection; ``track_id`` may be filled in later by the alert service's own tracker."""

    __slots__ = ("class_id", "label", "confidence", "box", "track_id", "cx", "cy", "y2")

    def __init__(
        self,
        class_id: int,
        label: str,
        confidence: float,
        box: tuple[float, float, float, float],
        track_id: int | None = None,
    ):
        self.class_id = class_id
        self.label = label
        self.confidence = confidence
        self.box = box
        self.track_id = track_id
        # Anchor points, precomputed once because every zone rule asks for one of them.
        self.cx = (box[0] + box[2]) * 0.5
        self.cy = (box[1] + box[3]) * 0.5
        self.y2 = box[3]

    def __repr__(self) -> str:
        return f"Det({self.label!r}, {self.confidence:.2f}, {self.box}, track={self.track_id})"


@dataclass(slots=True)
class FrameEvent:
    """One processed frame of one camera. ``ts`` is the engine's clock: ``capture_ts`` made
    non-decreasing per camera, so durations never go negative when worker clocks disagree."""

    camera_id: str
    seq: int
    epoch: int
    capture_ts: float
    detections: list[Det]
    ts: float = 0.0
    # Rule.select's results for this frame, by filter (shared by the camera's rules).
    selected: dict[int, tuple[Det, ...]] | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.ts:
            self.ts = self.capture_ts

    @classmethod
    def from_message(cls, msg: Any) -> FrameEvent:
        """Parse a ``vigil.detections/v1`` message; ``ValueError`` names what is wrong."""
        if not isinstance(msg, dict):
            raise ValueError(f"message must be a JSON object, got {type(msg).__name__}")
        if msg.get("schema_version", 1) != 1:
            raise ValueError(
                f"unsupported schema_version {msg.get('schema_version')!r} (expected 1)"
            )
        try:
            cam = msg["camera_id"]
            seq = msg["seq"]
            epoch = msg["epoch"]
            ts = msg["capture_ts"]
            raw = msg["detections"]
        except KeyError as e:
            raise ValueError(f"missing field {e.args[0]!r}") from None
        if type(cam) is not str or not CAMERA_ID.match(cam):
            raise ValueError(f"camera_id {cam!r} is not a valid camera id")
        if type(seq) is not int or seq < 0:
            raise ValueError(f"seq must be a non-negative integer, got {seq!r}")
        if type(epoch) is not int or epoch < 0:
            raise ValueError(f"epoch must be a non-negative integer, got {epoch!r}")
        if type(ts) not in _NUM or not math.isfinite(ts) or ts < 0:
            raise ValueError(f"capture_ts must be a finite number of seconds, got {ts!r}")
        if type(raw) is not list:
            raise ValueError(f"detections must be a list, got {type(raw).__name__}")
        dets = [_parse_det(d, i) for i, d in enumerate(raw)]
        return cls(cam, seq, epoch, float(ts), dets, float(ts))


def _parse_det(d: Any, i: int) -> Det:
    if type(d) is not dict:
        raise ValueError(f"detections[{i}] must be an object")
    try:
        class_id = d["class_id"]
        label = d["label"]
        conf = d["confidence"]
        box = d["box"]
    except KeyError as e:
        raise ValueError(f"detections[{i}]: missing field {e.args[0]!r}") from None
    track_id = d.get("track_id")
    if type(class_id) is not int or class_id < 0:
        raise ValueError(f"detections[{i}].class_id must be a non-negative integer")
    if type(label) is not str or not label:
        raise ValueError(f"detections[{i}].label must be a non-empty string")
    if type(conf) not in _NUM or not 0.0 <= conf <= 1.0:
        raise ValueError(f"detections[{i}].confidence must be a number in [0, 1], got {conf!r}")
    if type(box) is not list or len(box) != 4:
        raise ValueError(f"detections[{i}].box must be [x1, y1, x2, y2]")
    x1, y1, x2, y2 = box
    for v in box:
        if type(v) not in _NUM or not 0.0 <= v <= 1.0:
            raise ValueError(
                f"detections[{i}].box values must be normalised numbers in [0, 1], got {box!r}"
            )
    if x1 > x2 or y1 > y2:
        raise ValueError(f"detections[{i}].box must have x1 <= x2 and y1 <= y2, got {box!r}")
    if track_id is not None and type(track_id) is not int:
        raise ValueError(f"detections[{i}].track_id must be an integer, got {track_id!r}")
    return Det(class_id, label, float(conf), (float(x1), float(y1), float(x2), float(y2)), track_id)


def alert_id(camera_id: str, rule_id: str, subject: str, started_at: float) -> str:
    """Deterministic id: a replay of the same messages yields the same ids (exactly-once relies
    on it). ``subject`` is the track or window the alert is about."""
    key = f"{camera_id}|{rule_id}|{subject}|{started_at:.3f}"
    return hashlib.sha1(key.encode()).hexdigest()[:20]


def _r(v: float | None, nd: int) -> float | None:
    return None if v is None else round(v, nd)


@dataclass(slots=True)
class AlertEvent:
    """One alert message. A "started" and its "ended" share the id; ``(id, status)`` is unique."""

    id: str
    camera_id: str
    rule_id: str
    rule_type: str
    status: Literal["started", "ended"]
    severity: str
    started_at: float
    updated_at: float
    frame_seq: int
    epoch: int
    label: str | None = None
    track_id: int | None = None
    ended_at: float | None = None
    box: tuple[float, float, float, float] | None = None
    confidence: float | None = None
    count: int | None = None
    zone: list[list[float]] | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The ``vigil.alerts/v1`` message (see ``alerts/schemas/alert.v1.json``)."""
        return {
            "schema_version": ALERT_SCHEMA_VERSION,
            "id": self.id,
            "camera_id": self.camera_id,
            "rule_id": self.rule_id,
            "rule_type": self.rule_type,
            "status": self.status,
            "severity": self.severity,
            "label": self.label,
            "track_id": self.track_id,
            "started_at": _r(self.started_at, 6),
            "ended_at": _r(self.ended_at, 6),
            "updated_at": _r(self.updated_at, 6),
            "frame_seq": self.frame_seq,
            "epoch": self.epoch,
            "box": None if self.box is None else [round(v, 5) for v in self.box],
            "confidence": _r(self.confidence, 4),
            "count": self.count,
            "zone": self.zone,
            "details": self.details,
        }

    def ended(
        self,
        ts: float,
        frame_seq: int,
        epoch: int,
        reason: str,
        *,
        ended_at: float | None = None,
        count: int | None = None,
        details: dict[str, Any] | None = None,
    ) -> AlertEvent:
        """The "ended" update of this started alert, produced at engine time ``ts`` by frame
        (``epoch``, ``frame_seq``); ``details["reason"]`` says why. One definition, so an alert
        ended by its rule and one ended by a rule change have the same shape."""
        merged = dict(self.details)
        if details:
            merged.update(details)
        merged["reason"] = reason
        return dataclasses.replace(
            self,
            status="ended",
            ended_at=ts if ended_at is None else ended_at,
            updated_at=ts,
            frame_seq=frame_seq,
            epoch=epoch,
            count=self.count if count is None else count,
            details=merged,
        )

    def to_state(self) -> dict[str, Any]:
        """Unrounded JSON-able copy for snapshots, so a restored run emits identical messages."""
        d = {f: getattr(self, f) for f in self.__dataclass_fields__}
        d["box"] = None if self.box is None else list(self.box)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AlertEvent:
        """Inverse of ``to_dict`` and ``to_state``."""
        box = d.get("box")
        return cls(
            id=d["id"],
            camera_id=d["camera_id"],
            rule_id=d["rule_id"],
            rule_type=d["rule_type"],
            status=d["status"],
            severity=d["severity"],
            started_at=d["started_at"],
            updated_at=d["updated_at"],
            frame_seq=d["frame_seq"],
            epoch=d["epoch"],
            label=d.get("label"),
            track_id=d.get("track_id"),
            ended_at=d.get("ended_at"),
            box=None if box is None else tuple(box),
            confidence=d.get("confidence"),
            count=d.get("count"),
            zone=d.get("zone"),
            details=dict(d.get("details") or {}),
        )
