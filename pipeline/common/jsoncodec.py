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

``decode_record`` is what every Kafka reader uses on a record's value: anyone can write to a
topic of a single-broker setup (no ACLs), so a value may be built to hurt the reader. It bounds
the size and the nesting depth *before* parsing (a bracket scan in C-speed byte operations, so
``json.loads`` never recurses into 100,000 ``[``), then parses with ``loads``, and turns every
failure a decoder can raise into one exception type, :class:`RecordRejected` (a ``ValueError``),
with a short fixed ``reason`` for metrics. A reader catches that one type and skips the record.
"""

from __future__ import annotations

import json
import re
import sys
from typing import Any

import numpy as np
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


# -- hostile-safe decoding of Kafka record values ---------------------------------------------------

# Every Vigil message is a few levels deep (a detection message: 4); the bound leaves room and
# stays far below the interpreter's recursion limit, which ``json.loads`` would otherwise hit.
MAX_DEPTH = 64
# Far larger than any Vigil message (a detection message with 300 boxes is ~40 KB); the broker's
# own bound (max.message.bytes, 1 MiB by default) applies to the compressed batch, so a value of
# 10 MB of '[' gets through it gzipped: values above this are not parsed.
MAX_RECORD_BYTES = 1024 * 1024

# A JSON string (escapes included), or an unterminated one up to the end of the input: a match
# at every '"', so a scan is linear even for input made of escaped quotes.
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*(?:"|\\?\Z)', re.DOTALL)
_NOT_BRACKET = bytes(b for b in range(256) if b not in b"[]{}")
# '{' and '}' read as '[' and ']': only the depth matters here (the parser rejects a '[}')
_AS_SQUARE = bytes.maketrans(b"{}", b"[]")
_OPEN = ord("[")


class RecordRejected(ValueError):
    """A record value no reader should act on. ``reason`` is one of ``null``, ``too_large``,
    ``too_deep``, ``not_utf8``, ``not_json`` (a bounded set: a metric label)."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


def _nesting_exceeds(raw: bytes, limit: int) -> bool:
    """True when the JSON in ``raw`` nests deeper than ``limit`` (or its brackets do not pair up,
    which no JSON does). Strings are cut out first (they may hold brackets); the depth is then a
    running sum over the brackets (+1 opening, -1 closing), in numpy: ~10 ms a megabyte."""
    s = _STRING.sub(b"", raw).translate(_AS_SQUARE, _NOT_BRACKET)
    if not s:
        return False
    steps = np.frombuffer(s, dtype=np.uint8) == _OPEN
    depth = np.cumsum(steps.astype(np.int32) * 2 - 1, dtype=np.int32)
    return bool(depth.max() > limit or depth.min() < 0 or depth[-1] != 0)


def decode_record(
    raw: Any, *, max_bytes: int = MAX_RECORD_BYTES, max_depth: int = MAX_DEPTH
) -> Any:
    """The JSON value of a Kafka record's ``raw`` value (``bytes``; ``str`` too), or
    :class:`RecordRejected`: no value, larger than ``max_bytes``, nested deeper than
    ``max_depth``, not UTF-8, not JSON. Nothing else escapes, ``RecursionError`` included."""
    if raw is None:
        raise RecordRejected("empty message (null value)", "null")
    if isinstance(raw, (bytearray, memoryview)):
        raw = bytes(raw)
    if isinstance(raw, str):
        data = raw.encode("utf-8", "surrogatepass")
    elif isinstance(raw, bytes):
        data = raw
    else:
        raise RecordRejected(f"not JSON text ({type(raw).__name__})", "not_json")
    if len(data) > max_bytes:
        raise RecordRejected(
            f"message of {len(data)} bytes is larger than the {max_bytes} bytes allowed",
            "too_large",
        )
    if data.count(b"[") + data.count(b"{") > max_depth and _nesting_exceeds(data, max_depth):
        raise RecordRejected("JSON nested too deeply", "too_deep")
    try:
        return loads(raw)
    except UnicodeDecodeError as e:
        raise RecordRejected(f"not UTF-8: {e}", "not_utf8") from None
    except RecursionError:  # not reached after the depth bound; kept so nothing escapes
        raise RecordRejected("JSON nested too deeply", "too_deep") from None
    except (ValueError, TypeError, OverflowError) as e:
        raise RecordRejected(str(e), "not_json") from None
