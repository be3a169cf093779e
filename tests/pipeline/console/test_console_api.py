"""The console's HTTP API against the real local Kafka and Redis, served by uvicorn on a free port:
every endpoint, each role's 403s, CSRF, bad bodies (422 naming the field; rule errors identical to
the YAML's), unknown ids (404), and Kafka or Redis away (503 with a clear message)."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest

from alerts.config import RulesError
from alerts.engine import RuleEngine
from alerts.rules_topic import read_rules
from alerts.store import AlertStore, AlertWrite
from detectors.retrain.dataset.layout import label_path, write_data_yaml
from pipeline.cameras.registry import read_registry
from pipeline.common.kafka import make_producer
from pipeline.config import parse_config
from pipeline.console.auth import UserStore
from pipeline.console.server import ConsoleServer
from tests.support.config import make_config_dict
from tests.support.console import PASSWORD, ConsoleStack, console_stack, freeze_clock
from tests.support.kafka import TopicReader
from tests.support.net import free_port

pytestmark = pytest.mark.integration

ZONE = [[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]]


def _jpeg(color: int = 90, w: int = 320, h: int = 240) -> bytes:
    img = np.full((h, w, 3), color, np.uint8)
    cv2.rectangle(img, (40, 40), (120, 200), (200, 200, 200), -1)
    return cv2.imencode(".jpg", img)[1].tobytes()


def _det_msg(cam: str, ts: float, seq: int, box=(0.4, 0.3, 0.6, 0.9)) -> dict:
    return {
        "schema_version": 1,
        "camera_id": cam,
        "seq": seq,
        "epoch": 1,
        "capture_ts": ts,
        "frame": {"width": 320, "height": 240},
        "model": {"name": "t", "version": "1"},
        "detections": [{"class_id": 0, "label": "person", "confidence": 0.9, "box": list(box)}],
    }


@pytest.fixture(scope="module")
def stack(kafka_bootstrap, tmp_path_factory) -> Iterator[ConsoleStack]:
    with console_stack(
        kafka_bootstrap,
        tmp_path_factory.mktemp("console"),
        console={"login_attempts_per_minute": 5},
        collection={"dir": str(tmp_path_factory.mktemp("dataset"))},
    ) as s:
        write_data_yaml(s.cfg.collection.dir, {0: "person", 1: "car"})  # a labelled dataset
        yield s


# -- operations and session ------------------------------------------------------------------------


def test_health_ready_metrics_and_docs(stack):
    c = stack.client()
    assert c.get("/healthz").json() == {"status": "ok"}
    assert c.get("/readyz").json() == {"status": "ready"}
    assert c.get("/openapi.json").status_code == 401  # the API's map: logged-in callers only
    assert stack.login("viewer").get("/openapi.json").json()["info"]["title"] == "Vigil Console"
    c.get("/api/me")
    text = c.get("/metrics").text
    assert 'vigil_console_requests_total{method="GET",route="/api/me",status="401"}' in text
    page = c.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]


def test_login_cookie_logout_and_wrong_passwords(stack):
    c = stack.client()
    assert c.get("/api/me").status_code == 401
    r = c.post("/api/login", json={"username": "viewer", "password": "wrong password"})
    assert r.status_code == 401
    assert c.post("/api/login", json={"username": "nobody", "password": "x"}).json() == r.json()
    r = c.post("/api/login", json={"username": "viewer", "password": PASSWORD})
    cookie = r.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie
    assert PASSWORD not in r.text
    me = c.get("/api/me").json()
    assert me["user"] == "viewer" and me["csrf_token"]
    assert c.post("/api/logout", headers={"X-CSRF-Token": me["csrf_token"]}).status_code == 200
    assert c.get("/api/me").status_code == 401
    # the hash in Redis is argon2id, never the password
    raw = stack.users.client.hgetall(stack.users.keys.console("user:viewer"))
    assert raw[b"password_hash"].startswith(b"$argon2id$")
    assert PASSWORD.encode() not in b"".join(raw.values())


def test_login_rate_limit(stack, monkeypatch):
    """5 attempts per name and address in any 60 s (sliding): attempts that straddle a minute of
    the wall clock count together, and one slides out exactly 60 s after it was made. The app's
    clock is pinned, so the test does not depend on when it runs or how long it takes."""
    window = 60.0  # docs/console.md: "in any 60 s"
    boundary = (time.time() // 60 + 1) * 60  # the next full minute
    clock = freeze_clock(stack, monkeypatch, boundary - 0.25)
    first = clock.now
    name = f"victim{uuid.uuid4().hex[:6]}"
    stack.users.add(name, PASSWORD, "viewer")
    addr = "127.0.0.21"  # this test's own address: no other test's attempts count here
    c = stack.client(addr)
    codes = []
    for _ in range(7):  # 0.1 s apart: 3 before the minute boundary, 4 after it
        codes.append(c.post("/api/login", json={"username": name, "password": "guess"}).status_code)
        clock.advance(0.1)
    assert codes == [401] * 5 + [429, 429], codes
    r = c.post("/api/login", json={"username": name, "password": PASSWORD})
    assert r.status_code == 429  # even the right password waits for the window
    assert r.headers["retry-after"] == "60"
    # others are not locked out, from the same address
    assert stack.login("viewer", addr=addr).get("/api/me").status_code == 200
    clock.now = first + window - 0.1  # all five failures are still within the last 60 s
    r = c.post("/api/login", json={"username": name, "password": PASSWORD})
    assert r.status_code == 429
    clock.now = first + window + 0.05  # the first failure has slid out: one attempt is free
    r = c.post("/api/login", json={"username": name, "password": PASSWORD})
    assert r.status_code == 200, r.text


def test_csrf_is_required_for_cookie_writes_not_for_tokens(stack):
    c = stack.login("operator")
    bare = stack.client(cookies=c.cookies)
    body = {"id": "csrfcam", "url": "rtsp://127.0.0.1:9/x"}
    r = bare.post("/api/cameras", json=body)
    assert r.status_code == 403 and "CSRF" in r.json()["detail"]
    r = bare.post("/api/cameras", json=body, headers={"X-CSRF-Token": "forged"})
    assert r.status_code == 403
    token = c.post("/api/tokens", json={"name": "ci"}).json()["token"]
    api = stack.client(token=token)
    assert api.get("/api/me").json()["role"] == "operator"
    assert api.post("/api/cameras", json=body).status_code == 201
    assert api.delete("/api/cameras/csrfcam").status_code == 204
    bad = stack.client(token="x")
    assert bad.get("/api/me").status_code == 401


@pytest.mark.parametrize("sent", ["none", "forged", "another session's"])
def test_csrf_is_required_for_put_patch_and_delete_and_nothing_changes(stack, sent):
    cfg, op = stack.cfg, stack.login("operator")
    cam, rule_id = f"csrf{uuid.uuid4().hex[:6]}", f"csrf-{uuid.uuid4().hex[:6]}"
    rule = {"type": "zone_intrusion", "zone": ZONE, "cameras": [cam]}
    assert op.post("/api/cameras", json={"id": cam, "url": "rtsp://127.0.0.1:9/c"}).is_success
    assert op.put(f"/api/rules/{rule_id}", json=rule).status_code == 200
    minted = op.post("/api/tokens", json={"name": "kept"}).json()
    camera_before, rules_before = read_registry(cfg.kafka)[cam], read_rules(cfg.kafka)
    headers = {
        "none": {},
        "forged": {"X-CSRF-Token": "forged"},
        "another session's": {"X-CSRF-Token": stack.login("operator").headers["X-CSRF-Token"]},
    }[sent]
    forger = stack.client(cookies=op.cookies, headers=headers)  # the cookie a browser sends
    for method, path, body in (
        ("PATCH", f"/api/cameras/{cam}", {"fps": 1, "enabled": False}),
        ("DELETE", f"/api/cameras/{cam}", None),
        ("PUT", f"/api/rules/{rule_id}", {**rule, "severity": "critical"}),
        ("PUT", f"/api/rules/{rule_id}-new", rule),
        ("DELETE", f"/api/rules/{rule_id}", None),
        ("DELETE", f"/api/tokens/{minted['id']}", None),
    ):
        r = forger.request(method, path, json=body)
        assert r.status_code == 403 and "CSRF" in r.json()["detail"], (method, path, r.text)
    # nothing changed: the topics read to their end, and the token still works
    assert read_registry(cfg.kafka)[cam] == camera_before
    assert read_rules(cfg.kafka) == rules_before
    assert stack.client(token=minted["token"]).get("/api/me").status_code == 200
    # the same session with its own CSRF token may (the 403s were the CSRF check's)
    assert op.patch(f"/api/cameras/{cam}", json={"fps": 1}).json()["fps"] == 1
    assert op.delete(f"/api/rules/{rule_id}").status_code == 204
    assert op.delete(f"/api/cameras/{cam}").status_code == 204
    assert op.delete(f"/api/tokens/{minted['id']}").status_code == 204


def test_users_are_admin_only(stack):
    assert stack.login("operator").get("/api/users").status_code == 403
    admin = stack.login("admin")
    assert {"user": "viewer", "role": "viewer"} in admin.get("/api/users").json()
    r = admin.post("/api/users", json={"username": "eve", "password": "short", "role": "viewer"})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"][-1] == "password"
    r = admin.post("/api/users", json={"username": "eve", "password": PASSWORD, "role": "root"})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"][-1] == "role"


def test_an_admin_creates_a_user_who_logs_in_with_the_role_given(stack):
    admin = stack.login("admin")
    name, password = f"new{uuid.uuid4().hex[:6]}", "Fresh-user-pw-1"
    body = {"username": name, "password": password, "role": "operator"}
    # no one else may: a session of each lower role, or an operator's API token
    operator = stack.login("operator")
    op_token = operator.post("/api/tokens", json={"name": "u"}).json()["token"]
    for who in (stack.login("viewer"), operator, stack.client(token=op_token)):
        r = who.post("/api/users", json=body)
        assert r.status_code == 403 and "needs role admin" in r.json()["detail"], r.text
    assert name not in [u["user"] for u in admin.get("/api/users").json()]
    refused = stack.client().post("/api/login", json={"username": name, "password": password})
    assert refused.status_code == 401
    r = admin.post("/api/users", json=body)
    assert r.status_code == 201, r.text
    assert r.json() == {"user": name, "role": "operator"} and password not in r.text
    new = stack.login(name, password)
    assert new.get("/api/me").json()["role"] == "operator"
    assert new.get("/api/users").status_code == 403  # an operator, not an admin
    assert {"user": name, "role": "operator"} in admin.get("/api/users").json()


# -- cameras ------------------------------------------------------------------------------------------


def test_cameras_add_edit_remove_masked_and_roles(stack):
    op, viewer = stack.login("operator"), stack.login("viewer")
    secret = "s3cret-Pa55"
    body = {"id": "door", "url": f"rtsp://admin:{secret}@127.0.0.1:8554/door", "fps": 4}
    assert viewer.post("/api/cameras", json=body).status_code == 403
    r = op.post("/api/cameras", json=body)
    assert r.status_code == 201, r.text
    assert r.json()["url"] == "rtsp://***@127.0.0.1:8554/door"
    listed = viewer.get("/api/cameras")
    assert [c["id"] for c in listed.json()] == ["door"]
    assert secret not in listed.text and secret not in r.text
    assert viewer.get("/api/cameras/door").json()["fps"] == 4
    r = op.patch("/api/cameras/door", json={"fps": 2.5})
    assert r.status_code == 200 and r.json()["fps"] == 2.5
    assert viewer.get("/api/cameras/door").json()["fps"] == 2.5
    assert op.patch("/api/cameras/door", json={"fps": -1}).status_code == 422
    assert op.patch("/api/cameras/door", json={"colour": "red"}).status_code == 422
    # bad bodies name the field
    r = op.post("/api/cameras", json={"id": "bad id!", "url": "rtsp://127.0.0.1/x"})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"][-1] == "id"
    r = op.post("/api/cameras", json={"id": "x", "url": "http://127.0.0.1/x.mp4", "fpz": 3})
    assert r.status_code == 422
    assert {e["loc"][-1] for e in r.json()["detail"]} >= {"fpz"}
    assert viewer.delete("/api/cameras/door").status_code == 403
    assert op.delete("/api/cameras/door").status_code == 204
    assert viewer.get("/api/cameras/door").status_code == 404
    assert op.delete("/api/cameras/door").status_code == 404
    assert viewer.get("/api/cameras/nope/latest.jpg").status_code == 404


def test_a_viewer_cannot_edit_a_camera_or_delete_a_rule_and_nothing_changes(stack):
    cfg, op, viewer = stack.cfg, stack.login("operator"), stack.login("viewer")
    cam, rule_id = f"porch{uuid.uuid4().hex[:6]}", f"porch-{uuid.uuid4().hex[:6]}"
    body = {"id": cam, "url": "rtsp://127.0.0.1:9/porch", "fps": 4}
    rule = {"type": "zone_intrusion", "zone": ZONE, "cameras": [cam]}
    assert op.post("/api/cameras", json=body).status_code == 201
    assert op.put(f"/api/rules/{rule_id}", json=rule).status_code == 200
    camera_before, rule_before = read_registry(cfg.kafka)[cam], read_rules(cfg.kafka)[rule_id]
    token = viewer.post("/api/tokens", json={"name": "v"}).json()["token"]
    try:
        # a session sending its CSRF token, and an API token: the role is what refuses
        for who in (viewer, stack.client(token=token)):
            r = who.patch(f"/api/cameras/{cam}", json={"fps": 1, "enabled": False})
            assert r.status_code == 403 and "needs role operator" in r.json()["detail"], r.text
            r = who.delete(f"/api/rules/{rule_id}")
            assert r.status_code == 403 and "needs role operator" in r.json()["detail"], r.text
        # nothing changed: the topics read to their end, and what the console shows
        assert read_registry(cfg.kafka)[cam] == camera_before
        assert read_rules(cfg.kafka)[rule_id] == rule_before
        shown = viewer.get(f"/api/cameras/{cam}").json()
        assert shown["fps"] == 4 and shown["enabled"] is True
        assert viewer.get(f"/api/rules/{rule_id}").json()["zone"] == ZONE
    finally:
        op.delete(f"/api/rules/{rule_id}")
        op.delete(f"/api/cameras/{cam}")


def test_latest_jpg_draws_boxes_and_zones_and_live_status(stack):
    op = stack.login("operator")
    assert (
        op.post("/api/cameras", json={"id": "yard", "url": "rtsp://127.0.0.1:9/y"}).status_code
        == 201
    )
    r = op.get("/api/cameras/yard/latest.jpg")
    assert r.status_code == 503 and "no frame" in r.json()["detail"]
    keys, client = stack.users.keys, stack.users.client
    raw = _jpeg()
    dets = [{"label": "person", "confidence": 0.8, "box": [0.1, 0.1, 0.5, 0.9], "track_id": 3}]
    client.hset(
        keys.live("yard"),
        mapping={"jpeg": raw, "detections": json.dumps(dets), "seq": 7, "capture_ts": time.time()},
    )
    client.hset(
        keys.camera_status("yard"),
        mapping={
            "state": "streaming",
            "last_error": "",
            "worker": "w1",
            "offered_fps": 5.0,
            "processed_fps": 4.9,
            "frame_ts": time.time() - 0.5,
            "dropped": 2,
            "reconnects": 1,
            "updated_at": time.time(),
        },
    )
    r = op.get("/api/cameras/yard/latest.jpg")
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    drawn = cv2.imdecode(np.frombuffer(r.content, np.uint8), cv2.IMREAD_COLOR)
    plain = cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_COLOR)
    assert drawn.shape == plain.shape
    # the box's edge (x = 0.1 of the width) is drawn in green
    edge = drawn[120, 30:34].astype(int)
    assert (edge[:, 1] - edge[:, 2]).max() > 80, edge
    status = {c["id"]: c["status"] for c in op.get("/api/cameras").json()}["yard"]
    assert status["state"] == "streaming" and status["worker"] == "w1"
    assert status["dropped"] == 2 and 0 < status["frame_age_s"] < 30
    # MJPEG: the first part is the same drawn frame
    with op.stream("GET", "/api/cameras/yard/live") as live:
        assert live.headers["content-type"].startswith("multipart/x-mixed-replace")
        buf = b""
        for chunk in live.iter_bytes():
            buf += chunk
            if buf.count(b"\xff\xd9") >= 1:
                break
    assert b"Content-Type: image/jpeg" in buf
    op.delete("/api/cameras/yard")


# -- rules ---------------------------------------------------------------------------------------------


def test_rules_crud_and_errors_identical_to_the_yaml(stack):
    op, viewer = stack.login("operator"), stack.login("viewer")
    rule = {"type": "zone_intrusion", "zone": ZONE, "classes": ["person"], "cameras": ["door"]}
    assert viewer.put("/api/rules/door-zone", json=rule).status_code == 403
    r = op.put("/api/rules/door-zone", json=rule)
    assert r.status_code == 200, r.text
    assert r.json()["id"] == "door-zone"
    assert "door-zone" in [x["id"] for x in viewer.get("/api/rules").json()]
    assert viewer.get("/api/rules/door-zone").json()["zone"] == ZONE
    bad = {"type": "zone_intrusion", "zone": [[0.1, 0.1], [0.5, 0.5]]}
    r = op.put("/api/rules/two-points", json=bad)
    assert r.status_code == 422
    with pytest.raises(RulesError) as yaml_err:
        parse_config({"alerts": {"rules": [{"id": "two-points", **bad}]}}, "vigil.yaml")
    yaml_lines = {line.strip() for line in str(yaml_err.value).splitlines()[1:]}
    assert {e["msg"] for e in r.json()["detail"]} == yaml_lines
    assert r.json()["detail"][0]["loc"][-1] == "zone"
    r = op.put("/api/rules/x", json={"type": "no_such_rule"})
    assert r.status_code == 422 and "unknown rule type" in r.json()["detail"][0]["msg"]
    r = op.put("/api/rules/x", json={"id": "y", "type": "zone_intrusion"})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"][-1] == "id"
    assert op.delete("/api/rules/door-zone").status_code == 204
    assert viewer.get("/api/rules/door-zone").status_code == 404
    assert op.delete("/api/rules/door-zone").status_code == 404


def test_preview_finds_would_be_alerts_in_recorded_detections(stack):
    cfg, op = stack.cfg, stack.login("operator")
    now = time.time()
    producer = make_producer(cfg.kafka, "test")
    for i in range(40):  # 8 s at 5 fps, a person in the middle of the frame
        ts = now - 60 + i * 0.2
        producer.send(
            cfg.kafka.topics.detections,
            key="lobby",
            value=_det_msg("lobby", ts, i + 1),
            timestamp_ms=int(ts * 1000),
        )
    producer.flush(15)
    producer.close()
    rule = {"id": "lobby-zone", "type": "zone_intrusion", "zone": ZONE, "cameras": ["lobby"]}
    assert stack.login("viewer").post("/api/rules/preview", json={"rule": rule}).status_code == 403
    r = op.post("/api/rules/preview", json={"rule": rule, "since_s": 600})
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["frames"] == 40 and len(out["alerts"]) == 1
    alert = out["alerts"][0]
    assert alert["camera_id"] == "lobby" and alert["label"] == "person"
    # the person is in the zone from the first frame on (min_frames 1): the alert starts at
    # that frame's capture time, as sent (alert times are kept to the microsecond)
    assert alert["started_at"] == pytest.approx(now - 60, abs=1e-6)
    # nothing in an earlier range
    r = op.post("/api/rules/preview", json={"rule": rule, "start": now - 7200, "end": now - 3600})
    assert r.status_code == 200 and r.json()["alerts"] == []
    r = op.post("/api/rules/preview", json={"rule": {**rule, "zone": [[0, 0], [1, 1]]}})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"][-1] == "zone"
    r = op.post("/api/rules/preview", json={"rule": rule, "since_s": 10 * 24 * 3600})
    assert r.status_code == 422 and "preview_max_range_s" in r.json()["detail"][0]["msg"]


# -- alerts ---------------------------------------------------------------------------------------------


def _write_alerts(cfg, n: int, cam: str = "gate", rule_id: str = "gate-zone") -> list[dict]:
    """``n`` started alerts of distinct tracks, written the way the alert service writes them."""
    engine = RuleEngine(
        {"rules": [{"id": rule_id, "type": "zone_intrusion", "zone": ZONE, "cooldown_s": 0}]}
    )
    store = AlertStore(cfg.redis)
    messages = []
    t0 = time.time() - 100
    for i in range(n):
        box = (0.01 + 0.09 * (i % 10), 0.1, 0.08 + 0.09 * (i % 10), 0.2 + 0.07 * (i // 10))
        msg = _det_msg(cam, t0 + i, i + 1, box)
        for ev in engine.process(msg):
            messages.append(ev.to_dict())
            store.write_alert(AlertWrite(ev.to_dict(), t0 + i, snapshot=_jpeg(40 + i)))
    return messages


def test_alert_list_filters_pages_and_one_alert(stack):
    cfg, viewer = stack.cfg, stack.login("viewer")
    written = _write_alerts(cfg, 7)
    started = [m for m in written if m["status"] == "started"]
    assert len(started) >= 5
    pages, before = [], None
    while True:
        q = {"limit": 2, "camera": "gate", "status": "started"}
        if before:
            q["before"] = before
        page = viewer.get("/api/alerts", params=q).json()
        pages.append([(a["id"], a["status"]) for a in page["items"]])
        if page["next"] is None:
            break
        before = page["next"]
        if len(pages) == 2:  # a new alert arriving meanwhile does not shift the pages
            _write_alerts(cfg, 1, rule_id="late-rule")
    seen = [x for p in pages for x in p]
    assert len(seen) == len(set(seen)) == len(started)
    assert [i for i, _ in seen] == [m["id"] for m in reversed(started)]
    assert all(len(p) <= 2 for p in pages)
    only = viewer.get("/api/alerts", params={"rule": "late-rule"}).json()["items"]
    assert {a["rule_id"] for a in only} == {"late-rule"}
    assert viewer.get("/api/alerts", params={"severity": "critical"}).json()["items"] == []
    one = viewer.get(f"/api/alerts/{started[0]['id']}").json()
    assert one["camera_id"] == "gate" and one["rule_id"] == "gate-zone" and one["snapshot"]
    snap = viewer.get(f"/api/alerts/{started[0]['id']}/snapshot.jpg")
    assert snap.status_code == 200 and snap.content[:2] == b"\xff\xd8"
    assert viewer.get("/api/alerts/0123456789abcdef0123").status_code == 404
    assert viewer.get("/api/alerts/0123456789abcdef0123/snapshot.jpg").status_code == 404
    r = viewer.get("/api/alerts", params={"before": "not-an-id"})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"][-1] == "before"


def test_sse_delivers_new_alerts_and_resumes_after_last_event_id(stack):
    cfg, viewer = stack.cfg, stack.login("viewer")
    cam = f"sse{uuid.uuid4().hex[:6]}"
    first = _write_alerts(cfg, 3, cam=cam)
    stream_ids = [
        sid.decode() for sid, _ in stack.users.client.xrange(AlertStore(cfg.redis).stream_key(cam))
    ]
    assert len(stream_ids) == len(first)

    def read_events(n: int, headers: dict) -> list[tuple[str, dict]]:
        got, cur = [], {}
        with viewer.stream(
            "GET", "/api/alerts/events", params={"camera": cam}, headers=headers
        ) as r:
            assert r.headers["content-type"].startswith("text/event-stream")
            for line in r.iter_lines():
                if line.startswith("id: "):
                    cur["id"] = line[4:]
                elif line.startswith("data: "):
                    got.append((cur["id"], json.loads(line[6:])))
                    if len(got) == n:
                        break
        return got

    resumed = read_events(len(first) - 1, {"Last-Event-ID": stream_ids[0]})
    assert [i for i, _ in resumed] == stream_ids[1:]
    assert [m["id"] for _, m in resumed] == [m["id"] for m in first[1:]]


def test_review_marks_the_alert_feeds_the_dataset_and_tells_subscribers(stack):
    from alerts.engine import RuleEngine as Engine

    cfg, op = stack.cfg, stack.login("operator")
    cam = f"rev{uuid.uuid4().hex[:6]}"
    engine = Engine({"rules": [{"id": "rev-zone", "type": "zone_intrusion", "zone": ZONE}]})
    msg = _det_msg(cam, time.time() - 5, 1, (0.2, 0.2, 0.5, 0.9))
    msg["detections"].append(
        {"class_id": 0, "label": "person", "confidence": 0.7, "box": [0.6, 0.1, 0.7, 0.4]}
    )
    ev = engine.process(msg)[0].to_dict()
    store = AlertStore(cfg.redis)
    store.write_alert(AlertWrite(ev, msg["capture_ts"], snapshot=_jpeg()))
    keys, client = stack.users.keys, stack.users.client
    client.set(keys.source_frame(ev["id"]), _jpeg(70))
    dets = [
        {"label": d["label"], "confidence": d["confidence"], "box": d["box"], "track_id": None}
        for d in msg["detections"]
    ]
    client.hset(keys.alert(ev["id"]), "frame_detections", json.dumps(dets))
    body = {"verdict": "false_positive", "note": "a coat on a chair"}
    assert (
        stack.login("viewer").post(f"/api/alerts/{ev['id']}/review", json=body).status_code == 403
    )
    assert op.post(f"/api/alerts/{ev['id']}/review", json={"verdict": "maybe"}).status_code == 422
    assert op.post("/api/alerts/0123456789abcdef0123/review", json=body).status_code == 404
    reader = TopicReader(cfg, cfg.kafka.topics.reviews)  # the reviews' own topic
    r = op.post(f"/api/alerts/{ev['id']}/review", json=body)
    assert r.status_code == 200, r.text
    image = r.json()["review_image"]
    assert image
    one = op.get(f"/api/alerts/{ev['id']}").json()
    assert one["review"] == "false_positive" and one["reviewed_by"] == "operator"
    assert one["review_note"] == "a coat on a chair"
    root = Path(cfg.collection.dir)
    assert (root / image).is_file()
    lines = label_path(root, image).read_text().splitlines()
    # the wrong box is gone, the other person stays (a hard negative with one label left)
    assert len(lines) == 1 and lines[0].split()[0] == "0"
    cx = float(lines[0].split()[1])
    assert abs(cx - 0.65) < 0.01
    reviewed = reader.until(
        lambda recs: any((x["value"] or {}).get("status") == "reviewed" for x in recs), 20
    )
    event = next(x for x in reviewed if (x["value"] or {}).get("status") == "reviewed")
    assert event["key"] == cam and event["value"]["id"] == ev["id"]
    assert event["value"]["review"]["verdict"] == "false_positive"


# -- models ----------------------------------------------------------------------------------------------


def test_models_page_and_promotion_roles(stack):
    viewer, op, admin = stack.login("viewer"), stack.login("operator"), stack.login("admin")
    r = viewer.get("/api/models")
    assert r.status_code == 200 and r.json()["versions"] == []
    assert op.post("/api/models/promote", json={"ref": "v1"}).status_code == 403
    r = admin.post("/api/models/promote", json={"ref": "v9"})
    assert r.status_code == 422 and "v9" in r.json()["detail"]
    r = admin.post("/api/models/rollback", json={})
    assert r.status_code == 422 and "no production model" in r.json()["detail"]


# -- services away ---------------------------------------------------------------------------------------


def test_redis_down_is_a_clear_503(kafka_bootstrap):
    port = free_port()
    data = make_config_dict(kafka_bootstrap, console={"port": free_port()})
    data["redis"]["url"] = f"redis://127.0.0.1:{port}/0"
    data["redis"]["socket_timeout_s"] = 1
    server = ConsoleServer(parse_config(data, "test")).start()
    try:
        c = httpx.Client(base_url=server.url, timeout=30)
        r = c.post("/api/login", json={"username": "admin", "password": PASSWORD})
        assert r.status_code == 503
        assert r.json()["detail"].startswith("Redis is unavailable")
        assert str(port) not in r.text  # anonymous answers name no address
        assert c.get("/readyz").status_code == 503
        assert c.get("/healthz").status_code == 200
    finally:
        server.stop()


def test_kafka_down_is_a_clear_503_and_the_review_is_kept(stack):
    data = make_config_dict("127.0.0.1:1", console={"port": free_port()})
    data["redis"] = {**data["redis"], "key_prefix": stack.cfg.redis.key_prefix}
    data["kafka"]["topics"] = stack.cfg.kafka.model_dump()["topics"]
    cfg = parse_config(data, "test")
    server = ConsoleServer(cfg).start()
    try:
        c = httpx.Client(base_url=server.url, timeout=60)
        me = c.post("/api/login", json={"username": "operator", "password": PASSWORD})
        assert me.status_code == 200
        c.headers["X-CSRF-Token"] = me.json()["csrf_token"]
        r = c.post("/api/cameras", json={"id": "k", "url": "rtsp://127.0.0.1:9/k"})
        assert r.status_code == 503 and "Kafka at 127.0.0.1:1" in r.json()["detail"]
        assert c.get("/readyz").status_code == 503
        # alerts are in Redis: they stay readable while Kafka is away
        assert c.get("/api/alerts").status_code == 200
        # a review is kept in Redis even though subscribers cannot be told now
        alert = _write_alerts(stack.cfg, 1, cam="kdown")[0]
        r = c.post(f"/api/alerts/{alert['id']}/review", json={"verdict": "true_positive"})
        assert r.status_code == 503 and "Kafka" in r.json()["detail"]
        assert c.get(f"/api/alerts/{alert['id']}").json()["review"] == "true_positive"
    finally:
        server.stop()


def test_tls_when_given_a_certificate_and_key(kafka_bootstrap, tmp_path):
    """HTTPS with the configured certificate; the session cookie is then Secure."""
    import subprocess

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
         "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key),
         "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    data = make_config_dict(
        kafka_bootstrap,
        console={"port": free_port(), "tls_cert": str(cert), "tls_key": str(key)},
    )
    cfg = parse_config(data, "test")
    UserStore(cfg.redis).add("tls-user", PASSWORD, "viewer")
    server = ConsoleServer(cfg).start()
    try:
        assert server.url.startswith("https://")
        c = httpx.Client(base_url=server.url, timeout=30, verify=str(cert))
        r = c.post("/api/login", json={"username": "tls-user", "password": PASSWORD})
        assert r.status_code == 200
        assert "secure" in r.headers["set-cookie"].lower()
        with pytest.raises(httpx.HTTPError):  # plain HTTP on the TLS port does not work
            httpx.get(server.url.replace("https://", "http://") + "healthz", timeout=5)
    finally:
        server.stop()
        UserStore(cfg.redis).remove("tls-user")
