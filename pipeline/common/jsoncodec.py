"""JSON on the alert service's hot path.

``loads`` parses with orjson (2-4x faster than the standard library on detection messages) and
hands anything orjson rejects to ``json.loads``. orjson accepts a subset of what ``json.loads``
accepts (no NaN/Infinity, no lone surrogates, no BOM, no UTF-16) and returns the same objects
for it, with two exceptions, both sent to ``json.loads`` by a cheap byte scan (~1 us) before
orjson sees them:

- orjson reads an integer beyond 64 bits as a float; such an integer has at least 19 digits in
  a row, so input with a run of 19 digits goes to ``json.loads``;
- ``json.loads`` fails (``RecursionError``) on nesting about as deep as the recursion limit,
  orjson does not; input with at least half that many ``[`` and ``{`` goes to ``json.loads``.

The result is therefore exactly what ``json.loads`` alone gives: the same value for every message
it accepts and the same exception (hence the same dead-letter reason) for every one it rejects.

``dumps`` is the standard library's, compact: the alert message written to Redis and published
on Kafka. It is encoded once per alert event and the same bytes go to both. orjson is not used
for encoding: it writes NaN and Infinity as ``null`` where ``json.dumps`` writes them as such,
and the encode is a small share of the service's time.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import orjson

_JSONDecodeError = orjson.JSONDecodeError
_orjson_loads = orjson.loads
_json_loads = json.loads
_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
# bytes.translate table: digits stay (as "0"), everything else becomes a space.
_DIGITS = bytes(0x30 if 0x30 <= b <= 0x39 else 0x20 for b in range(256))
# 19 digits: the shortest integers outside orjson's 64-bit range (-9223372036854775809).
_LONG_RUN = b"0" * 19
_recursion_limit = sys.getrecursionlimit


def loads(raw: Any) -> Any:
    """``json.loads(raw)``, faster for ``bytes``."""
    if (
        type(raw) is not bytes
        or _LONG_RUN in raw.translate(_DIGITS)
        or raw.count(b"[") + raw.count(b"{") >= _recursion_limit() // 2
    ):
        return _json_loads(raw)
    try:
        return _orjson_loads(raw)
    except _JSONDecodeError:
        return _json_loads(raw)


def dumps_text(value: Any) -> str:
    """Compact JSON text: ``json.dumps(value, separators=(",", ":"), ensure_ascii=False)``."""
    return _encode(value)


def dumps(value: Any) -> bytes:
    """Compact JSON as UTF-8 bytes: ``json.dumps(value, separators=(",", ":"),
    ensure_ascii=False).encode()`` (what ``pipeline.common.kafka`` publishes for a dict)."""
    return _encode(value).encode()
