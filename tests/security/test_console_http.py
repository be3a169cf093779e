"""The console's HTTP hardening (issue 22), against the real local Kafka and Redis and the real app
served by uvicorn: live streams end after logout / removal / demotion and are capped per user,
the console's Redis pool is bounded, Secure cookies behind a TLS proxy, security headers,
no-store snapshots, /metrics and /readyz for anonymous callers, NaN/inf parameters, body bound."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest
import redis

from alerts.engine import RuleEngine
from alerts.store import AlertStore, AlertWrite
from pipeline.common.redis import RedisKeys
from pipeline.config import parse_config
from pipeline.console.server import ConsoleServer
from tests.support.config import make_config_dict
from tests.support.console import PASSWORD, ConsoleStack, console_stack
from tests.support.net import free_port
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration

RECHECK_S = 0.5
# Only keeps a broken build from hanging: when a stream ends is judged by its re-checks (below)
GIVE_UP_S = 20 * RECHECK_S
STREAM_CAP = 3
POOL_MAX = 4
CAMERA = "hall"
ZONE = [[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]]


def _jpeg(color: int = 90) -> bytes:
    img = np.full((120, 160, 3), color, np.uint8)
    return cv2.imencode(".jpg", img)[1].tobytes()


@pytest.fixture(scope="module")
def stack(kafka_bootstrap, tmp_path_factory) -> Iterator[ConsoleStack]:
    """One console behind a 'proxy' at 127.0.0.1, streams re-checked every 0.5 s, 3 streams
    per user, 4 connections per Redis pool; a camera with a live frame for the MJPEG view."""
    with console_stack(
        kafka_bootstrap,
        tmp_path_factory.mktemp("console"),
        roles=["operator"],
        console={
            "trusted_proxies": ["127.0.0.1"],
            "stream_recheck_s": RECHECK_S,
            "max_streams_per_user": STREAM_CAP,
            "redis_max_connections": POOL_MAX,
            "redis_pool_timeout_s": 2,
        },
    ) as s:
        r = s.login("operator").post(
            "/api/cameras", json={"id": CAMERA, "url": "rtsp://127.0.0.1:9/hall"}
        )
        assert r.status_code == 201, r.text
        s.users.client.hset(
            RedisKeys(s.cfg.redis.key_prefix).live(CAMERA), mapping={"jpeg": _jpeg(), "seq": 1}
        )
        yield s


class Reader:
    """Reads a streamed response's body in a thread, so a test can wait for its end."""

    def __init__(self, response: httpx.Response) -> None:
        self.buf = b""
        self.more = threading.Event()
        self.ended = threading.Event()
        threading.Thread(target=self._read, args=(response,), daemon=True).start()

    def _read(self, response: httpx.Response) -> None:
        try:
            for chunk in response.iter_raw():
                self.buf += chunk
                self.more.set()
        except (httpx.HTTPError, RuntimeError):
            pass
        self.ended.set()

    def wait_for(self, expected: bytes, timeout_s: float = 20.0) -> None:
        deadline = time.monotonic() + timeout_s
        while expected not in self.buf:
            assert not self.ended.is_set(), f"stream ended before {expected!r}: {self.buf[:200]!r}"
            assert time.monotonic() < deadline, f"no {expected!r} in {timeout_s} s"
            self.more.wait(0.1)
            self.more.clear()


STREAMS = {
    "sse": ("/api/alerts/events", b"retry: 2000"),
    "mjpeg": (f"/api/cameras/{CAMERA}/live", b"Content-Type: image/jpeg"),
}


# -- live streams --------------------------------------------------------------------------------


class Rechecks:
    """Spies on the re-checks running streams make of their session (the app's
    ``UserStore.still_valid``, asked every ``console.stream_recheck_s``) for one user: each
    one's answer, and whether it began after :attr:`changed` was set."""

    def __init__(self, stack: ConsoleStack, user: str) -> None:
        self.real, self.user = stack.server_users.still_valid, user
        self.changed = threading.Event()
        self.seen: list[tuple[bool, bool]] = []  # (began after the change, answer)

    def __call__(self, who, role=None) -> bool:
        after = self.changed.is_set()
        answer = self.real(who, role)
        if who.user == self.user:
            self.seen.append((after, answer))
        return answer

    def answers(self) -> list[bool]:
        return [answer for _, answer in self.seen]


def spy_rechecks(stack: ConsoleStack, monkeypatch, user: str) -> Rechecks:
    spy = Rechecks(stack, user)
    monkeypatch.setattr(stack.server_users, "still_valid", spy)
    return spy


@pytest.mark.parametrize("kind", ["sse", "mjpeg"])
@pytest.mark.parametrize("change", ["logout", "removal", "demotion"])
def test_stream_ends_at_the_first_recheck_after_the_session_no_longer_allows_it(
    stack, monkeypatch, kind, change
):
    user = stack.new_user("operator")
    rechecks = spy_rechecks(stack, monkeypatch, user)
    c = stack.login(user, timeout=httpx.Timeout(30, read=30))
    path, expected = STREAMS[kind]
    with c.stream("GET", path) as r:
        assert r.status_code == 200
        body = Reader(r)
        body.wait_for(expected)
        assert wait_for(lambda: rechecks.seen, GIVE_UP_S, step=0.05), "the stream never re-checked"
        if change == "logout":
            other = httpx.Client(base_url=stack.base, cookies=c.cookies, timeout=30)
            assert other.post("/api/logout", headers=dict(c.headers)).status_code == 200
        elif change == "removal":
            stack.users.remove(user)
        else:
            stack.users.add(user, PASSWORD, "viewer")  # operator -> viewer
        rechecks.changed.set()
        assert body.ended.wait(GIVE_UP_S), f"{kind} stream still open after {change}"
    # every re-check said yes until one said no, and that one ended the stream: the first re-check
    # begun after the change (or one under way while it was made)
    answers = rechecks.answers()
    assert answers[-1] is False and all(answers[:-1]), rechecks.seen
    assert [after for after, _ in rechecks.seen].count(True) <= 1, rechecks.seen


def test_stream_of_a_still_valid_session_keeps_going(stack, monkeypatch):
    """The re-check ends nothing that is still allowed: after 3 re-checks the stream is open."""
    user = stack.new_user()
    rechecks = spy_rechecks(stack, monkeypatch, user)
    c = stack.login(user)
    with c.stream("GET", STREAMS["sse"][0]) as r:
        body = Reader(r)
        body.wait_for(b"retry: 2000")
        assert wait_for(lambda: len(rechecks.seen) >= 3, GIVE_UP_S, step=0.05), rechecks.seen
        assert rechecks.answers()[:3] == [True] * 3
        assert not body.ended.is_set()
        assert r.status_code == 200
        # and it still delivers: an alert written now arrives on it
        alert_id = _alert_with_snapshot(stack.cfg)
        body.wait_for(alert_id.encode(), GIVE_UP_S)


def test_streams_per_user_are_capped(stack):
    user = stack.new_user()
    c = stack.login(user)
    other = stack.login(stack.new_user())
    opened = []
    try:
        for _ in range(STREAM_CAP):
            r = c.send(c.build_request("GET", STREAMS["sse"][0]), stream=True)
            assert r.status_code == 200
            opened.append(r)
        r = c.get(STREAMS["mjpeg"][0])
        assert r.status_code == 429
        assert "max_streams_per_user" in r.json()["detail"]
        # another user is not affected
        with other.stream("GET", STREAMS["sse"][0]) as r2:
            assert r2.status_code == 200
    finally:
        for r in opened:
            r.close()
    # closing a stream gives its slot back (the server notices within a re-check or so)
    deadline = time.monotonic() + 10
    while True:
        with c.stream("GET", STREAMS["sse"][0]) as r:
            if r.status_code == 200:
                break
        assert time.monotonic() < deadline, "slots not given back after the streams closed"
        time.sleep(0.3)


def _own_redis_ports() -> set[int]:
    """Local ports of this process's TCP connections to port 6379 (Linux /proc: the sockets
    among our file descriptors, looked up in the kernel's TCP tables)."""
    inodes = set()
    for fd in Path("/proc/self/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = set()
    for table in ("/proc/self/net/tcp", "/proc/self/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            f = line.split()
            local, remote, inode = f[1], f[2], f[9]
            if inode in inodes and int(remote.rsplit(":", 1)[1], 16) == 6379:
                ports.add(int(local.rsplit(":", 1)[1], 16))
    return ports


def _console_connections(stack) -> list[dict]:
    """Redis's CLIENT LIST entries whose client socket belongs to this process (the console
    runs in it): the test's own clients are counted before, and subtracted."""
    ours = _own_redis_ports()
    listed = stack.users.client.client_list()
    return [e for e in listed if int(e["addr"].rsplit(":", 1)[1]) in ours]


def test_console_redis_pool_is_bounded_and_its_own(stack):
    before = len(_console_connections(stack))
    clients = [stack.login(stack.new_user()) for _ in range(4)]
    release = threading.Event()
    started = threading.Barrier(len(clients) * STREAM_CAP + 1, timeout=60)

    def hold(c: httpx.Client) -> int:
        with c.stream("GET", STREAMS["sse"][0]) as r:
            started.wait()
            release.wait(30)
            return r.status_code

    with ThreadPoolExecutor(len(clients) * STREAM_CAP) as ex:
        futures = [ex.submit(hold, c) for c in clients for _ in range(STREAM_CAP)]
        try:
            started.wait()
            time.sleep(2 * RECHECK_S + 1)  # every stream has been reading for a while
            during = len(_console_connections(stack))
        finally:
            release.set()
        assert [f.result() for f in futures] == [200] * len(futures)
    # 12 streams, each wanting a connection for its blocking read: at most the two pools' size
    assert during - before <= 2 * POOL_MAX, (before, during)
    pool = stack.server.app.state.console.aredis.connection_pool
    assert type(pool).__name__ == "BlockingConnectionPool"
    assert pool.max_connections == POOL_MAX
    # CLIENT LIST tells the console's connections from the pipeline's
    names = {e["name"] for e in _console_connections(stack)}
    assert any(n.startswith("vigil-console@") for n in names), names


# -- cookies, headers, caching -----------------------------------------------------------------


def test_secure_cookie_only_when_users_reach_the_console_over_https(stack, kafka_bootstrap):
    r = httpx.post(f"{stack.base}/api/login", json={"username": "operator", "password": PASSWORD})
    assert r.status_code == 200 and "secure" not in r.headers["set-cookie"].lower()
    data = make_config_dict(
        kafka_bootstrap,
        console={"port": free_port(), "public_url": "https://vigil.example.org/"},
    )
    data["redis"]["key_prefix"] = stack.cfg.redis.key_prefix
    server = ConsoleServer(parse_config(data, "test")).start()
    try:
        r = httpx.post(
            f"{server.url}api/login", json={"username": "operator", "password": PASSWORD}
        )
        assert r.status_code == 200
        assert "secure" in r.headers["set-cookie"].lower()
        assert r.headers["strict-transport-security"].startswith("max-age=")
    finally:
        server.stop()


def test_security_headers_on_pages_and_api(stack):
    c = httpx.Client(base_url=stack.base, timeout=30)
    for path in ("/", "/api/me", "/healthz", "/static/app.js"):
        r = c.get(path)
        csp = r.headers.get("content-security-policy", "")
        assert "frame-ancestors 'none'" in csp, path
        script_src = next(p for p in csp.split(";") if p.strip().startswith("script-src"))
        assert "'unsafe-inline'" not in script_src and "'unsafe-eval'" not in script_src
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["referrer-policy"] == "same-origin"
        assert "strict-transport-security" not in r.headers  # plain HTTP, no https public_url
    # the page's scripts are all files, so the policy does not break it
    page = c.get("/").text
    assert "<script>" not in page and 'src="/static/app.js"' in page
    assert c.get("/api/me").headers["cache-control"] == "no-store"
    # HTTPS as told by the trusted proxy: HSTS
    r = c.get("/healthz", headers={"X-Forwarded-Proto": "https"})
    assert r.headers["strict-transport-security"].startswith("max-age=")


def _alert_with_snapshot(cfg) -> str:
    engine = RuleEngine({"rules": [{"id": "z", "type": "zone_intrusion", "zone": ZONE}]})
    msg = {
        "schema_version": 1,
        "camera_id": CAMERA,
        "seq": 1,
        "epoch": 1,
        "capture_ts": time.time(),
        "frame": {"width": 160, "height": 120},
        "model": {"name": "t", "version": "1"},
        "detections": [
            {"class_id": 0, "label": "person", "confidence": 0.9, "box": [0.4, 0.3, 0.6, 0.9]}
        ],
    }
    (event,) = engine.process(msg)
    AlertStore(cfg.redis).write_alert(AlertWrite(event.to_dict(), time.time(), snapshot=_jpeg()))
    return event.to_dict()["id"]


def test_snapshot_is_not_cached(stack):
    alert_id = _alert_with_snapshot(stack.cfg)
    c = stack.login(stack.new_user())
    r = c.get(f"/api/alerts/{alert_id}/snapshot.jpg")
    assert r.status_code == 200 and r.content[:2] == b"\xff\xd8"
    assert r.headers["cache-control"] == "no-store"


# -- anonymous callers -----------------------------------------------------------------------------


def test_metrics_anonymous_only_for_a_local_scraper(stack):
    base = stack.base
    far = {"X-Forwarded-For": "203.0.113.9"}  # through the trusted proxy, from elsewhere
    r = httpx.get(f"{base}/metrics", headers=far)
    assert r.status_code == 401 and "vigil_" not in r.text
    assert httpx.get(f"{base}/metrics").status_code == 200  # loopback, direct
    token = stack.login("operator").post("/api/tokens", json={"name": "prom"}).json()["token"]
    r = httpx.get(f"{base}/metrics", headers={**far, "Authorization": f"Bearer {token}"})
    assert r.status_code == 200 and "vigil_console_requests_total" in r.text


def test_api_docs_need_a_login(stack):
    for path in ("/docs", "/openapi.json"):
        assert httpx.get(stack.base + path).status_code == 401, path
    c = stack.login("operator")
    assert c.get("/openapi.json").json()["info"]["title"] == "Vigil Console"
    docs = c.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    csp = docs.headers["content-security-policy"]
    script_src = next(p for p in csp.split(";") if p.strip().startswith("script-src"))
    assert "'unsafe-inline'" not in script_src and "'sha256-" in script_src


def test_anonymous_readyz_and_503_name_no_host(kafka_bootstrap, caplog):
    dead_redis = free_port()
    data = make_config_dict("127.0.0.1:1", console={"port": free_port()})
    data["redis"]["url"] = f"redis://127.0.0.1:{dead_redis}/0"
    data["redis"]["socket_timeout_s"] = 1
    server = ConsoleServer(parse_config(data, "test")).start()
    try:
        with caplog.at_level(logging.INFO):
            c = httpx.Client(base_url=server.url, timeout=30)
            r = c.get("/readyz")
            assert r.status_code == 503 and r.json() == {"status": "unavailable"}
            r = c.post("/api/login", json={"username": "a", "password": PASSWORD})
            assert r.status_code == 503
            assert str(dead_redis) not in r.text and "127.0.0.1" not in r.text
            # no trusted proxy configured: a forwarded "https" is not believed (no HSTS)
            r = c.get("/healthz", headers={"X-Forwarded-Proto": "https"})
            assert "strict-transport-security" not in r.headers
        # the details are in the log, for the operator
        logged = caplog.text
        assert "Kafka at 127.0.0.1:1" in logged and f"127.0.0.1:{dead_redis}" in logged
    finally:
        server.stop()


# -- bad input -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1e300"])
@pytest.mark.parametrize("param", ["since", "until"])
def test_non_finite_list_parameters_are_422(stack, param, value):
    c = stack.login(stack.new_user())
    r = c.get("/api/alerts", params={param: value})
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["loc"][-1] == param


@pytest.mark.parametrize("field", ["since_s", "start", "end"])
@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_preview_parameters_are_422(stack, field, value):
    c = stack.login("operator")
    rule = {"id": "p", "type": "zone_intrusion", "zone": ZONE}
    body = f'{{"rule": {json.dumps(rule)}, "{field}": {value}}}'
    r = c.post("/api/rules/preview", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 422, r.text
    assert field in {e["loc"][-1] for e in r.json()["detail"]}


@pytest.mark.parametrize("value", ["NaN", "Infinity"])
def test_non_finite_rule_values_are_422_and_do_not_break_the_rule_list(stack, value):
    c = stack.login("operator")
    body = f'{{"type": "zone_intrusion", "zone": {json.dumps(ZONE)}, "cooldown_s": {value}}}'
    r = c.put("/api/rules/inf", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["loc"][-1] == "cooldown_s"
    assert c.get("/api/rules").status_code == 200
    c.delete("/api/rules/inf")


def test_large_body_is_413_and_the_console_stays_up(stack):
    c = stack.login("operator")
    big = b'{"username": "' + b"x" * (2 * 1024 * 1024) + b'", "password": "p"}'
    r = c.post("/api/login", content=big, headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and "max_body_bytes" in r.json()["detail"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted while it is read
        for i in range(0, len(big), 64 * 1024):
            yield big[i : i + 64 * 1024]

    r = c.put("/api/rules/big", content=chunks(), headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and "max_body_bytes" in r.json()["detail"]
    assert httpx.get(f"{stack.base}/healthz", timeout=10).status_code == 200
    assert c.get("/api/me").status_code == 200
    # a body under the bound is still read
    rule = {"type": "zone_intrusion", "zone": ZONE}
    assert c.put("/api/rules/small", json=rule).status_code == 200
    assert c.delete("/api/rules/small").status_code == 204


def test_redis_client_names_are_accepted(stack):
    """Prefixes with spaces still give a name Redis accepts (it refuses spaces)."""
    from pipeline.console.state import console_client_name

    name = console_client_name("my site:")
    assert redis.Redis.from_url(stack.cfg.redis.url.get_secret_value()).client_setname(name)
