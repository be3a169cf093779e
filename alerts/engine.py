"""The rule engine: detection messages in, alert events out, deterministically.

Everything that decides an alert comes from the messages themselves (capture time, never the wall
clock), so replaying the same messages from a snapshot yields the same alerts with the same ids;
the alert service relies on this for exactly-once delivery after a crash. Per camera the engine
keeps: its rule instances (created on the camera's first frame), its tracker, and the last
(epoch, seq) seen so that messages delivered twice are ignored.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

from alerts import metrics as m
from alerts.config import AlertsConfig, RuleConfig, parse_alerts_config
from alerts.events import AlertEvent, FrameEvent
from alerts.iou_tracker import IouTracker
from alerts.rules import RULE_TYPES, Rule
from alerts.schedule import Schedule

SNAPSHOT_VERSION = 1
_LOGGED_EPOCHS = 8  # refused older epochs logged per camera (one line each, not one per frame)

log = logging.getLogger(__name__)


class _Camera:
    __slots__ = ("rules", "active", "tracker", "epoch", "seq", "refused_epochs", "ts")

    def __init__(self, rules: list[tuple[Rule, Schedule | None]], tracker: IouTracker | None):
        self.rules = rules
        self.active = [True] * len(rules)
        self.tracker = tracker
        self.epoch = -1
        self.seq = -1
        self.refused_epochs: list[int] = []  # older epochs already logged (not state)
        self.ts = 0.0


class RuleEngine:
    """Route each frame to its camera's rules; apply schedules; keep state snapshot-able."""

    def __init__(self, config: AlertsConfig | Mapping[str, Any] | None = None):
        self.config = config if isinstance(config, AlertsConfig) else parse_alerts_config(config)
        self._specs = _compile(self.config)
        self._cameras: dict[str, _Camera] = {}
        # "ended" events of alerts whose rule changed since the snapshot that restore() loaded
        self._changed_ends: list[AlertEvent] = []
        self.stats = {
            "frames": 0,
            "duplicates": 0,
            "alerts": 0,
            "epoch_switches": 0,  # a newer reader took a camera over
            "stale_epoch": 0,  # frames of an older reader, refused
        }

    # -- processing -----------------------------------------------------------------------------

    def process(self, message: Mapping[str, Any]) -> list[AlertEvent]:
        """Process one ``vigil.detections/v1`` message; ``ValueError`` if it is malformed."""
        return self.process_frame(FrameEvent.from_message(message))

    def process_frame(self, frame: FrameEvent) -> list[AlertEvent]:
        cam = self._cameras.get(frame.camera_id)
        if cam is None:
            cam = self._cameras[frame.camera_id] = self._new_camera(frame.camera_id)
        refused = self._advance(cam, frame)
        if refused is not None:
            self.stats[refused] += 1
            return []
        self.stats["frames"] += 1
        if cam.tracker is not None:
            for d in frame.detections:
                if d.track_id is None:
                    cam.tracker.update(frame.detections, frame.ts)
                    break
        out: list[AlertEvent] = []
        active = cam.active
        for i, (rule, sched) in enumerate(cam.rules):
            if sched is not None:
                if not sched.active(frame.ts):
                    if active[i]:
                        active[i] = False
                        out += rule.pause(frame)
                    continue
                active[i] = True
            alerts = rule.process(frame)
            if alerts:
                out += alerts
        if out:
            self.stats["alerts"] += len(out)
        return out

    def _advance(self, cam: _Camera, frame: FrameEvent) -> str | None:
        """Accept a frame once: (epoch, seq) only moves forward. None when accepted, else the
        stats key of the refusal ("duplicates": a replay; "stale_epoch": an older reader).

        Epochs are ordered: the reader that started later wins and an older one is refused, so a
        message of a reader that is not the camera's current one (a worker that lost the camera,
        or a forged message) cannot make the current reader's frames look like replays. Epochs
        come from the workers' clocks: keep them in sync (NTP) to well within the time a camera
        stays on one worker. Every switch and every refused epoch is logged once and counted.
        """
        if frame.epoch == cam.epoch:
            if frame.seq <= cam.seq:
                return "duplicates"
        elif frame.epoch < cam.epoch:
            m.STALE_EPOCH.inc()
            if frame.epoch not in cam.refused_epochs:
                cam.refused_epochs = (cam.refused_epochs + [frame.epoch])[-_LOGGED_EPOCHS:]
                log.warning(
                    "camera %s: frames of reader epoch %d refused: reader epoch %d started later "
                    "and is the camera's current one",
                    frame.camera_id,
                    frame.epoch,
                    cam.epoch,
                )
            return "stale_epoch"
        else:  # a reader that started later: a restart, or the camera moved to another worker
            if cam.epoch >= 0:
                self.stats["epoch_switches"] += 1
                m.EPOCH_SWITCHES.inc()
                log.info(
                    "camera %s: new reader epoch %d replaces %d",
                    frame.camera_id,
                    frame.epoch,
                    cam.epoch,
                )
            cam.epoch = frame.epoch
        cam.seq = frame.seq
        # The engine's clock never goes backwards, so durations are never negative.
        if frame.capture_ts < cam.ts:
            frame.ts = cam.ts
        else:
            frame.ts = cam.ts = frame.capture_ts
        return None

    def _new_camera(self, camera_id: str) -> _Camera:
        rules = [
            (cls(cfg, camera_id), sched)
            for cfg, cls, sched, _ in self._specs
            if cfg.applies_to(camera_id)
        ]
        tcfg = self.config.tracker
        tracker = IouTracker(tcfg.iou_threshold, tcfg.max_age_s) if tcfg.enabled else None
        return _Camera(rules, tracker)

    # -- live rule changes -----------------------------------------------------------------------

    def replace_rules(self, config: AlertsConfig | Mapping[str, Any] | None) -> list[AlertEvent]:
        """Swap the rule set without losing what the unchanged rules know.

        A rule whose ``fingerprint()`` is the same keeps its instances (open alerts, counts,
        baselines, schedule state) on every camera; a changed or removed rule is dropped and its
        open alerts end now, at each camera's last frame (``details["reason"] = "rule_changed"``),
        so no alert stays "started" for ever; a changed or new rule starts fresh. Deterministic
        like the rest: the ended events depend on the engine state only. Only the rules change;
        the tracker keeps its settings. ``ValueError`` (nothing changed) on a rule type without
        an implementation."""
        new = config if isinstance(config, AlertsConfig) else parse_alerts_config(config)
        specs = _compile(new)  # may raise: before anything changed
        old_fps = {cfg.id: fp for cfg, _, _, fp in self._specs}
        new_fps = {cfg.id: fp for cfg, _, _, fp in specs}
        out: list[AlertEvent] = []
        for cid, cam in self._cameras.items():
            kept: dict[str, tuple[Rule, Schedule | None, bool]] = {}
            for (rule, sched), act in zip(cam.rules, cam.active, strict=True):
                if new_fps.get(rule.rule_id) == old_fps[rule.rule_id]:
                    kept[rule.rule_id] = (rule, sched, act)
                else:
                    out += _changed_ends(rule.open_alerts(), cam)
            rules: list[tuple[Rule, Schedule | None]] = []
            active: list[bool] = []
            for cfg, cls, sched, _ in specs:
                if not cfg.applies_to(cid):
                    continue
                k = kept.get(cfg.id)
                if k is not None:
                    rules.append((k[0], k[1]))
                    active.append(k[2])
                else:
                    rules.append((cls(cfg, cid), sched))
                    active.append(True)
            cam.rules, cam.active = rules, active
        self.config, self._specs = new, specs
        if out:
            self.stats["alerts"] += len(out)
        return out

    def pop_changed_ends(self) -> list[AlertEvent]:
        """The "ended" events (``reason: rule_changed``) of the alerts that were open in the last
        restored snapshot under a rule that has changed or gone since; cleared by this call.
        The alert service stores them like a batch's alerts: a restore after a crash in the
        middle of a rule change emits the same events again, and Redis keeps one of each."""
        out, self._changed_ends = self._changed_ends, []
        return out

    # -- state ----------------------------------------------------------------------------------

    @property
    def cameras(self) -> list[str]:
        return list(self._cameras)

    def snapshot(self, camera_id: str | None = None) -> dict[str, Any]:
        """JSON-able copy of the state of one camera (or all), for checkpoints."""
        # A deep copy through JSON: proves it serialises, and detaches it from live state.
        return json.loads(self.snapshot_json(camera_id))

    def snapshot_json(self, camera_id: str | None = None) -> str:
        """``snapshot()`` as compact JSON text, encoded once (the alert service's checkpoints:
        no copy, no decode and re-encode)."""
        return json.dumps(
            {"version": SNAPSHOT_VERSION, "cameras": self._state(camera_id)}, separators=(",", ":")
        )

    def _state(self, camera_id: str | None) -> dict[str, Any]:
        """The live state (shares lists and dicts with the rules): encode it, never keep it."""
        ids = list(self._cameras) if camera_id is None else [camera_id]
        cams = {}
        fps = {cfg.id: fp for cfg, _, _, fp in self._specs}
        for cid in ids:
            cam = self._cameras.get(cid)
            if cam is None:
                continue
            cams[cid] = {
                "epoch": cam.epoch,
                "seq": cam.seq,
                "ts": cam.ts,
                "tracker": cam.tracker.snapshot() if cam.tracker is not None else None,
                "rules": {
                    rule.rule_id: {"fp": fps[rule.rule_id], "active": act, "state": rule.snapshot()}
                    for (rule, _), act in zip(cam.rules, cam.active, strict=True)
                },
            }
        return cams

    def restore(self, snapshot: Mapping[str, Any]) -> None:
        """Load cameras from ``snapshot`` (others are untouched). A rule whose config changed since
        the snapshot, or that is new, starts fresh; rules no longer configured are dropped. The
        alerts still open under a changed or dropped rule end (``pop_changed_ends``), as
        ``replace_rules`` would have ended them: rule states are keyed by fingerprint, so a
        checkpoint written before a rule change restores the unchanged rules only."""
        if snapshot.get("version") != SNAPSHOT_VERSION:
            raise ValueError(f"unsupported snapshot version {snapshot.get('version')!r}")
        fps = {cfg.id: fp for cfg, _, _, fp in self._specs}
        ends: list[AlertEvent] = []
        for cid, cs in snapshot.get("cameras", {}).items():
            cam = self._new_camera(cid)
            cam.epoch, cam.seq, cam.ts = int(cs["epoch"]), int(cs["seq"]), float(cs["ts"])
            if cam.tracker is not None and cs.get("tracker"):
                cam.tracker.restore(cs["tracker"])
            saved = cs.get("rules", {})
            loaded: set[str] = set()
            for i, (rule, _) in enumerate(cam.rules):
                rs = saved.get(rule.rule_id)
                if rs is not None and rs.get("fp") == fps[rule.rule_id]:
                    rule.restore(rs["state"])
                    cam.active[i] = bool(rs.get("active", True))
                    loaded.add(rule.rule_id)
            for rid, rs in saved.items():
                if rid not in loaded:
                    opened = (rs.get("state") or {}).get("open") or []
                    alerts = [AlertEvent.from_dict(a) for _, a, sup in opened if not sup]
                    ends += _changed_ends(alerts, cam)
            self._cameras[cid] = cam
        self._changed_ends = ends


def _compile(config: AlertsConfig) -> list[tuple[RuleConfig, type[Rule], Schedule | None, str]]:
    """The enabled rules with their implementation, compiled schedule and fingerprint."""
    specs = []
    for cfg in config.rules:
        if not cfg.enabled:
            continue
        if cfg.type not in RULE_TYPES:
            raise ValueError(f"rule {cfg.id!r}: type {cfg.type!r} has no registered implementation")
        sched = cfg.schedule.compile() if cfg.schedule is not None else None
        specs.append((cfg, RULE_TYPES[cfg.type], sched, cfg.fingerprint()))
    return specs


def _changed_ends(alerts: list[AlertEvent], cam: _Camera) -> list[AlertEvent]:
    """End ``alerts`` because their rule changed: at the camera's last frame (no new frame is
    needed, and the same state always gives the same events)."""
    return [a.ended(cam.ts, cam.seq, cam.epoch, "rule_changed") for a in alerts]
