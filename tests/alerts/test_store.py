"""The Redis data model of alerts (alerts/store.py), against real Redis: the shared test Redis
(DB 15, a unique key prefix per test) and, for AUTH and TLS, private redis-server processes on
free ports. Snapshot drawing, which needs no Redis, is in test_snapshots.py."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import redis

from alerts.store import AlertStore, AlertWrite
from pipeline.common.redis import RedisConfig
from tests.support.alert_events import alert_event as _event
from tests.support.alert_events import plain_jpeg as _jpeg
from tests.support.config import REDIS_URL
from tests.support.net import free_port

pytestmark = pytest.mark.integration


def _cfg(url: str = REDIS_URL, **kw) -> RedisConfig:
    return RedisConfig(url=url, key_prefix=f"ts{uuid.uuid4().hex[:8]}:", **kw)


def _cleanup(store: AlertStore) -> None:
    keys = list(store.client.scan_iter(match=f"{store.prefix}*", count=1000))
    if keys:
        store.client.unlink(*keys)
    store.client.close()


@pytest.fixture
def store():
    s = AlertStore(_cfg(), alert_ttl_s=3600)
    try:
        s.client.ping()
    except redis.RedisError as e:
        pytest.fail(f"Redis is not reachable at {REDIS_URL}: run `make infra-up` ({e})")
    yield s
    _cleanup(s)


def test_write_is_idempotent_per_id_and_status(store: AlertStore):
    started, ended = _event("started"), _event("ended")
    snap = _jpeg()
    assert store.write_alert(AlertWrite(started, time.time(), snap)) == (True, False)
    # A replay (crash before the commit) changes nothing.
    assert store.write_alert(AlertWrite(started, time.time(), snap)) == (False, False)
    assert store.stream_len() == 1 and store.stream_len("cam-a") == 1
    assert store.write_alert(AlertWrite(ended, time.time())) == (True, False)
    assert store.write_alert(AlertWrite(started, time.time(), snap)) == (False, False)
    assert store.write_alert(AlertWrite(ended, time.time())) == (False, False)
    assert store.stream_len() == 2 and store.stream_len("cam-a") == 2
    assert store.stream_len("other") == 0

    alert = store.get_alert(started["id"])
    assert alert is not None
    # The hash holds the latest status; a replayed "started" did not overwrite the "ended".
    assert alert["status"] == "ended" and alert["ended_at"] == 1002.0
    assert alert["box"] == [0.1, 0.2, 0.3, 0.9] and alert["track_id"] == 4
    assert alert["details"] == {"reason": "cleared"}
    assert alert["snapshot"] is True and store.get_snapshot(started["id"]) == snap
    assert 0 < store.client.ttl(store.snapshot_key(started["id"])) <= store.cfg.snapshot_ttl_s
    assert 0 < store.client.ttl(store.alert_key(started["id"])) <= 3600
    assert alert["written_started"] > 0 and alert["written_ended"] >= alert["written_started"]

    recent = store.recent()
    assert [(a["id"], a["status"]) for a in recent] == [
        (started["id"], "ended"),
        (started["id"], "started"),
    ]
    assert recent[1] == started  # the stream entry is the alert.v1 message itself
    assert store.recent("cam-a", count=1) == [ended]


def test_published_mark_and_latency(store: AlertStore):
    msg = _event("started", aid="a" * 20)
    capture_ts = time.time() - 0.5
    before = time.time()
    assert store.write_alert(AlertWrite(msg, capture_ts)) == (True, False)
    after = time.time()
    alert = store.get_alert(msg["id"])
    # Redis' clock at the write (the same host clock) minus the capture time: exactly that, and
    # between the moments before and after the write, however long the write took
    written = alert["written_started"]
    assert before - 0.001 <= written <= after + 0.001, (before, written, after)
    assert alert["latency_ms"] == pytest.approx((written - capture_ts) * 1000, abs=0.1)
    assert alert["latency_ms"] >= 499  # captured half a second before the write
    assert alert["snapshot"] is False  # no frame, no snapshot, but the alert is stored
    store.mark_published([(msg["id"], "started")])
    assert store.write_alert(AlertWrite(msg, capture_ts)) == (False, True)
    assert store.get_alert("f" * 20) is None
    assert store.get_snapshot("f" * 20) is None


def test_batch_write_keeps_order_and_frames_lookup(store: AlertStore):
    msgs = [_event("started", aid=f"{i:020x}", camera=f"cam-{i % 2}") for i in range(10)]
    store.client.set(store.frame_key("cam-0", 123, 7), b"jpeg", ex=60)
    sources = store.snapshot_sources([(m["id"], m["camera_id"], 123, 7) for m in msgs[:2]])
    assert sources == [(b"jpeg", False), (None, False)]
    res = store.write_alerts([AlertWrite(m, time.time()) for m in msgs])
    assert res == [(True, False)] * 10
    assert store.snapshot_sources([(msgs[0]["id"], "cam-0", 123, 7)]) == [(b"jpeg", True)]
    assert [a["id"] for a in reversed(store.recent(count=100))] == [m["id"] for m in msgs]
    assert store.stream_len("cam-0") == 5 and store.stream_len("cam-1") == 5


def test_streams_are_capped():
    s = AlertStore(_cfg(stream_maxlen=100, camera_stream_maxlen=100))
    try:
        for start in range(0, 1000, 100):
            s.write_alerts(
                [
                    AlertWrite(_event(aid=f"{i:020x}"), time.time())
                    for i in range(start, start + 100)
                ]
            )
        # Trimming is approximate (whole stream nodes, `MAXLEN ~`): about the cap, never all.
        assert 100 <= s.stream_len() <= 300
        assert 100 <= s.stream_len("cam-a") <= 300
    finally:
        _cleanup(s)


def test_checkpoints(store: AlertStore):
    assert store.get_checkpoint("g", "t.detections", 0) is None
    engine = {"version": 1, "cameras": {"cam-a": {"epoch": 1, "seq": 5}}}
    store.put_checkpoints("g", {("t.detections", 0): (42, engine), ("t.detections", 1): (7, {})})
    cp0, cp1, cp2 = store.get_checkpoints(
        "g", [("t.detections", 0), ("t.detections", 1), ("t.detections", 2)]
    )
    assert cp0["offset"] == 42 and cp0["engine"] == engine
    assert cp1["offset"] == 7 and cp2 is None
    assert store.get_checkpoint("other-group", "t.detections", 0) is None
    store.client.set(store.checkpoint_key("g", "t.detections", 0), b"{not json")
    assert store.get_checkpoint("g", "t.detections", 0) is None  # ignored, not fatal


def test_checkpoint_from_engine_json_is_the_same_bytes(store: AlertStore):
    """The service passes RuleEngine.snapshot_json() (encoded once); what lands in Redis is what
    the dict form stores, and reads back as the engine's snapshot()."""
    from alerts.engine import RuleEngine
    from pipeline.bench.rule_engine import make_messages, make_rules

    engine = RuleEngine({"rules": make_rules(10)})
    for m in make_messages(2000, 5):
        engine.process(m)
    text = engine.snapshot_json()
    assert json.loads(text) == engine.snapshot()
    store.put_checkpoints("g", {("t.detections", 0): (42, engine.snapshot())})
    as_dict = store.client.get(store.checkpoint_key("g", "t.detections", 0))
    store.put_checkpoints("g", {("t.detections", 0): (42, text)})
    assert store.client.get(store.checkpoint_key("g", "t.detections", 0)) == as_dict
    cp = store.get_checkpoint("g", "t.detections", 0)
    assert cp is not None and cp["offset"] == 42 and cp["engine"] == engine.snapshot()


def test_write_with_payload_is_the_same_as_without(store: AlertStore):
    """AlertWrite.payload (the service's pre-encoded message) stores what encoding here does."""
    from pipeline.common.jsoncodec import dumps

    msg = _event(aid="fedcba9876543210fedc")
    msg["details"] = {"frames": 3, "note": "caf\u00e9 \u2192 \n"}
    assert store.write_alert(AlertWrite(msg, 1000.0)) == (True, False)
    other = dict(msg, id="fedcba9876543210fedd")
    assert store.write_alert(AlertWrite(other, 1000.0, None, dumps(other))) == (True, False)
    a, b = store.get_alert(msg["id"]), store.get_alert(other["id"])
    for k in ("written_started", "latency_ms", "id"):
        a.pop(k), b.pop(k)
    assert a == b
    entries = store.client.xrange(store.stream_key(), "-", "+")
    assert [json.loads(f[b"alert"]) for _, f in entries] == [msg, other]
    raw = [f[b"alert"] for _, f in entries]
    assert raw[1] == json.dumps(other, separators=(",", ":"), ensure_ascii=False).encode()
    assert raw[0] == json.dumps(msg, separators=(",", ":"), ensure_ascii=False).encode()


# -- AUTH and TLS, on private servers ---------------------------------------------------------------


class RedisServer:
    def __init__(self, tmp: Path, *args: str) -> None:
        if shutil.which("redis-server") is None:
            pytest.fail("redis-server not installed (deploy/local/setup.sh)")
        self.port = free_port()
        self.tmp = tmp
        self.args = args

    def start(self, port_args: list[str] | None = None) -> RedisServer:
        cmd = ["redis-server", "--bind", "127.0.0.1", "--dir", str(self.tmp), "--save", ""]
        cmd += port_args if port_args is not None else ["--port", str(self.port)]
        self.proc = subprocess.Popen(
            [*cmd, *self.args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        return self

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


def _wait_ping(client: redis.Redis, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            client.ping()
            return
        except redis.RedisError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def test_auth_and_key_prefix(tmp_path: Path):
    server = RedisServer(tmp_path, "--requirepass", "s3cr3t-pw").start()
    try:
        url = f"redis://:s3cr3t-pw@127.0.0.1:{server.port}/0"
        s = AlertStore(RedisConfig(url=url, key_prefix="site1:"))
        _wait_ping(s.client)
        assert s.write_alert(AlertWrite(_event(), time.time())) == (True, False)
        keys = sorted(k.decode() for k in s.client.keys("*"))
        assert keys == ["site1:alert:0123456789abcdef0123", "site1:alerts", "site1:alerts:cam-a"]
        bad = AlertStore(RedisConfig(url=f"redis://:wrong@127.0.0.1:{server.port}/0"))
        with pytest.raises(redis.AuthenticationError) as err:
            bad.get_alert("x")
        assert "wrong" not in str(err.value) and "s3cr3t" not in str(err.value)
        assert "s3cr3t" not in repr(RedisConfig(url=url))  # SecretStr: never printed
    finally:
        server.stop()


def test_tls_url(tmp_path: Path):
    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]
        + ["-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1"]
        + ["-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True,
        capture_output=True,
    )
    server = RedisServer(tmp_path, "--requirepass", "tls-pw")
    server.start(
        ["--port", "0", "--tls-port", str(server.port), "--tls-cert-file", str(cert)]
        + ["--tls-key-file", str(key), "--tls-ca-cert-file", str(cert), "--tls-auth-clients", "no"]
    )
    try:
        url = (
            f"rediss://:tls-pw@127.0.0.1:{server.port}/0?ssl_cert_reqs=required&ssl_ca_certs={cert}"
        )
        s = AlertStore(RedisConfig(url=url, key_prefix="tls:"))
        _wait_ping(s.client)
        assert s.write_alert(AlertWrite(_event(), time.time(), _jpeg())) == (True, False)
        assert s.get_alert(_event()["id"])["snapshot"] is True
        # A plain-text client cannot talk to the TLS port.
        plain = AlertStore(RedisConfig(url=f"redis://:tls-pw@127.0.0.1:{server.port}/0"))
        plain.client.connection_pool.connection_kwargs["socket_timeout"] = 1.0
        with pytest.raises(redis.RedisError):
            plain.get_alert("x")
    finally:
        server.stop()


def test_password_for_a_redis_without_auth_is_warned_once(caplog):
    """Issue 12, defect 9: redis-py connects without a word when the server asks for no
    password; the operator believes the data is protected. One warning, password not in it."""
    from pipeline.common import redis as common_redis  # noqa: PLC0415

    url = REDIS_URL.replace("redis://", "redis://:n0t-used-s3cret@")
    common_redis._AUTH_CHECKED.clear()
    with caplog.at_level(logging.WARNING, logger="pipeline.common.redis"):
        for _ in range(3):
            client = common_redis.redis_client(RedisConfig(url=url))
            assert client.ping()
            client.close()
    warnings = [r.getMessage() for r in caplog.records if r.name == "pipeline.common.redis"]
    assert len(warnings) == 1 and "has no password set" in warnings[0]
    assert "n0t-used-s3cret" not in warnings[0]
