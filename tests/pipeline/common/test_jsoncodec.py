"""pipeline.common.jsoncodec.loads must be json.loads exactly: same value (and types) for what it accepts,
same exception type and message for what it rejects (the dead-letter reason)."""

from __future__ import annotations

import json
import math
import random
import struct

import pytest

from pipeline.bench.rule_engine import make_messages
from pipeline.common.jsoncodec import dumps, loads


def _outcome(fn, raw):
    try:
        return ("ok", fn(raw))
    except RecursionError:
        return ("err", "RecursionError", "")
    except ValueError as e:
        return ("err", type(e).__name__, str(e))


def _same(a, b) -> bool:
    """Equal values of equal types, recursively (1 != 1.0 here; NaN equals NaN)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float):
        if math.isnan(a):
            return math.isnan(b)
        return a == b and math.copysign(1, a) == math.copysign(1, b)
    return a == b


def check(raw: bytes) -> None:
    want, got = _outcome(json.loads, raw), _outcome(loads, raw)
    if want[0] == "ok":
        assert got[0] == "ok" and _same(want[1], got[1]), (raw[:200], want, got)
    else:
        assert got == want, raw[:200]


EDGE_CASES = [
    b'{"a":1,"b":2,"a":3}',
    b"-0",
    b"-0.0",
    b"1E400",
    b"-1e400",
    b"1e-400",
    b"4.9406564584124654e-324",
    b"2.2250738585072011e-308",
    b"1.7976931348623157e308",
    b"1.7976931348623159e308",
    b"123456789012345678",
    b"-123456789012345678",
    b"999999999999999999",
    b"9223372036854775807",
    b"9223372036854775808",
    b"-9223372036854775808",
    b"-9223372036854775809",
    b"9999999999999999999",
    b"18446744073709551615",
    b"18446744073709551616",
    b'{"seq": 99999999999999999999999, "epoch": 1}',
    b"[1, -99999999999999999999999]",
    b"0." + b"1" * 40,
    b"NaN",
    b"[Infinity, -Infinity]",
    b'"\\ud800"',
    b'"\\ud83d\\ude00"',
    b'"\xed\xa0\x80"',
    b'"\xc0\xaf"',
    b'"\xff"',
    b"\xef\xbb\xbf{}",
    '{"a": 1}'.encode("utf-16"),
    '{"a": 1}'.encode("utf-32-le"),
    b"",
    b" ",
    b"\x00not json{",
    b"[1,]",
    b"00",
    b"1.",
    b".5",
    b"+1",
    b'"\\x"',
    b"[1]\x00",
    b'"\x1f"',
    b'"\x7f"',
    b'"\xe2\x80\xa8"',
    b'"a\\u0000b"',
    b"\t[1]\n",
    b"true ",
    b"[" * 1100 + b"]" * 1100,
    b"[" * 5000 + b"]" * 5000,
    b'{"a": null, "b": true, "c": false, "d": [], "e": {}}',
]


@pytest.mark.parametrize("raw", EDGE_CASES, ids=range(len(EDGE_CASES)))
def test_loads_is_json_loads_on_edge_cases(raw):
    check(raw)


def test_loads_is_json_loads_on_floats():
    rng = random.Random(5)
    for i in range(20_000):
        if i % 3 == 0:
            f = struct.unpack("d", struct.pack("Q", rng.getrandbits(64)))[0]
        elif i % 3 == 1:
            f = rng.random()
        else:
            f = rng.uniform(1.6e9, 1.8e9)
        if not math.isfinite(f):
            continue
        for text in (repr(f), f"{f:.17g}", f"{f:.25e}", f"{f:.6f}"):
            check(f"[{text}]".encode())


def test_loads_is_json_loads_on_detection_messages():
    for m in make_messages(200, 7):
        check(json.dumps(m).encode())
        check(json.dumps(m, separators=(",", ":")).encode())
        bad = dict(m, seq=2**64 + m["seq"])  # an integer orjson would read as a float
        check(json.dumps(bad).encode())


def test_loads_accepts_str_like_json_loads():
    check('{"a": [1, 2.5, "x"]}')  # type: ignore[arg-type]


def test_dumps_is_compact_json():
    value = {"a": [1, 2.5, None, True], "é": "ü\n", "n": float("nan"), "k": {1: 2}}
    assert dumps(value) == json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
