"""The alert stage's config error: every problem names its rule id and key."""

from __future__ import annotations

from pipeline.common.config import ConfigError


class RulesError(ConfigError):
    """Invalid alerts config. ``errors`` holds ``(rule_id or None, key, message)`` triples; with
    ``source`` (the config file) the message starts with ``invalid config <source>:``."""

    def __init__(self, errors: list[tuple[str | None, str, str]], source: str | None = None):
        self.errors = errors
        self.source = source
        lines = [_format(r, k, m) for r, k, m in errors]
        if source is not None:
            lines = [f"invalid config {source}:", *(f"  {line}" for line in lines)]
        super().__init__("\n".join(lines))


def _format(rule_id: str | None, key: str, msg: str) -> str:
    where = f"rule {rule_id!r}: " if rule_id is not None else "alerts: "
    return f"{where}{key}: {msg}" if key else f"{where}{msg}"
