"""Console sessions, API tokens and login throttling against the real Redis and the real app
(uvicorn on a free port): what ends a session or token, token listing/revocation/expiry, who may
mint tokens, the absolute session lifetime, and login guessing under parallel requests."""

from __future__ import annotations

import getpass
import io
import sys
import threading
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest

import pipeline.console.auth as auth
from pipeline.cli import main as vigil_main
from tests.support.cli import run_detector_cli, run_vigil
from tests.support.console import PASSWORD, ConsoleStack, console_stack, freeze_clock

pytestmark = pytest.mark.integration

NEW_PASSWORD = "staple battery horse"
LIMIT = 5  # console.login_attempts_per_minute here


@pytest.fixture(scope="module")
def stack(kafka_bootstrap, tmp_path_factory) -> Iterator[ConsoleStack]:
    with console_stack(
        kafka_bootstrap,
        tmp_path_factory.mktemp("cfg"),
        console={"login_attempts_per_minute": LIMIT},  # login_concurrency 2
        roles=["admin"],
        ready=False,
    ) as s:
        yield s


def mint(session: httpx.Client, **body) -> dict:
    r = session.post("/api/tokens", json={"name": "ci", **body})
    assert r.status_code == 201, r.text
    return r.json()


def me(stack, session: httpx.Client | None = None, token: str | None = None) -> int:
    c = session if session is not None else stack.client(token=token)
    return c.get("/api/me").status_code


# -- what ends sessions and tokens ---------------------------------------------------------------


def test_password_change_ends_old_sessions_and_tokens(stack):
    name = stack.new_user()
    session = stack.login(name)
    token = mint(session)["token"]
    assert me(stack, session) == 200 and me(stack, token=token) == 200
    stack.users.add(name, NEW_PASSWORD, "viewer")  # `vigil users add` = password reset
    assert me(stack, session) == 401
    assert me(stack, token=token) == 401
    assert me(stack, stack.login(name, NEW_PASSWORD)) == 200  # the new password works


def test_role_change_ends_old_sessions_and_tokens(stack):
    name = stack.new_user("viewer")
    session = stack.login(name)
    token = mint(session)["token"]
    stack.users.add(name, PASSWORD, "operator")  # same password, new role
    assert me(stack, session) == 401
    assert me(stack, token=token) == 401
    fresh = stack.login(name)
    assert fresh.get("/api/me").json()["role"] == "operator"


def test_removal_ends_sessions_and_tokens_and_readding_does_not_revive_them(stack):
    name = stack.new_user()
    session = stack.login(name)
    token = mint(session)["token"]
    stack.users.remove(name)
    assert me(stack, session) == 401 and me(stack, token=token) == 401
    stack.users.add(name, PASSWORD, "admin")  # the name given to someone else, with more power
    assert me(stack, token=token) == 401
    assert me(stack, session) == 401
    assert me(stack, stack.login(name)) == 200


def test_tokens_expire_and_sessions_have_an_absolute_lifetime(stack, monkeypatch):
    cc = stack.cfg.console
    assert cc.token_ttl_s == 90 * 86400 and cc.session_max_age_s == 12 * 3600  # the defaults
    name = stack.new_user()
    session = stack.login(name)
    minted = mint(session)
    assert minted["expires_at"] - minted["created_at"] == pytest.approx(cc.token_ttl_s)
    start = time.time()
    clock = {"now": start}
    monkeypatch.setattr(stack.server_users, "clock", lambda: clock["now"])
    # used every 20 minutes (so never idle) the session still ends 12 h after login
    for _ in range(35):
        clock["now"] += 20 * 60
        assert me(stack, session) == 200
    clock["now"] = start + cc.session_max_age_s + 1
    assert me(stack, session) == 401
    assert me(stack, token=minted["token"]) == 200  # 12 h: the token still lives
    clock["now"] = start + cc.token_ttl_s + 1
    assert me(stack, token=minted["token"]) == 401


def test_a_session_idle_for_session_ttl_s_ends_and_one_in_use_goes_on(stack, monkeypatch):
    idle_s = 2  # console.session_ttl_s, set below its floor of 60 s so the test can wait it out
    monkeypatch.setattr(stack.cfg.console, "session_ttl_s", idle_s)
    name = stack.new_user()
    busy, idle = stack.login(name), stack.login(name)
    # used every idle_s / 8, one session outlives idle_s
    until = time.monotonic() + 1.25 * idle_s
    while time.monotonic() < until:
        assert me(stack, busy) == 200
        time.sleep(idle_s / 8)
    # the other, without a request since its login (more than idle_s ago), has ended
    assert me(stack, idle) == 401
    # and the busy one ends once it is left idle as long
    time.sleep(idle_s + 0.5)
    assert me(stack, busy) == 401
    assert me(stack, stack.login(name)) == 200  # the user just logs in again


# -- listing, revoking and minting tokens --------------------------------------------------------


def test_list_and_revoke_tokens_via_the_api(stack):
    name = stack.new_user()
    session = stack.login(name)
    first, second = mint(session, name="backup"), mint(session, name="grafana")
    assert me(stack, token=first["token"]) == 200
    r = session.get("/api/tokens")
    assert r.status_code == 200
    listed = {t["id"]: t for t in r.json()}
    assert set(listed) == {first["id"], second["id"]}
    assert listed[first["id"]]["name"] == "backup"
    assert listed[first["id"]]["last_used_at"] is not None  # just used above
    assert listed[second["id"]]["last_used_at"] is None
    assert first["token"] not in r.text and second["token"] not in r.text
    assert session.delete(f"/api/tokens/{first['id']}").status_code == 204
    assert me(stack, token=first["token"]) == 401
    assert me(stack, token=second["token"]) == 200
    assert [t["id"] for t in session.get("/api/tokens").json()] == [second["id"]]
    r = session.delete(f"/api/tokens/{first['id']}")
    assert r.status_code == 404 and first["id"] in r.json()["detail"]
    r = session.delete("/api/tokens/nope")
    assert r.status_code == 422 and "'nope'" in r.json()["detail"]


def test_list_and_revoke_tokens_via_the_cli(stack, capsys):
    name = stack.new_user()
    cfg = ["-c", stack.config_file]
    code, out, made = run_detector_cli(["users", "token", name, "--label", "backup", *cfg], capsys)
    assert code == 0, made
    token = out.strip()
    assert token.startswith("vgl_") and me(stack, token=token) == 200
    code, out, err = run_detector_cli(["users", "tokens", name, *cfg], capsys)
    assert code == 0, err
    assert token not in out and "backup" in out
    token_id = out.splitlines()[1].split()[0]
    assert token_id in made  # `users token` named it
    code, out, err = run_detector_cli(["users", "revoke-token", name, token_id, *cfg], capsys)
    assert code == 0 and f"revoked token {token_id}" in out, err
    assert me(stack, token=token) == 401
    code, out, err = run_detector_cli(["users", "revoke-token", name, token_id, *cfg], capsys)
    assert code != 0 and token_id in err
    code, out, _ = run_detector_cli(["users", "tokens", name, *cfg], capsys)
    assert code == 0 and "no API tokens" in out


def test_vigil_users_add_and_token_make_a_user_who_logs_in_and_a_token_that_works(
    stack, capsys, monkeypatch
):
    cfg = ["-c", stack.config_file]
    name, password, changed = f"cli{uuid.uuid4().hex[:6]}", "Cli-added-S3cret", "Cli-reset-S3cret"

    def vigil(*argv: str, stdin: str = "") -> tuple[int, str, str]:
        return run_vigil([*argv, *cfg], capsys, monkeypatch, stdin)

    code, out, err = vigil("users", "add", name, "--role", "operator", "--password-stdin",
                           stdin=password + "\n")  # fmt: skip
    assert code == 0, err
    assert f"user {name}: role operator" in out and password not in out + err
    session = stack.login(name, password)
    assert session.get("/api/me").json()["role"] == "operator"
    code, out, _ = vigil("users", "list")
    assert code == 0 and any(line.split() == [name, "operator"] for line in out.splitlines())
    # piped without --password-stdin (not a terminal): read the same way. A new password and
    # role end the old session, and the old password no longer works.
    code, out, err = vigil("users", "add", name, "--role", "viewer", stdin=changed + "\n")
    assert code == 0, err
    assert changed not in out + err and password not in out + err
    assert me(stack, session) == 401
    refused = stack.client().post("/api/login", json={"username": name, "password": password})
    assert refused.status_code == 401
    assert stack.login(name, changed).get("/api/me").json()["role"] == "viewer"
    # a password too short is refused without being echoed, and makes no user
    other, short = f"cli{uuid.uuid4().hex[:6]}", "Sh0rt-7"
    code, out, err = vigil("users", "add", other, "--role", "admin", "--password-stdin",
                           stdin=short + "\n")  # fmt: skip
    assert code == 2 and "at least 8 characters" in err, err
    assert short not in out + err and stack.users.role_of(other) is None

    code, out, err = vigil("users", "token", name, "--label", "grafana")
    assert code == 0, err
    token, *rest = out.splitlines()
    assert rest == [] and token.startswith("vgl_")  # alone on stdout, for scripts
    assert token not in err
    api = stack.client(token=token)
    assert {k: api.get("/api/me").json()[k] for k in ("user", "role")} == {
        "user": name,
        "role": "viewer",
    }
    r = api.post("/api/cameras", json={"id": "tok", "url": "rtsp://127.0.0.1:9/t"})
    assert r.status_code == 403  # it acts with the user's role
    code, out, err = vigil("users", "token", "nobody-here")
    assert code == 2 and out == "" and "nobody-here" in err


def test_vigil_users_add_on_a_terminal_asks_twice(stack, capsys, monkeypatch):
    cfg = ["-c", stack.config_file]
    name, password = f"tty{uuid.uuid4().hex[:6]}", "Typed-S3cret-pw"
    tty = io.StringIO()
    tty.isatty = lambda: True  # type: ignore[method-assign]
    monkeypatch.setattr(sys, "stdin", tty)
    typed = iter([password, password + "x"])
    monkeypatch.setattr(getpass, "getpass", lambda prompt="": next(typed))
    code = vigil_main(["users", "add", name, "--role", "viewer", *cfg])
    out, err = capsys.readouterr()
    assert code == 2 and "differ" in err and password not in out + err
    assert stack.users.role_of(name) is None
    typed = iter([password, password])
    assert vigil_main(["users", "add", name, "--role", "viewer", *cfg]) == 0
    out, err = capsys.readouterr()
    assert password not in out + err
    assert stack.login(name, password).get("/api/me").json()["role"] == "viewer"


def test_a_token_cannot_mint_tokens_and_only_admins_mint_for_others(stack):
    viewer = stack.new_user("viewer")
    session = stack.login(viewer)
    token = mint(session)["token"]
    r = stack.client(token=token).post("/api/tokens", json={"name": "more"})
    assert r.status_code == 403 and "token" in r.json()["detail"]
    admin_token = mint(stack.login("admin"))["token"]
    assert stack.client(token=admin_token).post("/api/tokens", json={}).status_code == 403
    assert session.post("/api/tokens", json={"name": "x", "user": "admin"}).status_code == 403
    assert session.get("/api/tokens", params={"user": "admin"}).status_code == 403
    admin = stack.login("admin")
    minted = mint(admin, user=viewer)
    assert minted["user"] == viewer and minted["role"] == "viewer"
    assert stack.client(token=minted["token"]).get("/api/me").json()["user"] == viewer
    listed = admin.get("/api/tokens", params={"user": viewer}).json()
    assert minted["id"] in [t["id"] for t in listed]
    r = admin.delete(f"/api/tokens/{minted['id']}", params={"user": viewer})
    assert r.status_code == 204 and me(stack, token=minted["token"]) == 401


def test_still_valid_follows_logout_revocation_and_role_changes(stack):
    """The check long responses (streams) repeat: what ended the credential ends it too."""
    users = stack.users
    name = stack.new_user("operator")
    sid, who = users.new_session(name, "operator", 3600, 3600)
    assert users.still_valid(who, "operator")
    users.end_session(sid)
    assert not users.still_valid(who)
    token, _ = users.new_token(name, "cam-wall", 3600)
    by_token = users.token(token)
    assert by_token is not None and users.still_valid(by_token, "viewer")
    _, other = users.new_session(name, "operator", 3600, 3600)
    users.add(name, PASSWORD, "viewer")  # demoted
    assert not users.still_valid(by_token) and not users.still_valid(other)


# -- login throttling ----------------------------------------------------------------------------


class CountingHasher:
    """The real hasher, counting (and timing) its verifications."""

    def __init__(self, real, delay_s: float = 0.0) -> None:
        self.real, self.delay_s = real, delay_s
        self.calls = self.running = self.most = 0
        self.lock = threading.Lock()

    def verify(self, stored: str, password: str) -> bool:
        with self.lock:
            self.calls += 1
            self.running += 1
            self.most = max(self.most, self.running)
        try:
            time.sleep(self.delay_s)
            return self.real.verify(stored, password)
        finally:
            with self.lock:
                self.running -= 1

    def __getattr__(self, name: str):
        return getattr(self.real, name)


def parallel_logins(stack, attempts: list[tuple[str, str]], addr: str) -> list[int]:
    """POST /api/login for every (name, password) at once from ``addr``; the status codes."""
    codes: list[int] = [0] * len(attempts)
    barrier = threading.Barrier(len(attempts))

    def one(i: int) -> None:
        with stack.client(addr) as c:
            barrier.wait()
            body = {"username": attempts[i][0], "password": attempts[i][1]}
            codes[i] = c.post("/api/login", json=body).status_code

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(attempts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return codes


def test_parallel_wrong_logins_get_at_most_the_limit_of_password_checks(stack, monkeypatch):
    freeze_clock(stack, monkeypatch, time.time())  # all attempts in one window, however slow
    name = stack.new_user()
    hasher = CountingHasher(auth._hasher, delay_s=0.05)
    monkeypatch.setattr(auth, "_hasher", hasher)
    codes = parallel_logins(stack, [(name, f"guess{i}") for i in range(20)], "127.0.0.5")
    assert hasher.calls <= LIMIT, (hasher.calls, codes)
    assert set(codes) <= {401, 429, 503}, codes
    assert codes.count(429) >= 20 - LIMIT, codes


def test_a_stranger_cannot_lock_the_admin_out_from_another_address(stack, monkeypatch):
    freeze_clock(stack, monkeypatch, time.time())  # all attempts in one window, however slow
    stranger = stack.client("127.0.0.2")
    codes = [
        stranger.post("/api/login", json={"username": "admin", "password": "guess"}).status_code
        for _ in range(LIMIT + 2)
    ]
    assert codes == [401] * LIMIT + [429, 429], codes
    assert me(stack, stack.login("admin", addr="127.0.0.1")) == 200
    # one address guessing many names: test_one_address_gets_4x_the_per_name_limit_across_names


def test_one_address_gets_4x_the_per_name_limit_across_names_then_429_for_anyone(
    stack, monkeypatch
):
    """The per-address limit, apart from the per-name one: every name below its own limit."""
    clock = freeze_clock(stack, monkeypatch, time.time())
    per_address = 4 * LIMIT
    victim = stack.new_user()
    office = stack.client("127.0.0.7")

    def attempt(c: httpx.Client, name: str, password: str = "guess") -> httpx.Response:
        return c.post("/api/login", json={"username": name, "password": password})

    names = [f"s{i}{uuid.uuid4().hex[:4]}" for i in range(per_address // (LIMIT - 1) + 1)]
    failures = [n for n in names for _ in range(LIMIT - 1)][: per_address - 1]
    codes = [attempt(office, n).status_code for n in failures]
    assert codes == [401] * (per_address - 1), codes
    # a right password does not use up the address's allowance...
    assert attempt(office, victim, PASSWORD).status_code == 200
    assert attempt(office, names[-1]).status_code == 401  # the last failure it allows
    # ...but once the address is used up, no one logs in from it, right password or not
    r = attempt(office, victim, PASSWORD)
    assert r.status_code == 429 and r.headers["retry-after"] == "60"
    assert attempt(office, f"fresh{uuid.uuid4().hex[:4]}").status_code == 429
    assert attempt(stack.client("127.0.0.8"), victim, PASSWORD).status_code == 200  # elsewhere
    clock.advance(60.05)  # a minute after the first failure the address may try again
    assert attempt(office, victim, PASSWORD).status_code == 200


def test_a_successful_login_forgives_that_names_failures_from_that_address(stack, monkeypatch):
    freeze_clock(stack, monkeypatch, time.time())
    name = stack.new_user()
    c = stack.client("127.0.0.9")
    for _ in range(2):
        codes = [
            c.post("/api/login", json={"username": name, "password": "typo"}).status_code
            for _ in range(LIMIT - 1)
        ]
        assert codes == [401] * (LIMIT - 1), codes
        r = c.post("/api/login", json={"username": name, "password": PASSWORD})
        assert r.status_code == 200, r.text


def test_password_checks_run_at_most_login_concurrency_at_once(stack, monkeypatch):
    hasher = CountingHasher(auth._hasher, delay_s=0.4)
    monkeypatch.setattr(auth, "_hasher", hasher)
    codes = parallel_logins(stack, [(f"x{i}", "guess") for i in range(8)], "127.0.0.4")
    assert hasher.most <= 2, (hasher.most, codes)  # console.login_concurrency's default
    assert set(codes) <= {401, 503} and 503 in codes, codes  # the excess is turned away...
    assert hasher.calls == codes.count(401), (hasher.calls, codes)  # ...without a check


def test_login_bodies_are_bounded_and_errors_do_not_echo_passwords(stack):
    c = stack.client("127.0.0.6")
    r = c.post("/api/login", content=b'{"username": "admin", "password": "' + b"x" * 100_000)
    assert r.status_code == 413 and "login body" in r.json()["detail"]
    secret = "hunter2-" + "y" * 1100  # longer than a password may be
    r = c.post("/api/login", json={"username": "admin", "password": secret})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "password"]
    assert "hunter2" not in r.text
