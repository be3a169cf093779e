"""The rule interface, the registry of rule types, and the bookkeeping every rule shares.

A rule type is one class: ``process(frame) -> alerts`` plus, when it keeps state between frames,
``_state()``/``_load_state()`` so the engine can snapshot it. The base class owns what must behave
the same in every rule: the class/confidence/zone filter, deterministic alert ids, the pairing of
"started" and "ended" events, and the cooldown that suppresses a repeat alert.

A new type plugs in with::

    @register_rule
    class MyRule(Rule):
        type = "my_rule"
        config_model = MyRuleConfig  # a RuleConfig subclass with ``type: Literal["my_rule"]``

        def process(self, frame): ...
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from typing import Any, ClassVar

from alerts.events import AlertEvent, Det, FrameEvent, alert_id
from alerts.rules.config import RULE_CONFIGS, RuleConfig

_SELECT_KEYS: dict[tuple[Any, ...], int] = {}
_SELECT_KEYS_LOCK = threading.Lock()


def _select_key(key: tuple[Any, ...]) -> int:
    """A small int per distinct detection filter (cheaper to hash per frame than the filter)."""
    with _SELECT_KEYS_LOCK:
        return _SELECT_KEYS.setdefault(key, len(_SELECT_KEYS))


class Rule(ABC):
    """One rule evaluated on one camera. Instances never see another camera's frames."""

    type: ClassVar[str] = ""
    config_model: ClassVar[type[RuleConfig]] = RuleConfig

    def __init__(self, cfg: RuleConfig, camera_id: str):
        self.cfg = cfg
        self.camera_id = camera_id
        self.rule_id = cfg.id
        self._classes = frozenset(cfg.classes) if cfg.classes else None
        self._min_conf = cfg.min_confidence
        self._poly = getattr(cfg, "polygon", None)
        self._zone_list = self._poly.to_list() if self._poly is not None else None
        self._bottom = getattr(cfg, "anchor", "bottom_center") == "bottom_center"
        # select()'s result depends on these only: rules that filter alike share it per frame.
        points = self._poly.points if self._poly is not None else None
        self._select_key = _select_key(
            (self._classes, self._min_conf, points, self._bottom if points else None)
        )
        self._select_key_nozone = _select_key((self._classes, self._min_conf, None, None))
        self._cooldown = cfg.cooldown_s
        self._scope_rule = cfg.cooldown_scope == "rule"
        # subject -> [started AlertEvent, suppressed?]; insertion order is the emission order.
        self._open: dict[str, list[Any]] = {}
        # cooldown key -> engine time of the last emitted "ended"
        self._last_end: dict[str, float] = {}

    # -- the interface --------------------------------------------------------------------------

    @abstractmethod
    def process(self, frame: FrameEvent) -> list[AlertEvent]:
        """Update state with one frame; return the alerts that started or ended on it."""

    def reset(self) -> None:  # noqa: B027 - optional hook, a stateless rule has nothing to forget
        """Forget transient state (objects in view); keep what was learned (counts, baselines)."""

    def _state(self) -> dict[str, Any]:
        return {}

    def _load_state(self, state: dict[str, Any]) -> None:  # noqa: B027 - optional hook
        pass

    # -- lifecycle driven by the engine ---------------------------------------------------------

    def pause(self, frame: FrameEvent) -> list[AlertEvent]:
        """The schedule closed: end what is open and start afresh when it reopens."""
        out: list[AlertEvent] = []
        for subject in list(self._open):
            self._end(out, frame, subject, reason="schedule")
        self.reset()
        return out

    def open_alerts(self) -> list[AlertEvent]:
        """The started alerts not ended yet that were emitted (suppressed ones never were): what
        must end when this rule instance goes away (a live rule change)."""
        return [a for a, suppressed in self._open.values() if not suppressed]

    def snapshot(self) -> dict[str, Any]:
        return {
            "open": [[s, a.to_state(), sup] for s, (a, sup) in self._open.items()],
            "last_end": [[k, v] for k, v in self._last_end.items()],
            "state": self._state(),
        }

    def restore(self, snap: dict[str, Any]) -> None:
        self._open = {s: [AlertEvent.from_dict(a), bool(sup)] for s, a, sup in snap.get("open", [])}
        self._last_end = {k: float(v) for k, v in snap.get("last_end", [])}
        self._load_state(snap.get("state") or {})

    # -- helpers for subclasses -----------------------------------------------------------------

    def select(self, frame: FrameEvent, *, zone: bool = True) -> list[Det]:
        """Detections of the rule's classes, above its confidence, whose anchor is in its zone.
        Computed once per frame for all the camera's rules with the same filter (the same
        classes, confidence, zone and anchor: e.g. intrusion, loitering and crowding in one zone);
        each caller gets its own list."""
        key = self._select_key if zone else self._select_key_nozone
        cache = frame.selected
        if cache is None:
            cache = frame.selected = {}
        else:
            hit = cache.get(key)
            if hit is not None:
                return list(hit)
        classes, min_conf = self._classes, self._min_conf
        poly = self._poly if zone else None
        bottom = self._bottom
        out = []
        for d in frame.detections:
            if classes is not None and d.label not in classes:
                continue
            if d.confidence < min_conf:
                continue
            if poly is not None and not poly.contains(d.cx, d.y2 if bottom else d.cy):
                continue
            out.append(d)
        cache[key] = tuple(out)
        return out

    def anchor(self, d: Det) -> tuple[float, float]:
        return (d.cx, d.y2 if self._bottom else d.cy)

    def is_open(self, subject: str) -> bool:
        return subject in self._open

    def _start(
        self,
        out: list[AlertEvent],
        frame: FrameEvent,
        subject: str,
        started_at: float,
        *,
        label: str | None = None,
        track_id: int | None = None,
        box: tuple[float, float, float, float] | None = None,
        confidence: float | None = None,
        count: int | None = None,
        details: dict[str, Any] | None = None,
    ) -> AlertEvent | None:
        """Open an alert for ``subject`` unless one is open; suppressed (never emitted, nor its
        end) when the same subject's previous alert ended less than ``cooldown_s`` ago."""
        if subject in self._open:
            return None
        ts = frame.ts
        key = "*" if self._scope_rule else subject
        last = self._last_end.get(key)
        suppressed = last is not None and ts - last < self._cooldown
        if self._scope_rule and any(not sup for _, sup in self._open.values()):
            suppressed = True
        alert = AlertEvent(
            id=alert_id(self.camera_id, self.rule_id, subject, started_at),
            camera_id=self.camera_id,
            rule_id=self.rule_id,
            rule_type=self.type,
            status="started",
            severity=self.cfg.severity,
            started_at=started_at,
            updated_at=ts,
            frame_seq=frame.seq,
            epoch=frame.epoch,
            label=label,
            track_id=track_id,
            box=box,
            confidence=confidence,
            count=count,
            zone=self._zone_list,
            details=details or {},
        )
        self._open[subject] = [alert, suppressed]
        if not suppressed:
            out.append(alert)
        return alert

    def _end(
        self,
        out: list[AlertEvent],
        frame: FrameEvent,
        subject: str,
        *,
        ended_at: float | None = None,
        count: int | None = None,
        details: dict[str, Any] | None = None,
        reason: str = "cleared",
    ) -> None:
        """Close ``subject``'s alert: the "ended" update shares the started alert's id."""
        entry = self._open.pop(subject, None)
        if entry is None:
            return
        alert, suppressed = entry
        if suppressed:
            return
        ts = frame.ts
        out.append(
            alert.ended(
                ts, frame.seq, frame.epoch, reason, ended_at=ended_at, count=count, details=details
            )
        )
        self._last_end["*" if self._scope_rule else subject] = ts
        if len(self._last_end) > 512:  # forget cooldowns that can no longer suppress anything
            self._last_end = {k: v for k, v in self._last_end.items() if ts - v < self._cooldown}


RULE_TYPES: dict[str, type[Rule]] = {}


def register_rule(cls: type[Rule]) -> type[Rule]:
    """Make a rule type available to the config (its ``config_model``) and to the engine."""
    if not cls.type:
        raise ValueError(f"{cls.__name__} has no 'type'")
    RULE_TYPES[cls.type] = cls
    RULE_CONFIGS[cls.type] = cls.config_model
    return cls
