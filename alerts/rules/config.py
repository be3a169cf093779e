"""What every rule type shares: the keys every rule accepts, zones, and the registry that maps a
``type`` to its config model and its implementation.

A rule type is one module in this package holding its config model (a :class:`RuleConfig`
subclass with ``type: Literal["my_rule"]``) and its :class:`alerts.rules.Rule` subclass, decorated
with ``@register_rule``; docs/architecture.md says where to put a new one.
"""

from __future__ import annotations

import hashlib
from typing import Any, Literal

from pydantic import Field, PrivateAttr, ValidationError, field_validator

from alerts.errors import RulesError
from alerts.geometry import Polygon, polygon_area, self_intersects
from alerts.schedule import ScheduleConfig
from pipeline.common.config import StrictModel
from pipeline.common.contracts import CAMERA_ID

_ID = CAMERA_ID  # rule ids follow the camera-id pattern

Severity = Literal["info", "low", "medium", "high", "critical"]
Anchor = Literal["bottom_center", "center"]


def _check_point(p: tuple[float, float], what: str) -> None:
    if not (0.0 <= p[0] <= 1.0 and 0.0 <= p[1] <= 1.0):
        raise ValueError(
            f"{what} {list(p)} is outside the image: coordinates are normalised to [0, 1]"
        )


# Points per zone. Validating a zone compares every edge with every other (quadratic): without a
# bound, one zone of a few thousand points saved on the live rules topic kept the alert service
# from starting. 256 is far more than any drawn zone needs.
MAX_ZONE_POINTS = 256


def _too_many_points(n: int) -> str:
    return f"{n} points; at most {MAX_ZONE_POINTS} are allowed (simplify the polygon)"


def validate_polygon(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    if len(points) > MAX_ZONE_POINTS:
        raise ValueError(_too_many_points(len(points)))
    if len(points) < 3:
        raise ValueError("polygon needs at least 3 points")
    for i, p in enumerate(points):
        _check_point(p, f"point {i}")
    if self_intersects(points):
        raise ValueError("polygon edges cross each other; list the points in order around the zone")
    if polygon_area(points) < 1e-6:
        raise ValueError("polygon has no area (points are collinear or repeated)")
    return points


class RuleConfig(StrictModel):
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

    def __eq__(self, other: object) -> bool:
        """Equal configs are equal rules. pydantic's own ``==`` also compares private attributes
        (the compiled zone polygon, the compiled schedule), which differ between two parses of
        the same rule."""
        if not isinstance(other, RuleConfig):
            return NotImplemented
        return type(self) is type(other) and self.model_dump() == other.model_dump()

    __hash__ = None  # type: ignore[assignment]  # mutable, like every pydantic model


class ZoneRuleConfig(RuleConfig):
    """A rule that looks inside a polygon (the whole frame when ``zone`` is left out)."""

    zone: list[tuple[float, float]] | None = None
    anchor: Anchor = "bottom_center"
    _polygon: Polygon | None = PrivateAttr(default=None)

    @field_validator("zone", mode="before")
    @classmethod
    def _zone_size(cls, v: Any) -> Any:
        """The bound before the points are parsed one by one (a huge list costs nothing)."""
        if isinstance(v, list | tuple) and len(v) > MAX_ZONE_POINTS:
            raise ValueError(_too_many_points(len(v)))
        return v

    @field_validator("zone")
    @classmethod
    def _zone(cls, v: list[tuple[float, float]] | None) -> list[tuple[float, float]] | None:
        return None if v is None else validate_polygon(v)

    def model_post_init(self, __context: Any) -> None:
        self._polygon = Polygon(self.zone) if self.zone is not None else None

    @property
    def polygon(self) -> Polygon | None:
        return self._polygon


# type -> config model; filled by ``register_rule`` (a registry, not a closed union, so a plug-in
# rule type brings its own model)
RULE_CONFIGS: dict[str, type[RuleConfig]] = {}


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
