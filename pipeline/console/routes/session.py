"""``/api/login``, ``/api/logout``, ``/api/me``, API tokens and users."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field, ValidationError

from pipeline.console import audit
from pipeline.console.auth import AuthError, LoginBusy, Principal, Role
from pipeline.console.state import (
    SESSION_COOKIE,
    ConsoleState,
    _principal,
    as_admin,
    client_addr,
    principal,
    state,
)

router = APIRouter(prefix="/api", tags=["session"])

LOGIN_BODY_MAX = 4096  # bytes: a name of 64 and a password of 1024 fit many times over


class Login(BaseModel):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)


class NewToken(BaseModel):
    name: str = Field("script", min_length=1, max_length=64)
    user: str | None = Field(
        None, min_length=1, max_length=64, description="whose token (admins only); default: yours"
    )


class NewUser(BaseModel):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=8, max_length=1024)
    role: Role


def _me(who: Principal) -> dict:
    return {"user": who.user, "role": who.role, "csrf_token": who.csrf}


async def _login_body(request: Request) -> Login:
    """The login body, read up to ``LOGIN_BODY_MAX`` bytes (413 past it, before parsing any of
    it); 422 errors name the field but never echo the input (it may be a password)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > LOGIN_BODY_MAX:
        raise HTTPException(413, f"login body: at most {LOGIN_BODY_MAX} bytes")
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > LOGIN_BODY_MAX:
            raise HTTPException(413, f"login body: at most {LOGIN_BODY_MAX} bytes")
    try:
        return Login.model_validate_json(bytes(raw))
    except ValidationError as e:
        errors = e.errors(include_url=False, include_input=False, include_context=False)
        raise RequestValidationError(
            [{**err, "loc": ("body", *err["loc"])} for err in errors]
        ) from None


def _check_login(st: ConsoleState, body: Login, addr: str) -> tuple[str, Principal]:
    """Count the attempt, then check the password (a bounded number at once), then a session."""
    cc = st.cfg.console
    attempt = st.users.login_attempt(body.username, addr, cc.login_attempts_per_minute)
    if attempt is None:
        raise HTTPException(
            429, "too many login attempts; wait a minute", headers={"Retry-After": "60"}
        )
    try:
        role = st.users.authenticate(body.username, body.password)
    except LoginBusy as e:
        st.users.login_not_checked(body.username, addr, attempt)
        raise HTTPException(503, str(e), headers={"Retry-After": "1"}) from None
    if role is not None:
        st.users.login_succeeded(body.username, addr, attempt)
        try:
            return st.users.new_session(body.username, role, cc.session_ttl_s, cc.session_max_age_s)
        except AuthError:  # removed meanwhile
            pass
    raise HTTPException(401, "wrong user name or password")


@router.post(
    "/login",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": Login.model_json_schema()}},
        }
    },
)
async def login(request: Request, response: Response, st: ConsoleState = Depends(state)):
    """Log in: a session cookie (and its CSRF token). Attempts are counted before the password
    is checked, per name and client address and per address (429 past them)."""
    body = await _login_body(request)
    sid, who = await run_in_threadpool(_check_login, st, body, client_addr(request))
    response.set_cookie(
        SESSION_COOKIE,
        sid,
        max_age=st.cfg.console.session_max_age_s,
        httponly=True,
        samesite="strict",
        secure=st.cfg.console.https,
        path="/",
    )
    return _me(who)


@router.post("/logout")
def logout(
    request: Request,
    response: Response,
    who: Principal = Depends(principal),
    st: ConsoleState = Depends(state),
):
    sid = request.cookies.get(SESSION_COOKIE)
    if sid:
        st.users.end_session(sid)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return {"user": who.user, "logged_out": True}


@router.get("/me")
def me(who: Principal = Depends(principal)):
    return _me(who)


@router.get("/session")
def session_probe(request: Request, st: ConsoleState = Depends(state)):
    """Whether the caller is logged in: ``{logged_in: false}`` (200, not 401) when not, else
    ``/api/me``'s answer with ``logged_in: true``. The page asks it when it opens, so that the
    expected "not logged in" is not a failed request in the browser's console. It grants
    nothing: the session is checked exactly as every other call checks it."""
    who = _principal(request, st)
    if who is None:
        return {"logged_in": False}
    return {"logged_in": True, **_me(who)}


def _whose(who: Principal, user: str | None) -> str:
    """The user whose tokens the caller names: themselves, or anyone for admins (else 403)."""
    if user is None or user == who.user:
        return who.user
    if not who.may("admin"):
        raise HTTPException(403, f"only admins manage other users' tokens (you are {who.role})")
    return user


@router.post("/tokens", status_code=201)
def new_token(
    body: NewToken,
    request: Request,
    who: Principal = Depends(principal),
    st: ConsoleState = Depends(state),
):
    """An API token acting as the caller, or (admins) as ``user``, with that user's role; shown
    once. Only a logged-in session mints tokens: a leaked token cannot make itself more."""
    if who.via != "session":
        raise HTTPException(
            403, "an API token cannot make tokens: log in, or use `vigil users token`"
        )
    user = _whose(who, body.user)
    role = st.users.role_of(user)
    if role is None:
        raise HTTPException(404, f"no user {user!r}")
    try:
        token, info = st.users.new_token(user, body.name, st.cfg.console.token_ttl_s)
    except AuthError as e:
        raise HTTPException(404, str(e)) from None
    audit.record(request, "token.create", user, {"name": body.name, "id": info.get("id")})
    return {"token": token, "user": user, "role": role, **info}


@router.get("/tokens")
def list_tokens(
    user: str | None = Query(
        None, max_length=64, description="whose tokens (admins); default: yours"
    ),
    who: Principal = Depends(principal),
    st: ConsoleState = Depends(state),
):
    """The user's valid tokens: id, name, created, expires, last used (never the token)."""
    try:
        return st.users.tokens(_whose(who, user))
    except AuthError as e:
        raise HTTPException(422, str(e)) from None


@router.delete("/tokens/{token_id}", status_code=204)
def revoke_token(
    token_id: str,
    request: Request,
    user: str | None = Query(
        None, max_length=64, description="whose token (admins); default: yours"
    ),
    who: Principal = Depends(principal),
    st: ConsoleState = Depends(state),
):
    """Revoke one token at once (by the id the listing shows)."""
    whose = _whose(who, user)
    try:
        found = st.users.revoke_token(whose, token_id)
    except AuthError as e:
        raise HTTPException(422, str(e)) from None
    if not found:
        raise HTTPException(404, f"user {whose!r} has no token {token_id!r}")
    audit.record(request, "token.revoke", whose, {"id": token_id})
    return Response(status_code=204)


@router.get("/users")
def list_users(_: Principal = Depends(as_admin), st: ConsoleState = Depends(state)):
    return st.users.list()


@router.post("/users", status_code=201)
def add_user(
    body: NewUser,
    request: Request,
    _: Principal = Depends(as_admin),
    st: ConsoleState = Depends(state),
):
    try:
        st.users.add(body.username, body.password, body.role)
    except AuthError as e:
        raise HTTPException(422, str(e)) from None
    audit.record(request, "user.add", body.username, {"role": body.role})
    return {"user": body.username, "role": body.role}
