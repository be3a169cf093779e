"""The strict base of every config section, ``${VAR}`` expansion and the one error formatter.

Each stage defines its own sections on :class:`StrictModel` (unknown keys are errors, defaults are
validated too); ``pipeline.config`` composes them into the root config.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from pipeline.common.assets import assets_dir
from pipeline.common.errors import ConfigError

__all__ = [
    "ConfigError",
    "StrictModel",
    "deep_merge",
    "expand_env",
    "expand_env_values",
    "format_validation_error",
    "validation_messages",
]

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")

UNKNOWN_KEY = "unknown key (check the spelling; see examples/demo.yaml)"


class StrictModel(BaseModel):
    """Unknown keys are errors, so a typo never silently falls back to a default."""

    model_config = ConfigDict(extra="forbid", validate_default=True)


def expand_env(text: str) -> str:
    """Expand ``${VAR}`` and ``${VAR:-default}``; ``VIGIL_ASSETS`` defaults to the shared assets."""

    def repl(m: re.Match[str]) -> str:
        name, default = m.group(1), m.group(2)
        if name in os.environ:
            return os.environ[name]
        if default is not None:
            return default
        if name == "VIGIL_ASSETS":
            return str(assets_dir())
        raise ConfigError(f"environment variable ${{{name}}} is not set and has no default")

    return _VAR.sub(repl, text)


def expand_env_values(data: Any, where: str = "") -> Any:
    """``data`` (parsed YAML) with ``${VAR}`` expanded in its string values, keys left alone.

    Expanded after parsing, never in the file's text: a value that holds ``: `` or `` #`` (a
    password) then stays one verbatim string instead of changing the YAML around it, and no YAML
    error can quote it. An error names the key path (``kafka.password``), never a value. Only
    the config file goes through here: what comes from Kafka, Redis or the registry is data.
    """
    if isinstance(data, str):
        try:
            return expand_env(data)
        except ConfigError as e:
            raise ConfigError(f"{where or '<root>'}: {e}") from None
    if isinstance(data, dict):
        return {
            k: expand_env_values(v, f"{where}.{k}" if where else str(k)) for k, v in data.items()
        }
    if isinstance(data, list):
        return [
            expand_env_values(v, f"{where}.{i}" if where else str(i)) for i, v in enumerate(data)
        ]
    return data


def validation_messages(
    err: ValidationError, unknown_key: str = UNKNOWN_KEY
) -> Iterable[tuple[str, str]]:
    """``(dotted.key.path, message)`` for each error pydantic found, unknown keys explained."""
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "<root>"
        msg = unknown_key if e["type"] == "extra_forbidden" else e["msg"]
        yield loc, msg


def format_validation_error(err: ValidationError, source: str, one_line: bool = False) -> str:
    """``invalid config <source>:`` then one ``key: message`` per error (or ``; ``-joined)."""
    parts = [f"{loc}: {msg}" for loc, msg in validation_messages(err)]
    if one_line:
        return f"{source}: " + "; ".join(parts)
    return "\n".join([f"invalid config {source}:", *(f"  {p}" for p in parts)])


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``override`` on top of ``base``, mapping by mapping (per-camera overrides of a section)."""
    out = dict(base)
    for k, v in override.items():
        out[k] = (
            deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
        )
    return out
