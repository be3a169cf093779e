"""Motion spells: what ingest tells the recorders about motion on ``vigil.motion``.

A camera's motion spell starts with the first frame whose motion check found a changed region
and lasts while such frames keep coming less than :data:`QUIET_S` apart. Ingest publishes one
message when a spell starts, one every :data:`RENEW_S` while it goes on (``last_at`` moved on)
and one when it ends (``ended: true``), keyed by camera id:

    {"v": 1, "camera_id": "gate", "started_at": 1796680000.12, "last_at": 1796680004.52,
     "ended": false}

Times are on the ``capture_ts`` clock. A recorder in ``record.mode: events`` records
``[started_at - pre_s, last_at + post_s]``; the renewals keep that range ahead of the live
stream while the spell lasts, so a spell whose ingest worker died simply ends ``post_s`` after
its last renewal. The records are read as hostile (:func:`parse_motion`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from pipeline.common.contracts import validate_camera_id

MOTION_SCHEMA_VERSION = 1
#: A spell ends when no frame had motion for this long.
QUIET_S = 3.0
#: While a spell lasts, a message at least this often.
RENEW_S = 2.0
#: Longest spell a message may describe (one that lasts longer starts a new spell).
MAX_SPELL_S = 3600.0


@dataclass(frozen=True, slots=True)
class MotionSpell:
    camera_id: str
    started_at: float
    last_at: float
    ended: bool = False

    @property
    def key(self) -> str:
        """The spell's id among the camera's: its start in ms."""
        return f"motion-{round(self.started_at * 1000)}"

    def message(self) -> dict[str, Any]:
        return {
            "v": MOTION_SCHEMA_VERSION,
            "camera_id": self.camera_id,
            "started_at": self.started_at,
            "last_at": self.last_at,
            "ended": self.ended,
        }


def _time(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name}: not a time in seconds")
    if not 0 < value < 1e10:
        raise ValueError(f"{name}: out of range")
    return float(value)


def parse_motion(msg: Any) -> MotionSpell:
    """The spell a decoded ``vigil.motion`` record describes; ``ValueError`` saying why when it
    is not one (unknown keys are ignored)."""
    if not isinstance(msg, dict):
        raise ValueError("not a JSON object")
    if msg.get("v") != MOTION_SCHEMA_VERSION:
        raise ValueError(f"v: not {MOTION_SCHEMA_VERSION}")
    camera_id = validate_camera_id(msg.get("camera_id"))  # type: ignore[arg-type]
    started, last = _time(msg.get("started_at"), "started_at"), _time(msg.get("last_at"), "last_at")
    if not started <= last <= started + MAX_SPELL_S:
        raise ValueError(f"last_at: not within {MAX_SPELL_S:g} s after started_at")
    ended = msg.get("ended", False)
    if not isinstance(ended, bool):
        raise ValueError("ended: not true or false")
    return MotionSpell(camera_id, started, last, ended)


class MotionSpells:
    """Per camera, turns the motion checks of its frames into spell messages (module
    docstring): :meth:`update` for each checked frame returns the spell to publish, or None."""

    def __init__(self, quiet_s: float = QUIET_S, renew_s: float = RENEW_S) -> None:
        self.quiet_s = quiet_s
        self.renew_s = renew_s
        # camera -> (started_at, last motion at, last sent at)
        self._open: dict[str, tuple[float, float, float]] = {}

    def update(self, camera_id: str, ts: float, motion: bool) -> MotionSpell | None:
        spell = self._open.get(camera_id)
        if spell is not None:
            started, last, sent = spell
            if ts - last > self.quiet_s or ts - started > MAX_SPELL_S:
                del self._open[camera_id]  # over: said with its last motion
                out = MotionSpell(camera_id, started, last, ended=True)
                if motion:  # and a new one starts with this frame (said next frame)
                    self._open[camera_id] = (ts, ts, float("-inf"))
                return out
            if motion:
                last = ts
                if ts - sent >= self.renew_s:
                    self._open[camera_id] = (started, last, ts)
                    return MotionSpell(camera_id, started, last)
                self._open[camera_id] = (started, last, sent)
            return None
        if motion:
            self._open[camera_id] = (ts, ts, ts)
            return MotionSpell(camera_id, ts, ts)
        return None

    def forget(self, camera_id: str) -> None:
        """The camera left this worker: its spell is not ended here (the recorder's range
        ends ``post_s`` after its last message)."""
        self._open.pop(camera_id, None)
