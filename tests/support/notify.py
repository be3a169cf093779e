"""What the notifier tests share: a real HTTP receiver on 127.0.0.1, an MQTT recorder on the
local mosquitto, valid alert.v1 messages, a config per test, the notifier in a thread."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from kafka import TopicPartition

from alerts.notify.service import NotifyService
from pipeline.common.kafka import ensure_topics, make_consumer, make_producer
from pipeline.config import VigilConfig, parse_config
from tests.support.config import make_config_dict
from tests.support.waiting import wait_for

REPO = Path(__file__).resolve().parents[2]
ALERT_SCHEMA = json.loads((REPO / "alerts" / "schemas" / "alert.v1.json").read_text())
MQTT = os.environ.get("VIGIL_TEST_MQTT", "127.0.0.1:1883")
SECRET = "s3cret-webhook-key-0123456789"


def signature_ok(req) -> bool:
    """``v1``: HMAC-SHA256 of ``<X-Vigil-Timestamp>\n<Idempotency-Key>\n<body>``."""
    signed = f"{req.headers['x-vigil-timestamp']}\n{req.headers['idempotency-key']}\n".encode()
    want = "v1=" + hmac.new(SECRET.encode(), signed + req.body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(req.headers.get("x-vigil-signature", ""), want)


# -- alert messages ------------------------------------------------------------------------------


def alert(
    n: int = 0,
    status: str = "started",
    camera: str = "cam-a",
    rule: str = "intrusion",
    severity: str = "high",
    t0: float | None = None,
) -> dict[str, Any]:
    """A valid ``vigil.alerts/v1`` message (checked against the schema)."""
    t0 = 1_795_752_000.0 if t0 is None else t0
    started = t0 + n
    aid = hashlib.sha1(f"{camera}|{rule}|{n}|{started}".encode()).hexdigest()[:20]
    msg: dict[str, Any] = {
        "schema_version": 1,
        "id": aid,
        "camera_id": camera,
        "rule_id": rule,
        "rule_type": "zone_intrusion",
        "status": status,
        "severity": severity,
        "label": "person",
        "track_id": n + 1,
        "started_at": started,
        "ended_at": started + 2.5 if status != "started" else None,
        "updated_at": started + (2.5 if status != "started" else 0.0),
        "frame_seq": 10 + n,
        "epoch": 1_795_751_000_000,
        "box": [0.1, 0.2, 0.3, 0.8],
        "confidence": 0.9,
        "count": None,
        "zone": [[0.0, 0.0], [0.5, 0.0], [0.5, 1.0], [0.0, 1.0]],
        "details": {"frames": 3} if status != "ended" else {"reason": "cleared"},
    }
    if status == "reviewed":
        msg["review"] = {"verdict": "true_positive", "note": "", "by": "alice", "at": t0 + 99}
    if status == "clip":  # the recorder's follow-up once the alert's range is recorded
        msg["clip"] = {
            "from": started - 5,
            "to": started + 7.5,
            "until": started + 30 * 86400,
            "path": f"/api/alerts/{aid}/clip.mp4",
        }
    jsonschema.validate(msg, ALERT_SCHEMA)
    return msg


def produce(
    cfg: VigilConfig,
    alerts: list[dict[str, Any]] | list[bytes],
    key: str | None = None,
    topic: str | None = None,
):
    """Onto the alerts topic, or ``topic`` (the clips topic: what a recorder writes)."""
    topic = topic or cfg.kafka.topics.alerts
    producer = make_producer(cfg.kafka, "test-alerts", linger_ms=5)
    try:
        for a in alerts:
            if isinstance(a, bytes):
                producer.send(topic, key=key or "cam-a", value=a)
            else:
                producer.send(topic, key=a["camera_id"], value=json.dumps(a).encode())
        producer.flush(timeout=30)
    finally:
        producer.close(timeout=10)


# -- config --------------------------------------------------------------------------------------


def config_dict(kafka: str, sinks: list[dict[str, Any]], **notify: Any) -> dict[str, Any]:
    """Topics, Redis prefix and consumer group of this test only; the notifier reads from the
    start of its (new) alerts topic."""
    data = make_config_dict(kafka)
    tag = data["redis"]["key_prefix"].rstrip(":")
    data["notify"] = {
        "group_id": f"{tag}-notify",
        "auto_offset_reset": "earliest",
        "commit_interval_s": 0.2,
        "drain_timeout_s": 2.0,
        "session_timeout_ms": 6000,
        "sinks": sinks,
        **notify,
    }
    return data


def make_cfg(kafka: str, sinks: list[dict[str, Any]], **notify: Any) -> VigilConfig:
    return cfg_from(config_dict(kafka, sinks, **notify))


def cfg_from(data: dict[str, Any]) -> VigilConfig:
    """The config of ``data``, its topics created."""
    cfg = parse_config(data, "test")
    ensure_topics(cfg.kafka)
    return cfg


def webhook(url: str, **kw: Any) -> dict[str, Any]:
    return {
        "id": "hook",
        "type": "webhook",
        "url": url,
        "secret": SECRET,
        "timeout_s": 2.0,
        "retry": {"attempts": 5, "initial_s": 0.1, "max_s": 1.0, "budget_s": 20.0},
        **kw,
    }


@contextlib.contextmanager
def running(cfg: VigilConfig, **kw: Any) -> Iterator[NotifyService]:
    """The notifier in a thread of this process; stopped (and drained) at the end."""
    service = NotifyService(cfg, **kw)
    stop = threading.Event()
    t = threading.Thread(target=service.run, args=(stop,), daemon=True)
    t.start()
    try:
        yield service
    finally:
        stop.set()
        t.join(60)
        assert not t.is_alive(), "the notifier did not stop within 60 s"


def committed(cfg: VigilConfig, topic: str | None = None) -> dict[int, int | None]:
    """The notifier group's committed offsets on the alerts topic (or ``topic``)."""
    c = make_consumer(
        cfg.kafka, "test-committed", group_id=cfg.notify.group_id, enable_auto_commit=False
    )
    try:
        topic = topic or cfg.kafka.topics.alerts
        parts = wait_for(lambda: c.partitions_for_topic(topic), 15)
        return {p: c.committed(TopicPartition(topic, p)) for p in sorted(parts)}
    finally:
        c.close(autocommit=False)


def end_offsets(cfg: VigilConfig, topic: str | None = None) -> dict[int, int]:
    c = make_consumer(cfg.kafka, "test-end", group_id=None, enable_auto_commit=False)
    try:
        topic = topic or cfg.kafka.topics.alerts
        parts = wait_for(lambda: c.partitions_for_topic(topic), 15)
        ends = c.end_offsets([TopicPartition(topic, p) for p in parts])
        return {tp.partition: off for tp, off in ends.items()}
    finally:
        c.close()


# -- the HTTP receiver ---------------------------------------------------------------------------


@dataclass
class Request:
    t: float  # time.monotonic() at receipt
    wall: float  # time.time() at receipt
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    done: float | None = None  # time.monotonic() once the answer was written
    peer: tuple[str, int] | None = None  # the client's address: one per connection

    @property
    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    """A real HTTP server on 127.0.0.1 (a free port), in threads. Answers 200, or:
    ``fail_first`` requests with ``fail_status`` (+ ``Retry-After: retry_after``), after
    ``delay_s``, or not at all for ``hang_s`` (then 200)."""

    fail_first: int = 0
    fail_status: int = 503
    retry_after: str | None = None
    hang_s: float = 0.0
    delay_s: float = 0.0
    # close each connection after its response, without saying so (a server's idle timeout)
    drop_connections: bool = False
    tls: tuple[str, str] | None = None  # (cert file, key file): serve HTTPS
    requests: list[Request] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._release = threading.Event()
        self.answered = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            wbufsize = 65536  # head and body in one write (no Nagle / delayed-ACK stall)

            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n)
                req = Request(
                    time.monotonic(),
                    time.time(),
                    self.command,
                    self.path,
                    {k.lower(): v for k, v in self.headers.items()},
                    body,
                    peer=self.client_address[:2],
                )
                with receiver._lock:
                    receiver.requests.append(req)
                    index = len(receiver.requests)
                if receiver.hang_s:
                    receiver._release.wait(receiver.hang_s)
                if receiver.delay_s:
                    time.sleep(receiver.delay_s)
                if index <= receiver.fail_first:
                    self.send_response(receiver.fail_status)
                    if receiver.retry_after is not None:
                        self.send_header("Retry-After", receiver.retry_after)
                    payload = b"try later"
                else:
                    self.send_response(200)
                    payload = b'{"ok":true}'
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                with contextlib.suppress(OSError):
                    self.wfile.write(payload)
                with receiver._lock:
                    receiver.answered += 1
                    req.done = time.monotonic()
                if receiver.drop_connections:
                    self.close_connection = True

            do_PUT = do_POST  # noqa: N815

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        if self.tls is not None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(*self.tls)
            self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        # a short poll: shutdown() at the end of a test returns at once, not after 0.5 s
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://127.0.0.1:{self.server.server_address[1]}/hook"

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *_exc: Any) -> None:
        self._release.set()
        self.server.shutdown()
        self.server.server_close()

    def release(self) -> None:
        """End ``hang_s``: held requests are answered now, later ones at once."""
        self._release.set()

    def snapshot(self) -> list[Request]:
        with self._lock:
            return list(self.requests)

    def keys(self) -> list[str]:
        return [r.headers.get("idempotency-key", "") for r in self.snapshot()]

    def wait(self, n: int, timeout: float) -> list[Request]:
        wait_for(lambda: len(self.requests) >= n, timeout, step=0.05)
        return self.snapshot()


def closed_port_url() -> str:
    """A URL nothing listens on (connection refused at once)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/hook"


# -- MQTT ----------------------------------------------------------------------------------------


def mqtt_address() -> tuple[str, int]:
    """The local broker (``services.sh start-mqtt``); the test FAILS when it is not there."""
    host, port = MQTT.rsplit(":", 1)
    with socket.socket() as s:
        s.settimeout(2.0)
        if s.connect_ex((host, int(port))) != 0:
            pytest.fail(
                f"MQTT broker not reachable at {MQTT}: run `bash deploy/local/services.sh "
                "start-mqtt` (or `make infra-up`)"
            )
    return host, int(port)


@dataclass
class Message:
    topic: str
    payload: bytes
    retain: bool
    t: float


class MqttRecorder:
    """A plain paho client subscribed to ``topics``, recording every message."""

    def __init__(self, host: str, port: int, topics: list[str]) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.messages: list[Message] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"test-{os.getpid()}-{id(self)}"
        )

        def on_connect(client, _u, _f, rc, _p):
            client.subscribe([(t, 1) for t in topics])

        def on_subscribe(_c, _u, _mid, _rcs, _p):
            self._subscribed.set()

        def on_message(_c, _u, msg):
            with self._lock:
                self.messages.append(Message(msg.topic, msg.payload, bool(msg.retain), time.time()))

        self.client.on_connect = on_connect
        self.client.on_subscribe = on_subscribe
        self.client.on_message = on_message
        self.client.connect(host, port, keepalive=30)
        self.client.loop_start()
        assert self._subscribed.wait(10), "subscription not acknowledged"

    def get(self, topic: str) -> list[Message]:
        with self._lock:
            return [m for m in self.messages if m.topic == topic]

    def topics(self) -> set[str]:
        with self._lock:
            return {m.topic for m in self.messages}

    def wait(self, pred, timeout: float) -> bool:
        return bool(wait_for(pred, timeout, step=0.05))

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def clear_retained(host: str, port: int, topics: set[str]) -> None:
    """Leave the shared broker as it was: an empty retained message deletes one."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"test-clear-{os.getpid()}")
    c.connect(host, port, keepalive=30)
    c.loop_start()
    try:
        infos = [c.publish(t, b"", qos=1, retain=True) for t in topics]
        for i in infos:
            i.wait_for_publish(5)
    finally:
        c.disconnect()
        c.loop_stop()


def self_signed_cert(tmp_path: Path) -> tuple[str, str]:
    """A certificate for 127.0.0.1 (openssl, Debian's): (cert file, key file)."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return str(cert), str(key)
