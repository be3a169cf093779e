"""Webhook signatures expire: the receiver documented in docs/notify.md accepts what the sink
sends now and refuses the same request replayed more than 5 minutes later."""

from __future__ import annotations

import http.client
import re
import threading
from http.server import ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from alerts.notify.sinks import webhook as webhook_mod
from alerts.notify.sinks.base import Delivery, SinkContext, idempotency_key, synthetic_alert
from alerts.notify.sinks.webhook import WebhookSink, WebhookSinkConfig

SECRET = "replay-test-secret-0123456789"
DOC = Path(__file__).resolve().parents[2] / "docs" / "notify.md"


def documented_receiver() -> dict[str, Any]:
    """The receiver of docs/notify.md, run as the docs show it (not as ``__main__``)."""
    text = DOC.read_text()
    section = text[text.index("### A receiver that checks the signature") :]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    ns: dict[str, Any] = {"__name__": "receiver"}
    exec(compile(code, "docs/notify.md receiver", "exec"), ns)  # noqa: S102 (our own docs)
    return ns


def sink(url: str) -> WebhookSink:
    cfg = WebhookSinkConfig(id="hook", type="webhook", url=url, secret=SECRET)
    return WebhookSink(cfg, SinkContext())


def test_signature_changes_with_the_timestamp(monkeypatch):
    s = sink("http://127.0.0.1:9/hook")
    a = synthetic_alert()
    d = Delivery(a, b"", idempotency_key(a))
    body = s.body(d)
    monkeypatch.setattr(webhook_mod.time, "time", lambda: 1_700_000_000.0)
    first = s.headers(d, body)
    monkeypatch.setattr(webhook_mod.time, "time", lambda: 1_700_000_060.0)
    later = s.headers(d, body)
    assert first["X-Vigil-Timestamp"] == "1700000000" and later["X-Vigil-Timestamp"] == "1700000060"
    assert first["X-Vigil-Signature"].startswith("v1=")
    assert first["X-Vigil-Signature"] != later["X-Vigil-Signature"]

    verify = documented_receiver()["verify"]
    secret = SECRET.encode()
    assert verify(secret, first, body, now=1_700_000_010)
    # the old signature with a new timestamp, or with another event's key: refused
    assert not verify(secret, {**first, "X-Vigil-Timestamp": "1700000060"}, body, 1_700_000_060)
    assert not verify(secret, {**first, "Idempotency-Key": "other:started"}, body, 1_700_000_010)


def test_replay_older_than_5_minutes_is_refused_by_the_documented_receiver():
    ns = documented_receiver()
    hook = ns["Hook"]
    hook.secret = SECRET.encode()
    captured: list[tuple[dict[str, str], bytes]] = []
    verify = ns["verify"]

    def capturing(secret, headers, body, now=None):
        captured.append(({k: headers[k] for k in headers}, body))
        return verify(secret, headers, body, now)

    ns["verify"] = capturing
    hook.log_message = lambda *_: None
    server = ThreadingHTTPServer(("127.0.0.1", 0), hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_address[1]
        s = sink(f"http://127.0.0.1:{port}/hook")
        a = synthetic_alert()
        assert s.send(Delivery(a, b"", idempotency_key(a))) == "HTTP 204"
        headers, body = captured[0]

        def replay() -> int:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("POST", "/hook", body=body, headers=headers)
            status = conn.getresponse().status
            conn.close()
            return status

        assert replay() == 204  # within the window: accepted (and dropped as a repeat by key)
        sent = int(headers["X-Vigil-Timestamp"])
        ns["time"] = SimpleNamespace(time=lambda: sent + 301)  # the receiver's clock, 5 min on
        assert replay() == 401
    finally:
        server.shutdown()
        server.server_close()
        s.close()


@pytest.mark.parametrize("ts", ["", "17e8", "-5"])
def test_receiver_refuses_a_missing_or_odd_timestamp(ts):
    verify = documented_receiver()["verify"]
    assert not verify(SECRET.encode(), {"X-Vigil-Timestamp": ts}, b"{}", now=0)
