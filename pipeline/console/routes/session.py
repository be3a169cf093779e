"""``/api/login``, ``/api/logout``, ``/api/me``, API tokens and users."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from pydantic import BaseModel, Field

from pipeline.console.auth import AuthError, Principal, Role
from pipeline.console.state import (
    SESSION_COOKIE,
    ConsoleState,
    as_admin,
    client_addr,
    principal,
    state,
)

router = APIRouter(prefix="/api", tags=["session"])


class Login(BaseModel):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)


class NewToken(BaseModel):
    name: str = Field("script", min_length=1, max_length=64)


class NewUser(BaseModel):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=8, max_length=1024)
    role: Role


def _me(who: Principal) -> dict:
    return {"user": who.user, "role": who.role, "csrf_token": who.csrf}


@router.post("/login")
def login(body: Login, request: Request, response: Response, st: ConsoleState = Depends(state)):
    cc = st.cfg.console
    addr = client_addr(request)
    if st.users.login_blocked(body.username, addr, cc.login_attempts_per_minute):
        raise HTTPException(429, "too many failed logins; wait a minute")
    role = st.users.authenticate(body.username, body.password)
    if role is None:
        st.users.login_failed(body.username, addr)
        raise HTTPException(401, "wrong user name or password")
    sid, who = st.users.new_session(body.username, role, cc.session_ttl_s)
    response.set_cookie(
        SESSION_COOKIE,
        sid,
        max_age=cc.session_ttl_s,
        httponly=True,
        samesite="strict",
        secure=cc.https,
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


@router.post("/tokens", status_code=201)
def new_token(
    body: NewToken, who: Principal = Depends(principal), st: ConsoleState = Depends(state)
):
    """An API token acting as the caller (with the caller's role); shown once."""
    return {"token": st.users.new_token(who.user, body.name), "user": who.user, "role": who.role}


@router.get("/users")
def list_users(_: Principal = Depends(as_admin), st: ConsoleState = Depends(state)):
    return st.users.list()


@router.post("/users", status_code=201)
def add_user(body: NewUser, _: Principal = Depends(as_admin), st: ConsoleState = Depends(state)):
    try:
        st.users.add(body.username, body.password, body.role)
    except AuthError as e:
        raise HTTPException(422, str(e)) from None
    return {"user": body.username, "role": body.role}
