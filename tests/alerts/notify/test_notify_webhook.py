"""The webhook sink against a real HTTP server on 127.0.0.1 and the real local Kafka/Redis:
signatures, idempotency keys, filters, Retry-After, timeouts, the retry budget and the
dead-letter topic, a slow sink next to a fast one, secrets kept out of logs, DLQ and metrics."""

from __future__ import annotations

import base64
import json
import logging

import pytest
from prometheus_client import REGISTRY, generate_latest

from alerts.notify import delivery
from alerts.notify.delivery import backoff
from alerts.store import AlertStore
from pipeline.cli import build_parser
from tests.support.kafka import TopicReader
from tests.support.notify import (
    SECRET,
    Receiver,
    alert,
    closed_port_url,
    committed,
    config_dict,
    end_offsets,
    make_cfg,
    produce,
    running,
    self_signed_cert,
    signature_ok,
    webhook,
)
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration

# what a thread on a loaded 2-core machine may lose to scheduling, on top of a configured wait
SCHEDULING_MARGIN_S = 2.0


def all_committed(cfg, topic: str | None = None) -> bool:
    ends = end_offsets(cfg, topic)
    got = committed(cfg, topic)
    return all(got.get(p) == off for p, off in ends.items())


def test_signed_json_with_idempotency_key_and_snapshot_url(kafka_bootstrap):
    alerts = []
    for n in range(3):
        alerts += [alert(n), alert(n, "ended")]
    with Receiver() as rx:
        cfg = make_cfg(kafka_bootstrap, [webhook(rx.url)])
        produce(cfg, alerts)
        with running(cfg, snapshot_base_url="https://console.example:8443/"):
            reqs = rx.wait(6, 30)
            assert wait_for(lambda: all_committed(cfg), 15), "offsets not committed"
    assert len(reqs) == 6
    by_key = {r.headers["idempotency-key"]: r for r in reqs}
    for a in alerts:
        req = by_key[f"{a['id']}:{a['status']}"]
        assert signature_ok(req), "X-Vigil-Signature does not match the body"
        assert req.method == "POST" and req.headers["content-type"] == "application/json"
        body = req.json
        assert body.pop("snapshot_url") == (
            f"https://console.example:8443/api/alerts/{a['id']}/snapshot.jpg"
        )
        assert body == a
    # one camera: in order, each started before its ended
    keys = [r.headers["idempotency-key"] for r in reqs]
    assert keys == [f"{a['id']}:{a['status']}" for a in alerts]


def test_clip_and_review_from_their_own_topics_are_delivered_once(kafka_bootstrap):
    """The recorder's clip message, read from the clips topic, reaches the webhook once (a repeat
    of the same (id, clip) is dropped) with the clip's absolute URL from console.public_url; other
    messages carry none. Every message carries the alert's console link (``alert_url``: its
    detail, after login). The clips topic cannot start an alert: a forged ``started`` there is
    skipped (settled, committed, never delivered), and one read before the real ``started`` on
    the alerts topic does not shadow it as a repeat. The console's reviews topic likewise: its
    ``reviewed`` is delivered (to a sink that asks for reviews), a ``started`` forged there is
    skipped."""
    a, clip, review = alert(0, "ended"), alert(0, "clip"), alert(0, "reviewed")
    b, c, d = alert(1), alert(2), alert(3)
    forged_b, forged_c, forged_d = ({**x, "label": "forged"} for x in (b, c, d))
    statuses = ["started", "ended", "clip", "reviewed"]
    with Receiver() as rx:
        cfg = make_cfg(kafka_bootstrap, [webhook(rx.url, statuses=statuses)])
        clips, reviews = cfg.kafka.topics.clips, cfg.kafka.topics.reviews
        produce(cfg, [forged_b, clip, forged_c, clip], topic=clips)
        produce(cfg, [forged_d, review], topic=reviews)
        produce(cfg, [a])
        with running(cfg, public_url="https://vigil.example") as service:
            assert wait_for(lambda: service.stats["refused"] >= 3, 30), service.stats
            produce(cfg, [c])  # the real started after its forged copy was read
            rx.wait(4, 30)
            assert wait_for(
                lambda: all(all_committed(cfg, t) for t in (None, clips, reviews)), 15
            ), "offsets not committed"
            reqs = rx.snapshot()  # every record read: the repeat and the forged ones not sent
    by_key = {r.headers["idempotency-key"]: r for r in reqs}
    assert len(reqs) == 4 and set(by_key) == {
        f"{a['id']}:ended",
        f"{a['id']}:clip",
        f"{a['id']}:reviewed:{review['review']['at']!r}",
        f"{c['id']}:started",
    }, [r.headers["idempotency-key"] for r in reqs]
    link = f"https://vigil.example/#/alerts/{a['id']}"
    first = by_key[f"{a['id']}:ended"].json
    assert first.pop("alert_url") == link and "clip_url" not in first
    assert first == a
    req = by_key[f"{a['id']}:clip"]
    body = req.json
    assert signature_ok(req)
    assert body.pop("clip_url") == f"https://vigil.example/api/alerts/{a['id']}/clip.mp4"
    assert body.pop("alert_url") == link
    assert body == clip
    real = by_key[f"{c['id']}:started"].json
    real.pop("alert_url")
    assert real == c  # the alert service's, not the forged copy


def test_filters_per_sink(kafka_bootstrap):
    msgs = [
        alert(0, camera="cam-a", rule="intrusion", severity="high"),
        alert(1, camera="cam-b", rule="intrusion", severity="critical"),
        alert(2, camera="cam-a", rule="loiter", severity="low"),
        alert(3, camera="cam-a", rule="loiter", severity="high", status="reviewed"),
        alert(4, camera="cam-a", rule="intrusion", severity="medium", status="ended"),
    ]
    with Receiver() as a, Receiver() as b, Receiver() as c:
        sinks = [
            webhook(a.url, id="a", cameras=["cam-a"], min_severity="medium"),
            webhook(b.url, id="b", rules=["loiter"], statuses=["started", "reviewed"]),
            webhook(c.url, id="c", statuses=["ended"]),
        ]
        cfg = make_cfg(kafka_bootstrap, sinks)
        produce(cfg, msgs)
        with running(cfg):
            assert wait_for(lambda: all_committed(cfg), 30)
        got = {
            name: {r.json["id"] for r in rx.snapshot()}
            for name, rx in zip("abc", (a, b, c), strict=True)
        }
    ids = [m["id"] for m in msgs]
    # a: cam-a, medium or higher, started/ended (reviewed is not in the default statuses)
    assert got["a"] == {ids[0], ids[4]}
    assert got["b"] == {ids[2], ids[3]}
    assert got["c"] == {ids[4]}


def test_503_with_retry_after_is_retried_after_the_wait(kafka_bootstrap, monkeypatch):
    waits = []  # (Retry-After, the wait chosen) before each retry

    def recording(attempt, initial_s, max_s, retry_after=None):
        wait = backoff(attempt, initial_s, max_s, retry_after)
        waits.append((retry_after, wait))
        return wait

    monkeypatch.setattr(delivery, "backoff", recording)
    with Receiver(fail_first=2, fail_status=503, retry_after="1") as rx:
        cfg = make_cfg(kafka_bootstrap, [webhook(rx.url)])
        a = alert(0)
        produce(cfg, [a])
        with running(cfg):
            reqs = rx.wait(3, 30)
            assert wait_for(lambda: all_committed(cfg), 15)
        dlq = TopicReader(cfg, cfg.kafka.topics.notify_dlq)
        dead = dlq.until(lambda r: False, 1.0)
        dlq.close()
    assert len(reqs) == 3, [r.headers.get("idempotency-key") for r in reqs]
    # backoff alone (0.1 s doubling) would retry within 0.2 s: each retry waited the
    # Retry-After, exactly (never shorter; no backoff of this policy is longer than 1 s)
    assert waits == [(1.0, 1.0), (1.0, 1.0)]
    gaps = [b.t - a_.t for a_, b in zip(reqs, reqs[1:], strict=False)]
    assert all(g >= 0.95 for g in gaps), gaps  # and really waited it
    assert {r.headers["idempotency-key"] for r in reqs} == {f"{a['id']}:started"}
    assert len({r.body for r in reqs}) == 1 and all(signature_ok(r) for r in reqs)
    assert dead == []


def test_permanent_error_is_dead_lettered_without_retries(kafka_bootstrap):
    with Receiver(fail_first=100, fail_status=400) as rx:
        cfg = make_cfg(kafka_bootstrap, [webhook(rx.url)])
        a = alert(0)
        produce(cfg, [a])
        with running(cfg):
            dlq = TopicReader(cfg, cfg.kafka.topics.notify_dlq)
            dead = dlq.until(lambda r: len(r) >= 1, 30)
            dlq.close()
            assert wait_for(lambda: all_committed(cfg), 15)
        assert len(rx.snapshot()) == 1
    (d,) = [r["value"] for r in dead]
    assert d["attempts"] == 1 and d["sink"] == "hook"
    assert d["error"].startswith("permanent failure: HTTP 400")


def test_hanging_receiver_times_out(kafka_bootstrap):
    timeout_s, initial_s = 0.5, 0.1
    with Receiver(hang_s=8.0) as rx:
        sink = webhook(
            rx.url,
            timeout_s=timeout_s,
            retry={"attempts": 2, "initial_s": initial_s, "max_s": 0.2, "budget_s": 30},
        )
        cfg = make_cfg(kafka_bootstrap, [sink])
        a = alert(0)
        produce(cfg, [a])
        with running(cfg):
            dlq = TopicReader(cfg, cfg.kafka.topics.notify_dlq)
            dead = dlq.until(lambda r: len(r) >= 1, 30)
            dlq.close()
        reqs = rx.snapshot()
    assert len(reqs) == 2
    # the second attempt came while the server still held the first request (8 s): the sink
    # gave up on its own, it did not wait for the answer ...
    assert reqs[0].done is None or reqs[1].t < reqs[0].done  # None: never answered
    # ... after the first one's timeout_s plus its backoff (at most initial_s), and not much
    # later: the configured wait, with a margin for a loaded machine's scheduling
    gap = reqs[1].t - reqs[0].t
    assert timeout_s * 0.9 <= gap <= timeout_s + initial_s + SCHEDULING_MARGIN_S, gap
    (d,) = [r["value"] for r in dead]
    assert d["attempts"] == 2
    assert "no answer within timeout_s 0.5 s" in d["error"]
    assert d["alert"] == a and d["idempotency_key"] == f"{a['id']}:started"


def test_down_longer_than_budget_dead_letters_without_secrets(kafka_bootstrap, caplog):
    caplog.set_level(logging.DEBUG)
    url = closed_port_url() + "?token=url-secret-0123456789"
    sink = webhook(
        url,
        headers={"Authorization": "Bearer header-secret-0123456789"},
        retry={"attempts": 100, "initial_s": 0.1, "max_s": 0.4, "budget_s": 2.0},
    )
    cfg = make_cfg(kafka_bootstrap, [sink])
    msgs = [alert(n) for n in range(3)]
    produce(cfg, msgs)
    with running(cfg) as service:
        dlq = TopicReader(cfg, cfg.kafka.topics.notify_dlq)
        dead = dlq.until(lambda r: len(r) >= 3, 60)
        dlq.close()
        assert wait_for(lambda: all_committed(cfg), 15), "offsets not committed after the DLQ"
        stats = service.runners[0].stats
    assert len(dead) == 3
    values = [r["value"] for r in dead]
    first = next(v for v in values if v["alert"]["id"] == msgs[0]["id"])
    assert first["sink"] == "hook" and first["sink_type"] == "webhook"
    assert first["attempts"] >= 3, first  # retried for the whole 2 s budget
    assert "ConnectionRefusedError" in first["error"]
    assert first["topic"] == cfg.kafka.topics.alerts and first["offset"] == 0
    assert {v["alert"]["id"] for v in values} == {m["id"] for m in msgs}
    assert stats["dead_letter"] == 3 and stats["delivered"] == 0
    secrets = [SECRET, "url-secret-0123456789", "header-secret-0123456789"]
    raw = b"".join(r["raw"] for r in dead)
    metrics = generate_latest(REGISTRY).decode()
    for s in secrets:
        assert s.encode() not in raw, f"secret in the dead-letter topic: {s}"
        assert s not in caplog.text, f"secret in the logs: {s}"
        assert s not in metrics, f"secret in the metrics: {s}"
    # one line when it went down, one when the budget was spent: not one per attempt
    lost = [
        r for r in caplog.records if "lost:" in r.getMessage() and "webhook sink" in r.getMessage()
    ]
    assert len(lost) == 1, [r.getMessage() for r in lost]
    assert sum("retry budget spent" in r.getMessage() for r in caplog.records) == 1


def test_slow_sink_does_not_hold_the_others_back(kafka_bootstrap):
    n = 40
    msgs = [alert(i, camera=f"cam-{i % 4}") for i in range(n)]
    with Receiver(hang_s=20.0) as slow, Receiver() as fast:
        sinks = [
            webhook(slow.url, id="slow", timeout_s=10.0, concurrency=1, queue_size=5),
            webhook(fast.url, id="fast"),
        ]
        cfg = make_cfg(kafka_bootstrap, sinks, drain_timeout_s=0.5, max_hold_s=1.0)
        produce(cfg, msgs)
        with running(cfg):
            got = fast.wait(n, 30)
            first_slow = slow.wait(1, 10)[0]
            dlq = TopicReader(cfg, cfg.kafka.topics.notify_dlq)
            dead = dlq.until(lambda r: len(r) >= n - 6, 30)
            dlq.close()
    assert len(got) == n
    # every fast delivery landed while the slow sink still hung on its first request
    assert got[-1].t - first_slow.t < 10.0
    full = [r["value"] for r in dead if r["value"]["error"].startswith("queue full")]
    assert len(full) >= n - 6 and all(v["sink"] == "slow" for v in full)


def test_snapshot_base64_and_slack_format(kafka_bootstrap):
    jpeg = b"\xff\xd8\xff\xe0fake-jpeg\xff\xd9"
    with Receiver() as j, Receiver() as s:
        sinks = [
            webhook(j.url, id="json", include_snapshot="base64"),
            {"id": "chat", "type": "webhook", "url": s.url, "format": "slack"},
        ]
        cfg = make_cfg(kafka_bootstrap, sinks)
        a = alert(0, severity="critical")
        store = AlertStore(cfg.redis)
        store.put_snapshot(a["id"], jpeg, ttl_s=600)
        produce(cfg, [a, alert(0, "ended", severity="critical")])
        with running(cfg, snapshot_base_url="http://console.local:8080"):
            jr = j.wait(2, 30)
            sr = s.wait(2, 30)
        store.client.delete(store.snapshot_key(a["id"]))
    started = next(r for r in jr if r.json["status"] == "started")
    assert base64.b64decode(started.json["snapshot_jpeg_base64"]) == jpeg
    assert signature_ok(started)
    ended = next(r for r in jr if r.json["status"] == "ended")
    assert "snapshot_jpeg_base64" not in ended.json
    msg = sr[0].json
    assert "x-vigil-signature" not in sr[0].headers  # no secret configured: not signed
    assert "`intrusion` started on camera `cam-a`" in msg["text"]
    assert any("api/alerts/" in json.dumps(b) for b in msg["blocks"])


def test_malformed_records_and_repeats(kafka_bootstrap):
    with Receiver() as rx:
        cfg = make_cfg(kafka_bootstrap, [webhook(rx.url)])
        a = alert(0)
        produce(cfg, [b"not json", json.dumps({"id": 1}).encode()])
        produce(cfg, [a, a, alert(0, "ended")])  # the alert service is at-least-once
        with running(cfg) as service:
            rx.wait(2, 30)
            dlq = TopicReader(cfg, cfg.kafka.topics.notify_dlq)
            dead = dlq.until(lambda r: len(r) >= 2, 30)
            dlq.close()
            assert wait_for(lambda: all_committed(cfg), 15)
            stats = dict(service.stats)
    assert [r.headers["idempotency-key"] for r in rx.snapshot()] == [
        f"{a['id']}:started",
        f"{a['id']}:ended",
    ]
    assert stats["duplicates"] == 1 and stats["malformed"] == 2
    values = sorted((r["value"] for r in dead), key=lambda v: v["offset"])
    assert values[0]["sink"] is None and values[0]["value"] == "not json"
    assert values[0]["error"].startswith("not an alert event")


def test_rate_limit_spaces_deliveries(kafka_bootstrap):
    with Receiver() as rx:
        cfg = make_cfg(kafka_bootstrap, [webhook(rx.url, rate_limit={"per_s": 5, "burst": 1})])
        produce(cfg, [alert(n) for n in range(6)])
        with running(cfg):
            reqs = rx.wait(6, 30)
    span = reqs[-1].t - reqs[0].t
    assert span >= 0.95, span  # 5 more after the first, one per 0.2 s


def test_vigil_notify_test_command(kafka_bootstrap, tmp_path, capsys):
    import yaml

    with Receiver() as ok, Receiver(fail_first=10, fail_status=503) as bad:
        data = config_dict(kafka_bootstrap, [webhook(ok.url, id="ok"), webhook(bad.url, id="bad")])
        path = tmp_path / "vigil.yaml"
        path.write_text(yaml.safe_dump(data))

        def vigil(*argv: str) -> int:
            args = build_parser().parse_args(list(argv))
            return args.func(args)

        assert vigil("notify", "test", "ok", "-c", str(path)) == 0
        out = capsys.readouterr().out
        assert "webhook sink 'ok': delivered: HTTP 200 OK" in out and '{"ok":true}' in out
        (req,) = ok.snapshot()
        assert signature_ok(req) and req.json["camera_id"] == "vigil-test"

        assert vigil("notify", "test", "bad", "-c", str(path)) == 1
        assert "FAILED: HTTP 503" in capsys.readouterr().out
        assert len(bad.snapshot()) == 1  # one attempt, no retries

        assert vigil("notify", "test", "nope", "-c", str(path)) == 2
        assert "no sink 'nope'" in capsys.readouterr().err


def test_stale_keepalive_connections_are_replaced_without_a_failure(kafka_bootstrap):
    # the server closes every connection after its response without a word: each next request
    # meets a dead keep-alive connection, which is replaced at once, not counted as a failure
    with Receiver(drop_connections=True) as rx:
        cfg = make_cfg(kafka_bootstrap, [webhook(rx.url, concurrency=1)])
        produce(cfg, [alert(n) for n in range(20)])
        with running(cfg) as service:
            assert wait_for(lambda: all_committed(cfg), 30)
            stats = service.runners[0].stats
        reqs = rx.snapshot()
    assert len(reqs) == 20 and len(set(rx.keys())) == 20
    assert stats["delivered"] == 20 and stats["failed_attempts"] == 0


def test_https_with_ca_file_and_basic_auth(kafka_bootstrap, tmp_path):
    cert, key = self_signed_cert(tmp_path)
    with Receiver(tls=(cert, key)) as rx:
        url = rx.url.replace("https://", "https://bob:pa%3Ass@")
        ok = webhook(url, id="ok", ca_file=cert)
        untrusted = webhook(
            rx.url, id="untrusted", retry={"attempts": 1, "initial_s": 0.1, "budget_s": 5}
        )
        cfg = make_cfg(kafka_bootstrap, [ok, untrusted])
        produce(cfg, [alert(0)])
        with running(cfg):
            (req,) = rx.wait(1, 30)
            dlq = TopicReader(cfg, cfg.kafka.topics.notify_dlq)
            dead = dlq.until(lambda r: len(r) >= 1, 30)
            dlq.close()
    assert signature_ok(req)
    assert req.headers["authorization"] == "Basic " + base64.b64encode(b"bob:pa:ss").decode()
    (d,) = [r["value"] for r in dead]
    assert d["sink"] == "untrusted" and "CERTIFICATE_VERIFY_FAILED" in d["error"]
    assert "pa:ss" not in json.dumps(d) and "pa%3Ass" not in json.dumps(d)


def test_backlog_larger_than_the_queues_is_paced_not_dropped(kafka_bootstrap):
    # 300 events waiting, queues of 20: the consumer waits for the sinks instead of overflowing
    n = 300
    msgs = [alert(i, camera=f"cam-{i % 7}") for i in range(n)]
    with Receiver(delay_s=0.002) as a, Receiver() as b:
        sinks = [
            webhook(a.url, id="a", queue_size=20, concurrency=2),
            webhook(b.url, id="b", queue_size=20),
        ]
        cfg = make_cfg(kafka_bootstrap, sinks, max_poll_records=50)
        produce(cfg, msgs)
        with running(cfg) as service:
            assert wait_for(lambda: all_committed(cfg), 60)
            stats = {r.id: dict(r.stats) for r in service.runners}
    for rx in (a, b):
        assert sorted(rx.keys()) == sorted(f"{m['id']}:started" for m in msgs)
    assert stats["a"]["dead_letter"] == 0 and stats["b"]["dead_letter"] == 0, stats
