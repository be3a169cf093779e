"""Least privilege in Redis (issue 22): each component logs in as its own ACL user
(pipeline/common/redis_acl.py) and can do what its code does, and nothing that lets it take over
another component: no console user written from ingest / alerts / the notifier (finding 1), no
model registry production pointer written by anyone but the retraining CLI (finding 2), no
FLUSHALL / CONFIG / KEYS for anyone, and no access without a user.

One private redis-server for the module, started with the ACL file the project generates, the
passwords in files as services.sh keeps them; the shared Redis is not touched.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
import redis

from alerts.events import AlertEvent
from alerts.review import store_review
from alerts.store import AlertStore, AlertWrite
from pipeline.common.config import ConfigError
from pipeline.common.contracts import Frame
from pipeline.common.redis import COMPONENTS, RedisConfig, RedisKeys, redis_client
from pipeline.common.redis_acl import acl_file
from pipeline.config import parse_config
from pipeline.console.auth import UserStore
from pipeline.ingest.frame_store import FrameStore
from pipeline.ingest.live import LiveView
from pipeline.record.alert_follower import store_clip
from pipeline.record.holds import HoldStore
from pipeline.record.index import SegmentIndex
from pipeline.record.layout import relative_path
from pipeline.record.segmenter import Segment
from tests.support.net import free_port
from tests.support.waiting import wait_for

PREFIX = "acl:"
MODEL = "yolo"
KEYS = RedisKeys(PREFIX)
CAMERA = "lobby"
ALERT_ID = "0123456789abcdef0123"
OPERATOR_PASSWORD = "operator-pass-123"
# finding 1: none may write console users
WRITERS_OF_OTHERS = ("ingest", "alerts", "notifier", "recorder")
NOT_MODELS = ("ingest", "alerts", "console", "notifier", "recorder")  # finding 2: none may promote


class AclServer:
    """A throw-away redis-server with the project's ACL file and one password file per user."""

    def __init__(self, tmp: Path) -> None:
        if shutil.which("redis-server") is None:
            pytest.fail("redis-server not installed (deploy/local/setup.sh)")
        self.tmp = tmp
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.secrets = tmp / "secrets"
        self.secrets.mkdir(mode=0o700)
        passwords = {}
        for user in COMPONENTS:
            passwords[user] = f"pw-{user}-{free_port()}"
            (self.secrets / user).write_text(passwords[user] + "\n")
        self.acl = tmp / "users.acl"
        self.acl.write_text(acl_file(passwords, PREFIX))
        self.passwords = passwords
        self.proc = subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port)]
            + ["--dir", str(tmp), "--save", "", "--aclfile", str(self.acl)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def cfg(self, user: str) -> RedisConfig:
        """``user``'s RedisConfig as a YAML would give it: username + password_file."""
        return RedisConfig(
            url=self.url,
            key_prefix=PREFIX,
            username=user,
            password_file=str(self.secrets / user),
            socket_timeout_s=5.0,
        )

    def client(self, user: str) -> redis.Redis:
        return redis_client(self.cfg(user))

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[AclServer]:
    srv = AclServer(tmp_path_factory.mktemp("redis-acl"))
    try:
        probe = srv.client("notifier")
        deadline = time.monotonic() + 10
        while True:
            try:
                probe.ping()
                break
            except redis.ConnectionError:
                if srv.proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail("redis-server with the generated ACL file did not start")
                time.sleep(0.05)
        probe.close()
        _seed(srv)
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def clients(server: AclServer) -> Iterator[dict[str, redis.Redis]]:
    out = {user: server.client(user) for user in COMPONENTS}
    yield out
    for c in out.values():
        c.close()


def _jpeg(value: int = 128) -> bytes:
    return cv2.imencode(".jpg", np.full((90, 160, 3), value, np.uint8))[1].tobytes()


def _alert(status: str = "started") -> dict:
    return AlertEvent(
        id=ALERT_ID,
        camera_id=CAMERA,
        rule_id="door",
        rule_type="zone_intrusion",
        status=status,  # type: ignore[arg-type]
        severity="high",
        started_at=1000.0,
        updated_at=1000.0,
        ended_at=None,
        frame_seq=7,
        epoch=123,
        label="person",
        track_id=4,
        box=(0.1, 0.2, 0.3, 0.9),
        confidence=0.87,
        zone=[[0.0, 0.0], [0.5, 0.0], [0.5, 1.0]],
        details={"frames": 3},
    ).to_dict()


def _version(v: str, number: int) -> str:
    """A model registry entry (ModelVersion JSON) for version ``v``."""
    return json.dumps(
        {
            "version": v,
            "number": number,
            "name": MODEL,
            "uri": "-",
            "sha256": hashlib.sha256(v.encode()).hexdigest(),
            "created_at": 1,
        }
    )


def _models_config(tmp_path: Path) -> dict[str, str]:
    """A ``models:`` section whose store holds versions aaaa and bbbb (bytes whose sha256 the
    entries of :func:`_version` record) and a signing key: a promotion gets as far as Redis."""
    store = tmp_path / "store"
    for v in ("aaaa", "bbbb"):
        (store / MODEL / v).mkdir(parents=True)
        (store / MODEL / v / "model.pt").write_bytes(v.encode())
    return {
        "name": MODEL,
        "store": str(store),
        "signing_key_file": str(tmp_path / "model-signing.key"),
    }


def _seed(srv: AclServer) -> None:
    """What the components leave in Redis, each through its own user and code: an operator
    (console), a production model (retraining CLI), a frame (ingest), an alert (alerts)."""
    console = UserStore(srv.cfg("console"))
    console.add("op", OPERATOR_PASSWORD, "viewer")
    console.client.close()
    models = srv.client("models")
    models.hset(KEYS.models(MODEL) + "versions", "aaaa", _version("aaaa", 1))
    models.set(KEYS.models(MODEL) + "production", "aaaa")
    models.close()
    frames = FrameStore(srv.cfg("ingest")).start()
    frames.put(Frame(CAMERA, 7, 123, 999.9, np.zeros((90, 160, 3), np.uint8)))
    frames.close()
    assert frames.stored == 1, "ingest stores a frame"
    store = AlertStore(srv.cfg("alerts"))
    assert store.write_alert(AlertWrite(_alert(), 999.9, _jpeg(), source=_jpeg(1))) == (True, False)
    store.client.close()


def _production(server: AclServer) -> bytes | None:
    c = server.client("models")
    try:
        return c.get(KEYS.models(MODEL) + "production")
    finally:
        c.close()


def _operator_role(server: AclServer) -> str | None:
    users = UserStore(server.cfg("console"))
    try:
        return users.authenticate("op", OPERATOR_PASSWORD)
    finally:
        users.client.close()


# -- finding 1: a console user cannot be forged through another component ----------------------


@pytest.mark.integration
@pytest.mark.parametrize("user", WRITERS_OF_OTHERS)
def test_console_user_cannot_be_written_by(user: str, server: AclServer, clients):
    """`HSET <prefix>console:user:op role admin` with ingest's, alerts' or the notifier's login
    is refused (NOPERM), also inside a script; the operator stays a viewer."""
    c = clients[user]
    key = KEYS.console("user:op")
    with pytest.raises(redis.exceptions.NoPermissionError):
        c.hset(key, "role", "admin")
    with pytest.raises(redis.exceptions.NoPermissionError):
        c.hset(KEYS.console("user:mallory"), mapping={"role": "admin", "password_hash": "x"})
    with pytest.raises(redis.exceptions.NoPermissionError):
        c.delete(key)
    # a script (EVAL for ingest, EVALSHA for alerts) runs with the same user's rights
    script = c.register_script("return redis.call('HSET', KEYS[1], 'role', 'admin')")
    with pytest.raises(redis.exceptions.NoPermissionError):
        script(keys=[key])
    with pytest.raises(redis.ResponseError):  # the key only inside the script
        c.eval(f"return redis.call('HSET', '{key}', 'role', 'admin')", 0)
    assert _operator_role(server) == "viewer"


# -- finding 2: only the retraining CLI's user moves the production pointer --------------------


@pytest.mark.integration
@pytest.mark.parametrize("user", NOT_MODELS)
def test_production_model_cannot_be_swapped_by(
    user: str, server: AclServer, clients, tmp_path: Path
):
    """Writing `<prefix>models:<name>:production` with ingest's, alerts', the console's or the
    notifier's login is refused (NOPERM), and so is a promotion through the registry's code."""
    from detectors.retrain.config import ModelsConfig
    from detectors.retrain.model_registry import ModelRegistry, RegistryError

    c = clients[user]
    key = KEYS.models(MODEL) + "production"
    with pytest.raises(redis.exceptions.NoPermissionError):
        c.set(key, "evil")
    with pytest.raises(redis.exceptions.NoPermissionError):
        c.hset(KEYS.models(MODEL) + "versions", "evil", _version("evil", 9))
    # the store's file and a signing key at hand: the registry signs, and Redis still refuses
    reg = ModelRegistry(server.cfg(user), ModelsConfig(**_models_config(tmp_path)))
    try:
        if user in ("ingest", "console"):  # hot reload and the Models page read it
            assert reg.production_version() == "aaaa"
        with pytest.raises(RegistryError, match="refused by Redis"):
            reg.promote("aaaa")
    finally:
        reg.close()
    assert _production(server) == b"aaaa"


@pytest.mark.integration
def test_models_user_promotes_and_ingest_hears_it(server: AclServer, clients, tmp_path: Path):
    """The retraining CLI's user moves the pointer (WATCH/MULTI, history, the promote event);
    the ingest worker's user reads it, gets the event and reports what it runs."""
    from detectors.retrain.config import ModelsConfig
    from detectors.retrain.model_registry import ModelRegistry

    mcfg = ModelsConfig(**_models_config(tmp_path))
    ingest = ModelRegistry(server.cfg("ingest"), mcfg)
    sub = ingest.client.pubsub(ignore_subscribe_messages=True)
    sub.subscribe(ingest.channel)
    models = ModelRegistry(server.cfg("models"), mcfg)
    try:
        models.client.hset(models.key("versions"), "bbbb", _version("bbbb", 2))
        models.promote("bbbb", reason="acl test")
        assert ingest.production_version() == "bbbb"
        msg = None
        deadline = time.monotonic() + 5
        while msg is None and time.monotonic() < deadline:
            msg = sub.get_message(timeout=0.5)
        assert msg is not None and json.loads(msg["data"])["version"] == "bbbb"
        ingest.report_worker("w1", "bbbb", "running")
        ingest.put_drift({CAMERA: {"score": 0.1}})
        assert models.workers()["w1"]["status"] == "running"
        assert models.history(1)[0]["version"] == "bbbb"
        assert models.rollback(reason="acl test").version == "aaaa"
    finally:
        sub.close()
        ingest.close()
        models.close()
    assert _production(server) == b"aaaa"


# -- what each component must still be able to do ----------------------------------------------


@pytest.mark.integration
def test_ingest_writes_frames_live_views_and_status(server: AclServer, clients):
    c = clients["ingest"]
    assert c.get(KEYS.frame(CAMERA, 123, 7)) is not None  # _seed's FrameStore write
    view = LiveView(server.cfg("ingest"), "w1", 10.0).start()
    view(Frame(CAMERA, 8, 123, time.time(), np.zeros((90, 160, 3), np.uint8)), [])
    assert wait_for(lambda: c.hget(KEYS.live(CAMERA), "worker") == b"w1", 5)
    c.hset(KEYS.camera_status(CAMERA), mapping={"state": "streaming", "worker": "w1"})
    c.expire(KEYS.camera_status(CAMERA), 60)
    view.close()  # deletes the keys it owns (a script: HGET + DEL)
    assert c.exists(KEYS.live(CAMERA)) == 0
    with pytest.raises(redis.exceptions.NoPermissionError):
        c.hgetall(KEYS.alert(ALERT_ID))
    for key in (KEYS.snapshot(ALERT_ID), KEYS.checkpoint("g", "t", 0)):
        with pytest.raises(redis.exceptions.NoPermissionError):
            c.get(key)
    with pytest.raises(redis.exceptions.NoPermissionError):
        c.xadd(KEYS.alerts_stream(), {"alert": "{}"})
    with pytest.raises(redis.exceptions.NoPermissionError):
        c.publish(KEYS.models(MODEL) + "events", json.dumps({"event": "promote"}))


@pytest.mark.integration
def test_alerts_stores_alerts_and_checkpoints(server: AclServer, clients):
    store = AlertStore(server.cfg("alerts"))
    try:
        # reads the ingest worker's frame, writes (idempotently) through its script
        [(frame, written)] = store.snapshot_sources([(ALERT_ID, CAMERA, 123, 7)])
        assert frame is not None and written is True
        assert store.write_alert(AlertWrite(_alert(), 999.9)) == (False, False)
        store.mark_published([(ALERT_ID, "started")])
        store.put_checkpoint("vigil-alerts", "vigil.detections", 0, 42, {"cameras": {}})
        assert store.get_checkpoint("vigil-alerts", "vigil.detections", 0)["offset"] == 42
        assert store.get_alert(ALERT_ID)["published_started"] is True
        with pytest.raises(redis.exceptions.NoPermissionError):
            store.client.set(KEYS.frame(CAMERA, 123, 7), b"forged")
        with pytest.raises(redis.exceptions.NoPermissionError):
            store.client.hset(KEYS.live(CAMERA), "jpeg", b"forged")
    finally:
        store.client.close()


@pytest.mark.integration
def test_console_logs_in_reviews_and_reads(server: AclServer, clients):
    users = UserStore(server.cfg("console"))
    store = AlertStore(server.cfg("console"), client=users.client)
    try:
        assert users.authenticate("op", OPERATOR_PASSWORD) == "viewer"
        sid, _ = users.new_session("op", "viewer", 60)
        assert users.session(sid, 60).user == "op"
        token = users.new_token("op", "ci", 3600)[0]
        assert users.token(token).user == "op"
        # the login-attempt windows (a script) and their clean-up, the token listing and revoke
        attempt = users.login_attempt("op", "127.0.0.1", 5)
        assert attempt is not None
        users.login_succeeded("op", "127.0.0.1", attempt)
        (listed,) = users.tokens("op")
        assert users.revoke_token("op", str(listed["id"])) and users.token(token) is None
        users.client.xadd(KEYS.audit(), {"action": "test"})  # the audit trail (CLI and console)
        assert store_review(store, ALERT_ID, "true_positive", "ok", "op", 1001.0, None)
        assert store.get_alert(ALERT_ID)["review"] == "true_positive"
        assert store.recent(CAMERA)[0]["id"] == ALERT_ID
        assert store.get_snapshot(ALERT_ID) and store.get_source(ALERT_ID)
        assert users.client.get(KEYS.frame(CAMERA, 123, 7)) is not None
        users.client.hgetall(KEYS.camera_status(CAMERA))
        with pytest.raises(redis.exceptions.NoPermissionError):
            store.put_snapshot(ALERT_ID, b"forged")
        with pytest.raises(redis.exceptions.NoPermissionError):
            store.put_checkpoint("vigil-alerts", "vigil.detections", 0, 0, {})
    finally:
        users.client.close()


@pytest.mark.integration
def test_notifier_only_reads(server: AclServer, clients):
    store = AlertStore(server.cfg("notifier"))
    try:
        assert store.get_alert(ALERT_ID)["id"] == ALERT_ID
        assert store.get_snapshot(ALERT_ID)
        assert store.recent()[0]["id"] == ALERT_ID
        list(store.client.scan_iter(match=KEYS.camera_status("*"), count=100))
        with pytest.raises(redis.exceptions.NoPermissionError):
            store.mark_published([(ALERT_ID, "ended")])
        with pytest.raises(redis.exceptions.NoPermissionError):
            store.client.get(KEYS.console("user:op"))  # not even reading console users
    finally:
        store.client.close()


@pytest.mark.integration
def test_recorder_indexes_segments_and_holds_and_the_console_reads_them(server: AclServer):
    """The recorder writes the segment index and the holds (and a rebuild clears an index) and
    an existing alert's clip fields; the console reads the index and holds but writes neither;
    the recorder reaches nothing else."""
    seg = Segment(CAMERA, relative_path(CAMERA, 1000.0), 1000.0, 1010.0, 4096, 100)
    index = SegmentIndex.from_config(server.cfg("recorder"))
    holds = HoldStore.from_config(server.cfg("recorder"))
    console = redis_client(server.cfg("console"))
    try:
        index.add(seg)
        holds.hold(CAMERA, ALERT_ID, 1002.0, 1005.0, until=5000.0)
        seen = SegmentIndex(console, KEYS)
        assert seen.segments(CAMERA, 1000.0, 1010.0) == [seg]
        assert [h.alert_id for h in HoldStore(console, KEYS).active(CAMERA, 1001.0)] == [ALERT_ID]
        with pytest.raises(redis.exceptions.NoPermissionError):
            seen.add(seg)
        with pytest.raises(redis.exceptions.NoPermissionError):
            HoldStore(console, KEYS).hold(CAMERA, "x" * 20, 1.0, 2.0, until=3.0)
        assert holds.expire(CAMERA, 6000.0) == 1
        index.clear(CAMERA)  # `vigil recordings reindex`
        assert seen.segments(CAMERA, 0, 2e9) == []
        c = index.client
        # the clip of an alert the alert service stored; no hash is made for an unknown alert
        console.hset(KEYS.alert(ALERT_ID), "status", "ended")  # (console writes alert hashes)
        assert store_clip(c, KEYS.alert(ALERT_ID), 1002.0, 1005.0, 5000.0)
        assert console.hget(KEYS.alert(ALERT_ID), "clip_until") == b"5000.0"
        assert c.hexists(KEYS.alert(ALERT_ID), "clip_from")  # a clip read again is not repeated
        assert not store_clip(c, KEYS.alert("f" * 20), 1.0, 2.0, 3.0)
        assert not console.exists(KEYS.alert("f" * 20))
        for read in (
            lambda: c.get(KEYS.frame(CAMERA, 123, 7)),
            lambda: c.hgetall(KEYS.console("user:op")),
            lambda: c.get(KEYS.models(MODEL) + "production"),
        ):
            with pytest.raises(redis.exceptions.NoPermissionError):
                read()
        with pytest.raises(redis.exceptions.NoPermissionError):
            c.set(KEYS.snapshot(ALERT_ID), b"forged")
    finally:
        index.client.close()
        holds.client.close()
        console.close()


# -- nobody administers the server --------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.parametrize("user", COMPONENTS)
def test_no_admin_commands_for(user: str, clients):
    """No flush, no reconfiguration, no key listing, no ACL change, no shutdown (DEBUG is off
    server-wide unless enable-debug-command says otherwise)."""
    c = clients[user]
    for cmd in (
        ("FLUSHALL",),
        ("FLUSHDB",),
        ("CONFIG", "SET", "dir", "/tmp"),
        ("CONFIG", "GET", "requirepass"),
        ("KEYS", "*"),
        ("SCRIPT", "FLUSH"),
        ("FUNCTION", "FLUSH"),
        ("SWAPDB", "0", "1"),
        ("CLIENT", "KILL", "ID", "1"),
        ("CLIENT", "LIST"),
        ("ACL", "SETUSER", user, "+@all", "~*"),
        ("MODULE", "LIST"),
        ("SHUTDOWN", "NOSAVE"),
    ):
        with pytest.raises(redis.exceptions.NoPermissionError):
            c.execute_command(*cmd)
    assert c.ping()


@pytest.mark.integration
def test_default_user_and_wrong_passwords_are_refused(server: AclServer):
    anonymous = redis.Redis(host="127.0.0.1", port=server.port, socket_timeout=5)
    with pytest.raises(redis.AuthenticationError):
        anonymous.ping()
    anonymous.close()
    for user, password in (("default", ""), ("ingest", server.passwords["models"])):
        c = redis.Redis(
            host="127.0.0.1", port=server.port, username=user, password=password or None
        )
        with pytest.raises((redis.AuthenticationError, redis.ResponseError)):
            c.ping()
        c.close()


def test_acl_file_holds_no_password():
    """The ACL file services.sh writes (and AclServer above loads) keeps hashes only; no Redis
    needed to read it."""
    passwords = {u: f"pw-{u}-{free_port()}" for u in COMPONENTS}
    text = acl_file(passwords, PREFIX)
    assert not any(pw in text for pw in passwords.values())
    assert "user default off" in text
    assert all(f"user {u} reset on #" in text for u in COMPONENTS), text  # sha256 hashes


# -- the config: each component logs in as its own user -----------------------------------------


@pytest.mark.integration
def test_config_picks_each_components_user(server: AclServer):
    """``redis.users`` in the YAML: the composition layer hands ingest its own login, so the
    same config that lets the console write users does not let the ingest worker."""
    data = {
        "redis": {
            "url": server.url,
            "key_prefix": PREFIX,
            "users": {
                u: {"username": u, "password_file": str(server.secrets / u)} for u in COMPONENTS
            },
        }
    }
    cfg = parse_config(data, "t.yaml")
    dumped = cfg.model_dump(mode="json")  # names the files, holds no password ...
    assert not any(pw in repr(cfg) + json.dumps(dumped) for pw in server.passwords.values())
    dumped["redis"]["url"] = server.url  # a SecretStr dumps masked; the bench restores it too
    cfg = parse_config(dumped, "dumped")  # ... and loads again (the bench re-parses configs)
    ingest = redis_client(cfg.for_component("ingest").redis)
    console = redis_client(cfg.for_component("console").redis)
    try:
        with pytest.raises(redis.exceptions.NoPermissionError):
            ingest.hset(KEYS.console("user:op"), "role", "admin")
        assert console.hget(KEYS.console("user:op"), "role") == b"viewer"
    finally:
        ingest.close()
        console.close()
    bad = dict(data["redis"], url=f"redis://:url-s3cret@127.0.0.1:{server.port}/0")
    with pytest.raises(ConfigError, match="not both") as err:
        parse_config({"redis": bad}, "t.yaml")
    assert "url-s3cret" not in str(err.value)
    missing = {"redis": {"users": {"ingest": {"username": "ingest", "password_file": "/nope"}}}}
    with pytest.raises(ConfigError, match="cannot read /nope"):
        parse_config(missing, "t.yaml")


# -- the local cluster profile: services.sh starts Redis with these users -----------------------


@pytest.mark.integration
def test_services_sh_cluster_profile_starts_redis_with_acl_users(tmp_path: Path):
    """`KAFKA_NODES=3 services.sh up` (here only its Redis, VIGIL_REDIS_ACL=1): random passwords
    in state-dir files (mode 600), an ACL file without them, `default` off, each user limited;
    the single-node profile refuses to reuse that server instead of silently talking to it."""
    script = Path(__file__).resolve().parents[2] / "deploy" / "local" / "services.sh"
    port = free_port()
    env = {
        **os.environ,
        "VIGIL_STATE": str(tmp_path),
        "VIGIL_REDIS_PORT": str(port),
        "PYTHON": sys.executable,
        "VIGIL_START_TIMEOUT": "20",
    }

    def services(*args: str, acl: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["bash", str(script), *args],
            env={**env, "VIGIL_REDIS_ACL": acl},
            capture_output=True,
            text=True,
            timeout=60,
        )

    up = services("start-redis", acl="1")
    try:
        assert up.returncode == 0, up.stderr
        secrets = tmp_path / "redis" / "secrets"
        passwords = {u: (secrets / u).read_text().strip() for u in COMPONENTS}
        assert all(len(pw) >= 24 for pw in passwords.values())
        assert all(stat.S_IMODE((secrets / u).stat().st_mode) == 0o600 for u in COMPONENTS)
        shown = up.stdout + up.stderr + (tmp_path / "redis" / "users.acl").read_text()
        assert not any(pw in shown for pw in passwords.values())
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=port, socket_timeout=5).ping()
        cfg = RedisConfig(
            url=f"redis://127.0.0.1:{port}/0",
            username="ingest",
            password_file=str(secrets / "ingest"),
        )
        ingest = redis_client(cfg)
        try:
            ingest.hset("vigil:live:door", "worker", "w1")
            with pytest.raises(redis.exceptions.NoPermissionError):
                ingest.hset("vigil:console:user:op", "role", "admin")
        finally:
            ingest.close()
        plain = services("start-redis", acl="0")
        assert plain.returncode != 0 and "stop-redis" in plain.stderr
        env_out = services("redis-env", acl="1").stdout
        assert f"VIGIL_REDIS_INGEST_PASSWORD_FILE={secrets / 'ingest'}" in env_out
        assert not any(pw in env_out for pw in passwords.values())
    finally:
        services("stop-redis", acl="1")


# -- the console, served, under its own user ----------------------------------------------------


@pytest.mark.integration
def test_console_served_with_its_user_reviews_but_cannot_promote(
    server: AclServer, kafka_bootstrap, tmp_path: Path
):
    """The real console (uvicorn, Kafka views) logged in to Redis as `console`: sign-in, the
    alert list, a snapshot and a review work; the Models page lists the registry, and a rollback
    there is answered 422 saying Redis refused it, the production model unchanged."""
    import httpx

    from detectors.retrain.model_registry import ModelRegistry
    from pipeline.common.kafka import ensure_topics
    from pipeline.console.server import ConsoleServer
    from tests.support.config import make_config_dict

    data = make_config_dict(
        kafka_bootstrap,
        console={"port": free_port()},
        collection={"dir": str(tmp_path / "dataset")},
        redis={
            "url": server.url,
            "key_prefix": PREFIX,
            "users": {
                u: {"username": u, "password_file": str(server.secrets / u)} for u in COMPONENTS
            },
        },
        models=_models_config(tmp_path),
    )
    cfg = parse_config(data, "t.yaml")
    ensure_topics(cfg.kafka)
    users = UserStore(cfg.for_component("console").redis)
    users.add("boss", OPERATOR_PASSWORD, "admin")
    users.client.close()
    models = ModelRegistry(cfg.for_component("models").redis, cfg.models)
    models.client.hset(models.key("versions"), "bbbb", _version("bbbb", 2))
    models.promote("bbbb", reason="so that the console has something to roll back")
    console = ConsoleServer(cfg.for_component("console")).start()
    base = console.url.rstrip("/")
    try:
        assert wait_for(lambda: httpx.get(f"{base}/readyz", timeout=10).status_code == 200, 60)
        c = httpx.Client(base_url=base, timeout=30)
        r = c.post("/api/login", json={"username": "boss", "password": OPERATOR_PASSWORD})
        assert r.status_code == 200, r.text
        c.headers["X-CSRF-Token"] = r.json()["csrf_token"]
        assert ALERT_ID in [a["id"] for a in c.get("/api/alerts").json()["items"]]
        assert c.get(f"/api/alerts/{ALERT_ID}/snapshot.jpg").status_code == 200
        r = c.post(f"/api/alerts/{ALERT_ID}/review", json={"verdict": "false_positive"})
        assert r.status_code == 200, r.text
        assert c.get(f"/api/alerts/{ALERT_ID}").json()["review"] == "false_positive"
        assert c.get("/api/models").json()["production"] == "bbbb"
        r = c.post("/api/models/rollback", json={})
        assert r.status_code == 422 and "refused by Redis" in r.json()["detail"], r.text
        assert _production(server) == b"bbbb"
    finally:
        console.stop()
        models.rollback(reason="back to the module's production model")
        models.close()


@pytest.mark.integration
def test_vigil_run_gives_each_service_its_own_user(server: AclServer, tmp_path: Path, monkeypatch):
    """`vigil run` starts ingest, the alert service, the console and the notifier in one process
    from one YAML: each gets its own Redis login, not the first one configured."""
    import pipeline.app
    import pipeline.cli.run as run

    data = {
        "redis": {
            "url": server.url,
            "key_prefix": PREFIX,
            "users": {
                u: {"username": u, "password_file": str(server.secrets / u)} for u in COMPONENTS
            },
        },
        "alerts": {
            "rules": [
                {"id": "door", "type": "zone_intrusion", "zone": [[0, 0], [1, 0], [1, 1]]},
            ]
        },
        "console": {"enabled": True},
        "notify": {
            "sinks": [
                {"id": "ops", "type": "webhook", "url": "http://127.0.0.1:9/x", "secret": "x" * 16}
            ]
        },
    }
    (tmp_path / "vigil.yaml").write_text(json.dumps(data))
    got: dict[str, str | None] = {}

    def record(name: str, result: object = None):
        def fake(cfg, *args, **kwargs):
            got[name] = cfg.redis.username
            return result if result is not None else (lambda stop: None)

        return fake

    class Console:
        run_until_stopped = staticmethod(lambda stop: None)

    monkeypatch.setattr(run, "alert_service_runner", record("alerts"))
    monkeypatch.setattr(run, "start_console", record("console", Console()))
    monkeypatch.setattr(run, "notifier_runner", record("notifier"))
    monkeypatch.setattr(run, "recorder_runner", record("recorder"))
    monkeypatch.setattr(pipeline.app, "run_ingest", record("ingest", 0))
    args = argparse.Namespace(
        config=str(tmp_path / "vigil.yaml"),
        bootstrap=None,
        no_alerts=False,
        no_record=False,
        max_seconds=1,
        metrics_port=None,
    )
    assert run.cmd_run(args) == 0
    assert got == {u: u for u in ("alerts", "console", "notifier", "recorder", "ingest")}


@pytest.mark.integration
def test_acl_follows_an_unusual_key_prefix(tmp_path: Path):
    """Glob characters in redis.key_prefix are taken literally: `a*b:` guards `a*b:console:...`,
    not every `a...b:console:...`; a prefix the ACL cannot express is refused up front."""
    srv = subprocess.Popen(
        ["redis-server", "--port", "0", "--unixsocket", str(tmp_path / "s"), "--save", ""]
        + ["--dir", str(tmp_path), "--aclfile", str(_acl(tmp_path, "a*b:"))],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    c = redis.Redis(unix_socket_path=str(tmp_path / "s"), username="console", password="pw-console")
    try:
        assert wait_for(lambda: (tmp_path / "s").exists(), 10)
        assert c.set("a*b:console:x", 1)
        with pytest.raises(redis.exceptions.NoPermissionError):
            c.set("aXb:console:x", 1)
    finally:
        c.close()
        srv.terminate()
        srv.wait(10)
    for bad in ("", "my site:", 'q"'):
        with pytest.raises(ValueError, match="key_prefix"):
            acl_file({u: "pw" for u in COMPONENTS}, bad)


def _acl(tmp: Path, prefix: str) -> Path:
    path = tmp / "users.acl"
    path.write_text(acl_file({u: f"pw-{u}" for u in COMPONENTS}, prefix))
    return path


@pytest.mark.integration
def test_password_file_for_a_redis_without_auth_is_warned(tmp_path: Path, caplog):
    """A password from redis.password_file, sent to a Redis that asks for none, is as unused as
    one in the URL: the operator is warned (once), the password is not in the warning."""
    import logging

    from pipeline.common import redis as common_redis

    port = free_port()
    srv = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
        + ["--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    (tmp_path / "pw").write_text("n0t-used-fi1e-secret\n")
    cfg = RedisConfig(url=f"redis://127.0.0.1:{port}/0", password_file=str(tmp_path / "pw"))
    try:
        probe = redis.Redis(port=port)
        assert wait_for(lambda: _pings(probe), 10)
        probe.close()
        common_redis._AUTH_CHECKED.clear()
        with caplog.at_level(logging.WARNING, logger="pipeline.common.redis"):
            for _ in range(2):
                client = redis_client(cfg)
                assert client.ping()
                client.close()
    finally:
        srv.terminate()
        srv.wait(10)
    warnings = [r.getMessage() for r in caplog.records if r.name == "pipeline.common.redis"]
    assert len(warnings) == 1 and "has no password set" in warnings[0]
    assert "n0t-used" not in warnings[0]


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False
