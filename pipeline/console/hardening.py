"""HTTP hardening of the console: the request body bound (checked before anything parses a
body), the security headers every answer carries, and who counts as a local client (for the
anonymous ``/metrics`` scrape)."""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import re
from typing import TYPE_CHECKING

from fastapi import Request, Response
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

# The pages load their script and style from /static only: no inline script, no eval.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
HSTS = "max-age=31536000"


class BodyTooLarge(HTTPException):
    """Raised from the receive stream; FastAPI re-raises HTTPExceptions met while reading a body,
    so the client gets this 413 and not 'error parsing the body'."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, body_message(limit))


def body_message(limit: int) -> str:
    return f"request body larger than {limit} bytes (console.max_body_bytes)"


class BodyLimit:
    """ASGI middleware: 413 for a Content-Length over ``limit`` before the app runs, and for a
    body (chunked or lying about its length) whose bytes pass ``limit`` while it is read."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length")
        if declared is not None:
            if not declared.isdigit():
                await JSONResponse({"detail": "Content-Length is not a number"}, 400)(
                    scope, receive, send
                )
                return
            if int(declared) > self.limit:
                await self._refuse(scope, receive, send)
                return
        seen = 0
        started = False

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise BodyTooLarge(self.limit)
            return message

        async def watched(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except BodyTooLarge:
            if started:
                raise
            await self._refuse(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = JSONResponse(
            {"detail": body_message(self.limit)}, 413, headers={"Connection": "close"}
        )
        await response(scope, receive, send)


def docs_csp(html: str) -> str:
    """The CSP of the API docs page: Swagger UI's files from its CDN and its one inline script,
    allowed by hash (not 'unsafe-inline'); its widgets set inline styles, which stay allowed
    there (a style cannot run code; the page shows only the API's own description)."""
    hashes = " ".join(
        f"'sha256-{base64.b64encode(hashlib.sha256(m.encode()).digest()).decode()}'"
        for m in re.findall(r"<script>(.*?)</script>", html, re.S)
    )
    cdn = "https://cdn.jsdelivr.net"
    return (
        f"default-src 'self'; script-src 'self' {cdn} {hashes}; "
        f"style-src 'self' {cdn} 'unsafe-inline'; "
        "img-src 'self' data: https://fastapi.tiangolo.com; connect-src 'self'; "
        "object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
    )


def add_security_headers(request: Request, response: Response, https: bool) -> None:
    """CSP (unless the route set its own), no sniffing, no framing, same-origin referrers, HSTS
    over HTTPS, and ``no-store`` for everything but the static files: API answers and snapshots
    must not stay in a shared or browser cache after logout."""
    h = response.headers
    h.setdefault("Content-Security-Policy", CSP)
    h.setdefault("X-Content-Type-Options", "nosniff")
    h.setdefault("X-Frame-Options", "DENY")
    h.setdefault("Referrer-Policy", "same-origin")
    if https or request.url.scheme == "https":
        h.setdefault("Strict-Transport-Security", HSTS)
    if not request.url.path.startswith("/static/"):
        h["Cache-Control"] = "no-store"


def local_client(request: Request) -> bool:
    """A loopback client that did not come through a proxy (a local Prometheus): a request
    with forwarding headers came from elsewhere even when the proxy itself is local."""
    if request.headers.get("x-forwarded-for") or request.headers.get("forwarded"):
        return False
    host = request.client.host if request.client else ""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
