"""The ``alerts:`` section of the YAML: tracker settings and the list of rules.

Strict like the rest of the config (unknown keys are errors), and every error names the rule id
and the key, because a deployment has dozens of rules and "field required" alone is useless.
Each rule type has its own model, chosen by ``type`` through ``RULE_CONFIGS`` (a registry rather
than a closed union, so a plug-in rule type brings its own model).
"""

from __future__ import annotations

import hashlib
import re
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SerializeAsAny,
    ValidationError,
    field_validator,
    model_validator,
)

from alerts.geometry import Polygon, cross, polygon_area, self_intersects
from alerts.schedule import DAYS, Schedule, Window, load_zone, parse_hhmm

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")

Severity = Literal["info", "low", "medium", "high", "critical"]
Anchor = Literal["bottom_center", "center"]


class RulesError(ValueError):
    """Invalid alerts config. ``errors`` holds ``(rule_id or None, key, message)`` triples."""

    def __init__(self, errors: list[tuple[str | None, str, str]]):
        self.errors = errors
        super().__init__("\n".join(_format(r, k, m) for r, k, m in errors))


def _format(rule_id: str | None, key: str, msg: str) -> str:
    where = f"rule {rule_id!r}: " if rule_id is not None else "alerts: "
    return f"{where}{key}: {msg}" if key else f"{where}{msg}"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


# --- shared pieces ---------------------------------------------------------------------------


def _check_point(p: tuple[float, float], what: str) -> None:
    if not (0.0 <= p[0] <= 1.0 and 0.0 <= p[1] <= 1.0):
        raise ValueError(
            f"{what} {list(p)} is outside the image: coordinates are normalised to [0, 1]"
        )


def validate_polygon(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    if len(points) < 3:
        raise ValueError("polygon needs at least 3 points")
    for i, p in enumerate(points):
        _check_point(p, f"point {i}")
    if self_intersects(points):
        raise ValueError("polygon edges cross each other; list the points in order around the zone")
    if polygon_area(points) < 1e-6:
        raise ValueError("polygon has no area (points are collinear or repeated)")
    return points


class TimeWindow(_Strict):
    """``start``-``end`` local time on ``days``; an overnight window (22:00-06:00) belongs to the
    day it starts on; ``start == end`` is the whole day."""

    days: list[Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]] = list(DAYS)
    start: str = "00:00"
    end: str = "24:00"

    @field_validator("start")
    @classmethod
    def _start(cls, v: str) -> str:
        parse_hhmm(v)
        return v

    @field_validator("end")
    @classmethod
    def _end(cls, v: str) -> str:
        parse_hhmm(v, allow_24=True)
        return v

    @field_validator("days")
    @classmethod
    def _days(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("needs at least one day")
        return v

    def compile(self) -> Window:
        start, end = parse_hhmm(self.start), parse_hhmm(self.end, allow_24=True)
        if end == 24 * 60:
            end = 0 if start == 0 else end  # 00:00-24:00 is the whole day
        return Window((DAYS.index(d) for d in self.days), start, end)


class ScheduleConfig(_Strict):
    timezone: str = "UTC"
    windows: list[TimeWindow] = Field(min_length=1)
    _compiled: Schedule | None = PrivateAttr(default=None)

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        load_zone(v)
        return v

    def compile(self) -> Schedule:
        """One compiled schedule per rule, shared by every camera (its minute cache too)."""
        if self._compiled is None:
            self._compiled = Schedule(self.timezone, [w.compile() for w in self.windows])
        return self._compiled


# --- rules -----------------------------------------------------------------------------------


class RuleConfig(_Strict):
    """Keys every rule type accepts."""

    type: str
    id: str
    enabled: bool = True
    description: str = ""
    cameras: list[str] = ["*"]
    classes: list[str] | None = None
    min_confidence: float = Field(0.0, ge=0.0, le=1.0)
    severity: Severity = "medium"
    cooldown_s: float = Field(30.0, ge=0.0)
    cooldown_scope: Literal["subject", "rule"] = "subject"
    schedule: ScheduleConfig | None = None

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        if not _ID.match(v):
            raise ValueError(
                f"{v!r}: use 1-64 letters, digits, '_', '-', '.', starting with a letter or digit"
            )
        return v

    @field_validator("cameras", mode="before")
    @classmethod
    def _cameras(cls, v: Any) -> Any:
        if v == "*":
            return ["*"]
        if isinstance(v, list):
            if not v:
                raise ValueError('needs at least one camera id, or "*" for all cameras')
            for c in v:
                if not isinstance(c, str) or (c != "*" and not _ID.match(c)):
                    raise ValueError(f"{c!r} is not a camera id")
        return v

    @field_validator("classes")
    @classmethod
    def _classes(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and not v:
            raise ValueError("an empty list matches nothing; leave it out to match every class")
        return v

    def applies_to(self, camera_id: str) -> bool:
        return "*" in self.cameras or camera_id in self.cameras

    def fingerprint(self) -> str:
        """Changes when the rule's config changes; a snapshot of another version is not reused."""
        return hashlib.sha1(self.model_dump_json().encode()).hexdigest()[:12]


class ZoneRuleConfig(RuleConfig):
    """A rule that looks inside a polygon (the whole frame when ``zone`` is left out)."""

    zone: list[tuple[float, float]] | None = None
    anchor: Anchor = "bottom_center"
    _polygon: Polygon | None = PrivateAttr(default=None)

    @field_validator("zone")
    @classmethod
    def _zone(cls, v: list[tuple[float, float]] | None) -> list[tuple[float, float]] | None:
        return None if v is None else validate_polygon(v)

    def model_post_init(self, __context: Any) -> None:
        self._polygon = Polygon(self.zone) if self.zone is not None else None

    @property
    def polygon(self) -> Polygon | None:
        return self._polygon


class ZoneIntrusionConfig(ZoneRuleConfig):
    type: Literal["zone_intrusion"]
    min_frames: int | None = Field(None, ge=1)
    min_seconds: float | None = Field(None, ge=0.0)
    clear_after_s: float = Field(2.0, ge=0.0)

    @model_validator(mode="after")
    def _one_threshold(self) -> ZoneIntrusionConfig:
        if self.min_frames is not None and self.min_seconds is not None:
            raise ValueError("min_frames: give min_frames or min_seconds, not both")
        if self.min_frames is None and self.min_seconds is None:
            self.min_frames = 1
        return self


class LoiteringConfig(ZoneRuleConfig):
    type: Literal["loitering"]
    dwell_s: float = Field(gt=0.0)
    clear_after_s: float = Field(5.0, ge=0.0)


class LineCrossingConfig(RuleConfig):
    type: Literal["line_crossing"]
    line: tuple[tuple[float, float], tuple[float, float]]
    inside: tuple[float, float] | None = None
    direction: Literal["in", "out", "both"] = "both"
    anchor: Anchor = "bottom_center"
    min_distance: float = Field(0.01, ge=0.0, le=0.5)
    max_age_s: float = Field(5.0, gt=0.0)

    @field_validator("line")
    @classmethod
    def _line(cls, v: tuple[tuple[float, float], tuple[float, float]]):
        _check_point(v[0], "point 0")
        _check_point(v[1], "point 1")
        if abs(v[0][0] - v[1][0]) + abs(v[0][1] - v[1][1]) < 1e-6:
            raise ValueError("the two points of the line are the same")
        return v

    @model_validator(mode="after")
    def _inside_off_line(self) -> LineCrossingConfig:
        if self.inside is not None:
            _check_point(self.inside, "inside:")
            if abs(cross(self.line[0], self.line[1], self.inside)) < 1e-9:
                raise ValueError(
                    "inside: the point lies on the line; pick a point on the 'in' side"
                )
        return self


class CrowdingConfig(ZoneRuleConfig):
    type: Literal["crowding"]
    min_count: int = Field(ge=1)
    min_seconds: float = Field(0.0, ge=0.0)
    clear_after_s: float = Field(2.0, ge=0.0)


class ObjectLeftConfig(ZoneRuleConfig):
    type: Literal["object_left"]
    min_seconds: float = Field(30.0, gt=0.0)
    iou_threshold: float = Field(0.5, gt=0.0, le=1.0)
    clear_after_s: float = Field(5.0, ge=0.0)
    warmup_s: float = Field(10.0, ge=0.0)


class ObjectRemovedConfig(ZoneRuleConfig):
    type: Literal["object_removed"]
    present_s: float = Field(60.0, gt=0.0)
    min_seconds: float = Field(10.0, gt=0.0)
    iou_threshold: float = Field(0.5, gt=0.0, le=1.0)
    clear_after_s: float = Field(5.0, ge=0.0)


class CountAnomalyConfig(ZoneRuleConfig):
    type: Literal["count_anomaly"]
    measure: Literal["tracks", "mean"] = "tracks"
    z_threshold: float = Field(3.0, gt=0.0)
    alpha: float = Field(0.05, gt=0.0, le=1.0)
    min_samples: int = Field(30, ge=2)
    min_std: float = Field(1.0, gt=0.0)
    direction: Literal["above", "below", "both"] = "above"
    timezone: str = "UTC"
    min_coverage: float = Field(0.5, ge=0.0, le=1.0)

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        load_zone(v)
        return v


RULE_CONFIGS: dict[str, type[RuleConfig]] = {
    "zone_intrusion": ZoneIntrusionConfig,
    "loitering": LoiteringConfig,
    "line_crossing": LineCrossingConfig,
    "crowding": CrowdingConfig,
    "object_left": ObjectLeftConfig,
    "object_removed": ObjectRemovedConfig,
    "count_anomaly": CountAnomalyConfig,
}


def _pydantic_errors(err: ValidationError, rule_id: str | None, prefix: str = "") -> list:
    out = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"])
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling; see docs/rules.md)"
        elif e["type"] == "missing":
            msg = "required key is missing"
        msg = msg.removeprefix("Value error, ")
        if not key and ": " in msg and msg.split(": ", 1)[0].replace("_", "").isalnum():
            key, msg = msg.split(": ", 1)  # model-level check that names its key
        out.append((rule_id, prefix + key, msg))
    return out


def parse_rule(raw: Any, index: int = 0) -> RuleConfig:
    """Validate one rule mapping with the model its ``type`` selects."""
    label = f"#{index + 1}"
    if not isinstance(raw, dict):
        raise RulesError([(label, "", f"must be a mapping, got {type(raw).__name__}")])
    rid = raw.get("id")
    name = rid if isinstance(rid, str) and rid else label
    rtype = raw.get("type")
    if rtype is None:
        raise RulesError(
            [(name, "type", f"required key is missing (one of {', '.join(RULE_CONFIGS)})")]
        )
    model = RULE_CONFIGS.get(rtype) if isinstance(rtype, str) else None
    if model is None:
        raise RulesError(
            [(name, "type", f"unknown rule type {rtype!r} (one of {', '.join(RULE_CONFIGS)})")]
        )
    try:
        return model.model_validate(raw)
    except ValidationError as e:
        raise RulesError(_pydantic_errors(e, name)) from None


class TrackerConfig(_Strict):
    """The alert service's own IoU tracker, used for detections that arrive without a track id."""

    enabled: bool = True
    iou_threshold: float = Field(0.3, gt=0.0, le=1.0)
    max_age_s: float = Field(5.0, gt=0.0)


class AlertServiceConfig(_Strict):
    """``alerts.service``: the alert service (``vigil alerts serve``); see docs/redis.md."""

    group_id: str = "vigil-alerts"
    # Static group membership (KIP-345): an instance restarted with the same id gets its
    # partitions back at once instead of after session_timeout_ms. Unique per instance.
    instance_id: str | None = None
    # Detection messages per batch, at most (a poll returns what is there, so this only bounds
    # a backlog). Each batch pays fixed costs (checkpoint, Kafka commit, 4 Redis round trips, one
    # wait for Kafka acknowledgements): on a backlog 2000 gave 15-40% more msgs/s than 500 (the
    # alert service bench, docs/redis.md), for ~0.2 s per batch at 10k msgs/s. Lower it for less
    # replay work per crash.
    max_batch: int = Field(2000, ge=1, le=10_000)
    poll_timeout_ms: int = Field(500, ge=10, le=60_000)
    # Where a new group starts. "earliest": nothing produced before the first start is missed.
    auto_offset_reset: Literal["earliest", "latest"] = "earliest"
    session_timeout_ms: int = Field(10_000, ge=6000)
    max_poll_interval_ms: int = Field(300_000, ge=10_000)
    # 0 = checkpoint the rule state after every batch (the least replay after a crash).
    checkpoint_interval_s: float = Field(0.0, ge=0.0, le=3600.0)
    retry_initial_s: float = Field(0.2, gt=0.0)
    retry_max_s: float = Field(10.0, gt=0.0)
    alert_ttl_s: int | None = Field(
        30 * 24 * 3600, ge=3600, description="alert hashes; null = keep"
    )
    snapshot_quality: int = Field(85, ge=10, le=100)
    dlq_max_value_bytes: int = Field(65_536, ge=256)


class AlertsConfig(_Strict):
    tracker: TrackerConfig = TrackerConfig()
    service: AlertServiceConfig = AlertServiceConfig()
    rules: list[SerializeAsAny[RuleConfig]] = []

    @field_validator("rules", mode="before")
    @classmethod
    def _dispatch(cls, v: Any) -> Any:
        if not isinstance(v, list):
            return v
        return [r if isinstance(r, RuleConfig) else parse_rule(r, i) for i, r in enumerate(v)]

    def rules_for(self, camera_id: str) -> list[RuleConfig]:
        return [r for r in self.rules if r.enabled and r.applies_to(camera_id)]


def parse_alerts_config(data: Any) -> AlertsConfig:
    """Validate the ``alerts:`` mapping; ``RulesError`` lists every problem, each naming its rule
    and key (e.g. ``rule 'lobby-intrusion': zone: polygon needs at least 3 points``)."""
    if data is None:
        data = {}
    if isinstance(data, AlertsConfig):
        return data
    if not isinstance(data, dict):
        raise RulesError([(None, "", f"must be a mapping, got {type(data).__name__}")])
    errors: list[tuple[str | None, str, str]] = []
    raw_rules = data.get("rules") or []
    rules: list[RuleConfig] = []
    if not isinstance(raw_rules, list):
        errors.append((None, "rules", "must be a list of rules"))
        raw_rules = []
    for i, raw in enumerate(raw_rules):
        try:
            rules.append(parse_rule(raw, i))
        except RulesError as e:
            errors.extend(e.errors)
    seen: set[Any] = set()
    for raw in raw_rules:
        rid = raw.get("id") if isinstance(raw, dict) else None
        if isinstance(rid, str) and rid in seen:
            errors.append(
                (rid, "id", "duplicate rule id; ids must be unique (alert ids derive from them)")
            )
        seen.add(rid)
    try:
        cfg = AlertsConfig.model_validate({k: v for k, v in data.items() if k != "rules"})
    except ValidationError as e:
        errors.extend(_pydantic_errors(e, None))
        cfg = None
    if errors:
        raise RulesError(errors)
    assert cfg is not None
    cfg.rules = rules
    return cfg
