"""The audit trail: who changed a camera, a rule, a user or a model, when, and from where.

One capped Redis stream (:meth:`pipeline.common.redis.RedisKeys.audit`), written by the console's
mutations and the CLI's, read by ``vigil audit tail`` and ``GET /api/audit`` (admins). An entry
never holds a secret: URLs are masked and fields named like secrets are left out, whatever the
caller passes, so a careless call site cannot leak one.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Iterator
from typing import Any

import redis

from pipeline.common.redis import RedisConfig, RedisKeys, redis_client
from pipeline.common.urls import mask_url

log = logging.getLogger(__name__)

__all__ = ["AuditLog", "entry", "format_entry", "safe_details"]

# Field names whose values are never stored (a password, a token, a webhook secret...).
_SECRET_KEY = re.compile(r"pass(word)?|secret|token|authorization|api_?key|credential", re.I)
_FIELDS = ("at", "who", "via", "address", "action", "target", "details")


def safe_details(value: Any) -> Any:
    """``value`` made fit for the trail: URLs masked (``mask_url``), secret-named keys dropped."""
    if isinstance(value, str):
        return mask_url(value) if "://" in value else value
    if isinstance(value, dict):
        return {str(k): safe_details(v) for k, v in value.items() if not _SECRET_KEY.search(str(k))}
    if isinstance(value, list | tuple):
        return [safe_details(v) for v in value]
    if value is None or isinstance(value, bool | int | float):
        return value
    return safe_details(str(value))


class AuditLog:
    """Appends to and reads the audit stream (``XADD ... MAXLEN ~ redis.audit_maxlen``)."""

    def __init__(self, cfg: RedisConfig, client: redis.Redis | None = None) -> None:
        self.key = RedisKeys(cfg.key_prefix).audit()
        self.maxlen = cfg.audit_maxlen
        self.client = client if client is not None else redis_client(cfg)

    def record(
        self,
        *,
        who: str,
        via: str,
        address: str,
        action: str,
        target: str,
        details: dict[str, Any] | None = None,
    ) -> str:
        """Append one entry; its stream id. Raises ``redis.RedisError`` when Redis is away (the
        caller says so: the change itself has been made)."""
        fields = {
            "at": repr(time.time()),
            "who": who,
            "via": via,
            "address": address,
            "action": action,
            "target": safe_details(target),
            "details": json.dumps(safe_details(details or {}), sort_keys=True),
        }
        entry_id = self.client.xadd(self.key, fields, maxlen=self.maxlen, approximate=True)
        log.debug("audit: %s by %s via %s from %s: %s", action, who, via, address, target)
        return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)

    def tail(self, n: int = 20) -> list[dict[str, Any]]:
        """The newest ``n`` entries, oldest first."""
        rows = self.client.xrevrange(self.key, count=max(1, n))
        return [entry(i, f) for i, f in reversed(rows)]

    def follow(
        self, after: str = "$", block_ms: int = 1000, stop: Any = None
    ) -> Iterator[dict[str, Any]]:
        """Entries appended after ``after`` as they come (until ``stop.is_set()``, if given)."""
        last = after
        while stop is None or not stop.is_set():
            got = self.client.xread({self.key: last}, block=block_ms, count=100)
            for _key, rows in got or []:
                for i, f in rows:
                    last = i.decode() if isinstance(i, bytes) else i
                    yield entry(i, f)


def entry(entry_id: bytes | str, fields: dict[bytes, bytes]) -> dict[str, Any]:
    """A stream entry as a dict: ``id``, ``at`` (s since 1970), who, via, address, action,
    target, details (a mapping)."""
    raw = {k.decode(): v.decode(errors="replace") for k, v in fields.items()}
    out: dict[str, Any] = {
        "id": entry_id.decode() if isinstance(entry_id, bytes) else entry_id,
        **{k: raw.get(k, "") for k in _FIELDS},
    }
    try:
        out["at"] = float(out["at"])
    except ValueError:
        out["at"] = None
    try:
        out["details"] = json.loads(out["details"] or "{}")
    except ValueError:
        out["details"] = {}
    return out


def format_entry(e: dict[str, Any]) -> str:
    """One line for a terminal: time (UTC), who, via, address, action, target, details."""
    at = (
        time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(e["at"])) + "Z"
        if isinstance(e.get("at"), float)
        else "?"
    )
    details = json.dumps(e.get("details") or {}, sort_keys=True, separators=(",", ":"))
    return (
        f"{at}  {e['who']:<16} {e['via']:<14} {e['address']:<15} {e['action']:<14} "
        f"{e['target']}" + (f"  {details}" if details != "{}" else "")
    )
