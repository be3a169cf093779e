"""A model registry entry (:class:`ModelVersion`) and the checks on what is read back from Redis.

Anyone who can write to Redis can write a registry entry, so an entry is refused
(:class:`ModelRefused`) unless its version is a well-formed file name and its sha256 is 64 hex
digits. :mod:`.model_registry` keeps the entries; this module only parses and checks them.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from pipeline.common.errors import UserError

#: What a version may look like: it becomes a file name, so no ``/``, no ``..``, no ``${``.
VERSION_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
_VERSION = re.compile(VERSION_PATTERN)
SHA256 = re.compile(r"^[0-9a-f]{64}$")


class RegistryError(UserError, ValueError):
    """A registry operation that cannot be done; the message says why."""


class ModelRefused(RegistryError):
    """A registry entry that must not be loaded; ``reason`` is a short label for metrics."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def shown(value: object, limit: int = 40) -> str:
    """A value read from Redis, quoted and cut short, for messages (never expanded)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_version(version: object) -> str:
    """``version`` if it is a well-formed version string, else :class:`ModelRefused`."""
    if not isinstance(version, str) or not _VERSION.match(version) or ".." in version:
        raise ModelRefused(
            "bad_version",
            f"invalid model version {shown(version)}: expected letters, digits, '.', '_', '-' "
            "(at most 64, no '..')",
        )
    return version


@dataclass
class ModelVersion:
    version: str
    number: int
    name: str
    uri: str
    sha256: str
    created_at: float
    source: str = ""
    classes: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    profile: dict[str, Any] = field(default_factory=dict)  # drift reference
    card_uri: str | None = None
    train: dict[str, Any] = field(default_factory=dict)
    notes: str = ""
    # reduced-precision accuracy gates (``vigil models quantize``): "<imgsz>@<machine>" -> record
    precision: dict[str, Any] = field(default_factory=dict)
    # HMAC of (name, version, sha256) by whoever promoted it (detectors.retrain.signing)
    signature: str = ""

    @classmethod
    def from_json(cls, text: str | bytes) -> ModelVersion:
        """An entry read from Redis: :class:`ModelRefused` unless its identity fields are sound."""
        try:
            data = json.loads(text)
        except ValueError:
            raise ModelRefused("bad_entry", "model registry entry is not JSON") from None
        if not isinstance(data, dict):
            raise ModelRefused("bad_entry", "model registry entry is not a JSON object")
        known = {f for f in cls.__dataclass_fields__}
        try:
            mv = cls(**{k: v for k, v in data.items() if k in known})
        except TypeError as e:
            raise ModelRefused("bad_entry", f"model registry entry is incomplete ({e})") from None
        check_version(mv.version)
        if not isinstance(mv.sha256, str) or not SHA256.match(mv.sha256):
            raise ModelRefused(
                "bad_entry", f"model {mv.version}: sha256 {shown(mv.sha256)} is not 64 hex digits"
            )
        if not isinstance(mv.number, int):
            raise ModelRefused("bad_entry", f"model {mv.version}: number is not an integer")
        return mv

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"), default=str)

    @property
    def label(self) -> str:
        return f"v{self.number} ({self.version})"


def precision_summary(mv: ModelVersion) -> str:
    """``int8@640 refused, bf16@640 passed``: the gates' verdicts (any machine), newest last."""
    gates = sorted(mv.precision.values(), key=lambda g: g.get("at") or 0)
    verdicts = {
        f"{name}@{g.get('imgsz')}": "passed" if r.get("passed") else "refused"
        for g in gates
        for name, r in (g.get("results") or {}).items()
    }
    return ", ".join(f"{k} {v}" for k, v in verdicts.items())
