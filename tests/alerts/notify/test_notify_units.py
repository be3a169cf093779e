"""The pure parts of the notifier: backoff with jitter, Retry-After, the token bucket,
idempotency keys, signatures, Slack messages, Home Assistant ids."""

from __future__ import annotations

import hashlib
import hmac
import time
from email.utils import formatdate

import pytest

from alerts.notify import delivery
from alerts.notify.delivery import TokenBucket, backoff
from alerts.notify.service import check_alert, known_pairs
from alerts.notify.sinks.base import idempotency_key, snapshot_url, synthetic_alert
from alerts.notify.sinks.mqtt import object_id
from alerts.notify.sinks.webhook import parse_retry_after, sign, slack_message
from alerts.rules import parse_rule
from tests.support.fake_clock import ClockedEvent, FakeClock


def test_backoff_doubles_with_jitter_and_honours_retry_after():
    for attempt, cap in [(1, 0.5), (2, 1.0), (3, 2.0), (10, 30.0)]:
        waits = [backoff(attempt, 0.5, 30.0) for _ in range(200)]
        assert all(cap / 2 <= w <= cap for w in waits)
        assert max(waits) - min(waits) > cap / 10  # jittered, not a fixed value
    assert backoff(1, 0.5, 30.0, retry_after=7.0) == 7.0
    assert 0.25 <= backoff(1, 0.5, 30.0, retry_after=0.0) <= 0.5


def test_parse_retry_after():
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    now = time.time()
    assert 58 <= parse_retry_after(formatdate(now + 60, usegmt=True), now=now) <= 60
    assert parse_retry_after(formatdate(now - 60, usegmt=True), now=now) == 0.0


def test_token_bucket_paces_after_the_burst(monkeypatch):
    # the bucket reads the module's clock and waits on the stop event: both fake, so the time a
    # take costs is what the rate says, whatever the machine's speed
    clock = FakeClock()
    monkeypatch.setattr(delivery, "time", clock)
    stop = ClockedEvent(clock)
    bucket = TokenBucket(per_s=20.0, burst=3)

    def take() -> float:
        """Seconds the take waited for its token."""
        t = clock.monotonic()
        assert bucket.take(stop)
        return clock.monotonic() - t

    assert [take() for _ in range(3)] == [0.0] * 3  # the burst is free
    # then one token per 1/20 s
    assert [take() for _ in range(4)] == pytest.approx([0.05] * 4, abs=1e-5)
    clock.advance(10.0)  # saved up: at most the burst
    assert [take() for _ in range(4)] == pytest.approx([0.0, 0.0, 0.0, 0.05], abs=1e-5)
    stop.set()
    slow = TokenBucket(per_s=0.01, burst=1)
    assert slow.take(stop) and not slow.take(stop)  # a stop ends the wait


def test_idempotency_key_signature_and_snapshot_url():
    a = synthetic_alert()
    assert idempotency_key(a) == f"{a['id']}:started"
    reviewed = {**a, "status": "reviewed", "review": {"at": 12.5}}
    assert idempotency_key(reviewed) == f"{a['id']}:reviewed:12.5"
    body = b'{"id":"x"}'
    signed = b"1700000000\n" + f"{a['id']}:started\n".encode() + body
    assert (
        sign(b"k", 1700000000, f"{a['id']}:started", body)
        == "v1=" + hmac.new(b"k", signed, hashlib.sha256).hexdigest()
    )
    assert (
        snapshot_url("https://c.example/", "ab12")
        == "https://c.example/api/alerts/ab12/snapshot.jpg"
    )


def test_slack_message_and_ha_ids():
    msg = slack_message({**synthetic_alert(), "severity": "critical"}, "https://c/x.jpg")
    assert msg["text"].startswith(":rotating_light: *critical* `notify-test` started on camera")
    assert "<https://c/x.jpg|snapshot>" in str(msg["blocks"])
    assert object_id("cam.1-a_b") == "cam_1-a_b"


def test_check_alert_and_known_pairs():
    a = synthetic_alert()
    assert check_alert(a) is a
    for bad in ([], {**a, "status": "opened"}, {**a, "id": 5}, {**a, "camera_id": "a/b"}):
        try:
            check_alert(bad)
        except ValueError:
            continue
        raise AssertionError(f"accepted {bad!r}")
    rules = [
        parse_rule({"id": "r1", "type": "crowding", "cameras": ["a"], "min_count": 3}, 0),
        parse_rule({"id": "r2", "type": "crowding", "min_count": 3}, 1),
        parse_rule({"id": "r3", "type": "crowding", "min_count": 3, "enabled": False}, 2),
    ]
    assert known_pairs(["a", "b"], rules) == (("a", "r1"), ("a", "r2"), ("b", "r2"))
