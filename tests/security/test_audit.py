"""The audit trail: every change made in the console or the CLI says who, what, when and from
where, never holds a secret, and only admins read it (``GET /api/audit``, ``vigil audit tail``)."""

from __future__ import annotations

import getpass
import json
import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.support.cli import run_vigil
from tests.support.console import PASSWORD, ConsoleStack, console_stack

pytestmark = pytest.mark.integration

CAM_PASSWORD = "Cam-S3cret-pw"
NEW_USER_PASSWORD = "New-user-S3cret"
SECRETS = (PASSWORD, CAM_PASSWORD, NEW_USER_PASSWORD)


@pytest.fixture(scope="module")
def stack(kafka_bootstrap, tmp_path_factory) -> Iterator[ConsoleStack]:
    with console_stack(kafka_bootstrap, tmp_path_factory.mktemp("audit")) as s:
        yield s


def raw_stream(stack) -> str:
    """Everything the audit stream holds, as stored in Redis."""
    key = f"{stack.cfg.redis.key_prefix}audit"
    rows = stack.users.client.xrange(key)
    return repr(rows)


def vigil(capsys, monkeypatch, *argv: str, stdin: str = "") -> tuple[int, str, str]:
    return run_vigil(list(argv), capsys, monkeypatch, stdin)


def test_console_changes_are_recorded_with_who_what_when_where(stack):
    op = stack.login("operator")
    t0 = time.time()
    url = f"rtsp://admin:{CAM_PASSWORD}@10.9.8.7:554/door"
    assert op.post("/api/cameras", json={"id": "door", "url": url}).status_code == 201
    assert op.patch("/api/cameras/door", json={"fps": 2}).status_code == 200
    assert op.delete("/api/cameras/door").status_code == 204
    zone = [[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]]
    rule = {"type": "zone_intrusion", "zone": zone, "classes": ["person"], "cameras": ["door"]}
    r = op.put("/api/rules/door-zone", json=rule)
    assert r.status_code == 200, r.text
    assert op.delete("/api/rules/door-zone").status_code == 204
    admin = stack.login("admin")
    r = admin.post(
        "/api/users", json={"username": "carol", "password": NEW_USER_PASSWORD, "role": "viewer"}
    )
    assert r.status_code == 201
    token = admin.post("/api/tokens", json={"name": "ci"}).json()["token"]

    r = admin.get("/api/audit", params={"n": 50})
    assert r.status_code == 200
    entries = r.json()  # newest first
    mine = [e for e in entries if e["at"] >= t0 - 1]
    got = [(e["action"], e["target"], e["who"]) for e in reversed(mine)]
    assert got == [
        ("camera.add", "door", "operator"),
        ("camera.update", "door", "operator"),
        ("camera.delete", "door", "operator"),
        ("rule.save", "door-zone", "operator"),
        ("rule.delete", "door-zone", "operator"),
        ("user.add", "carol", "admin"),
        ("token.create", "admin", "admin"),
    ]
    for e in mine:
        assert e["address"] == "127.0.0.1" and e["via"] == "console/session"
        assert t0 - 1 <= e["at"] <= time.time() + 1
    add = next(e for e in mine if e["action"] == "camera.add")
    assert add["details"]["url"] == "rtsp://admin:***@10.9.8.7:554/door"
    assert next(e for e in mine if e["action"] == "camera.update")["details"] == {"fps": 2.0}
    assert next(e for e in mine if e["action"] == "user.add")["details"] == {"role": "viewer"}
    # no secret in the API answer, nor in Redis
    for text in (r.text, raw_stream(stack)):
        for secret in (*SECRETS, token):
            assert secret not in text

    # an API token is named as the way in
    bearer = stack.client(token=token)
    assert bearer.post("/api/cameras", json={"id": "gate", "url": "rtsp://10.9.8.6/g"}).status_code
    last = admin.get("/api/audit", params={"n": 1}).json()[0]
    assert (last["action"], last["who"], last["via"]) == ("camera.add", "admin", "console/token")


def test_only_admins_read_the_audit_trail(stack):
    for role in ("viewer", "operator"):
        r = stack.login(role).get("/api/audit")
        assert r.status_code == 403, role
        assert "needs role admin" in r.json()["detail"]
    assert httpx.get(f"{stack.base}/api/audit", timeout=10).status_code == 401
    assert stack.login("admin").get("/api/audit").status_code == 200


def test_cli_changes_are_recorded_as_the_os_user(stack, capsys, monkeypatch):
    cfg = stack.config_file
    t0 = time.time()
    code, _, err = vigil(
        capsys, monkeypatch, "users", "add", "dave", "--role", "operator", "-c", cfg,
        stdin=NEW_USER_PASSWORD + "\n",
    )  # fmt: skip
    assert code == 0, err
    code, _, err = vigil(
        capsys, monkeypatch, "cameras", "add", "yard", "rtsp://admin@10.9.8.5/y",
        "--password-stdin", "-c", cfg, stdin=CAM_PASSWORD + "\n",
    )  # fmt: skip
    assert code == 0, err
    assert vigil(capsys, monkeypatch, "cameras", "remove", "yard", "-c", cfg)[0] == 0
    assert vigil(capsys, monkeypatch, "users", "remove", "dave", "-c", cfg)[0] == 0

    code, out, err = vigil(capsys, monkeypatch, "audit", "tail", "-n", "4", "--json", "-c", cfg)
    assert code == 0, err
    entries = [json.loads(line) for line in out.splitlines()]  # oldest first
    assert [(e["action"], e["target"]) for e in entries] == [
        ("user.add", "dave"),
        ("camera.add", "yard"),
        ("camera.delete", "yard"),
        ("user.remove", "dave"),
    ]
    for e in entries:
        assert e["who"] == getpass.getuser() and e["via"] == "cli"
        assert e["address"] == socket.gethostname()
        assert t0 - 1 <= e["at"] <= time.time() + 1
    assert entries[1]["details"]["url"] == "rtsp://admin:***@10.9.8.5/y"
    assert entries[0]["details"] == {"role": "operator"}

    code, out, _ = vigil(capsys, monkeypatch, "audit", "tail", "-n", "2", "-c", cfg)
    lines = out.splitlines()
    assert len(lines) == 2 and "camera.delete" in lines[0] and "user.remove" in lines[1]
    assert getpass.getuser() in lines[1] and "dave" in lines[1]
    for text in (out, raw_stream(stack)):
        for secret in SECRETS:
            assert secret not in text
