"""Webhook sink: one HTTP request per alert event, on a keep-alive connection per worker.

The body is the alert message as JSON (``format: json``: the bytes published on Kafka, plus
``snapshot_url`` / ``snapshot_jpeg_base64`` when asked), or a Slack-compatible message
(``format: slack``). Headers: ``Idempotency-Key: <id>:<status>`` (the same on every copy of an
event, so the receiver can drop repeats), ``X-Vigil-Timestamp: <unix seconds>`` (when this
attempt was sent) and ``X-Vigil-Signature: v1=<hex>`` (HMAC-SHA256 with the sink's secret of
``<timestamp>\n<Idempotency-Key>\n<body bytes>``: a captured request cannot be replayed once
the receiver's window, 5 minutes in docs/notify.md, has passed). 2xx is delivered; 408, 425, 429 and 5xx are
retried (``Retry-After`` honoured); any other status is permanent (dead-lettered at once: a 400
stays a 400). Transport errors and timeouts are retried.

The client is the standard library's ``http.client``, one keep-alive connection per worker
thread: it costs a third of httpx's CPU per request (0.35 vs 1.03 ms per delivery, whole
notifier, measured by ``deploy/local/notify_bench.py``), which is what lets one notifier keep
up with the alert service. What a client library would add beyond that is handled here: TLS
with certificate and host name checks, a timeout on the connect and on every read and write,
idle and stale keep-alive connections replaced, response bodies read up to a bound.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import re
import ssl
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

from pydantic import Field, SecretStr, ValidationInfo, field_validator

from alerts.notify.sinks.base import (
    Delivery,
    Sink,
    SinkContext,
    SinkError,
    idempotency_key,
    register_sink,
    snapshot_url,
)
from alerts.notify.sinks.config import SinkConfig, bad, check_url
from pipeline.common.jsoncodec import dumps_text

USER_AGENT = "vigil-notify/1"
IDLE_S = 20.0  # a keep-alive connection idle for longer is replaced before use
MAX_RESPONSE_BYTES = 65_536  # of a response body: read, the rest dropped with the connection
RETRIED = {408, 425, 429}
_SLACK_ICON = {
    "info": ":information_source:",
    "low": ":large_blue_circle:",
    "medium": ":large_orange_circle:",
    "high": ":red_circle:",
    "critical": ":rotating_light:",
}


class WebhookSinkConfig(SinkConfig):
    type: Literal["webhook"]
    # repr=False: a webhook URL may be a secret itself (Slack's); it is never logged whole
    url: str = Field(repr=False, description="http(s) URL the alert is sent to")
    method: Literal["POST", "PUT"] = "POST"
    format: Literal["json", "slack"] = "json"
    # HMAC-SHA256 key of X-Vigil-Signature: required for format json, optional for slack (Slack
    # does not check signatures; its URL is the secret)
    secret: SecretStr | None = None
    headers: dict[str, SecretStr] = Field(
        {}, description="extra request headers (Authorization: ...); values are secrets"
    )
    # url: `snapshot_url` in the body when console.snapshot_base_url is set; base64: the JPEG
    # itself (`snapshot_jpeg_base64`, started events); none: neither
    include_snapshot: Literal["url", "base64", "none"] = "url"
    timeout_s: float = Field(5.0, gt=0, le=300, description="connect, send and read, each")
    concurrency: int = Field(
        4, ge=1, le=64, description="parallel requests (one camera's events stay in order)"
    )
    verify_tls: bool = True
    ca_file: str | None = None

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        return check_url(v, ("http", "https"))

    @field_validator("secret")
    @classmethod
    def _secret(cls, v: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        if v is None:
            if info.data.get("format", "json") == "json":
                raise bad(
                    "missing_secret",
                    "required for a json webhook: the receiver checks X-Vigil-Signature "
                    "with it (put it in an environment variable: secret: ${MY_SECRET})",
                )
            return v
        if len(v.get_secret_value()) < 16:
            raise bad(
                "short_secret", "at least 16 characters (an HMAC key that can be guessed is none)"
            )
        return v

    @field_validator("headers")
    @classmethod
    def _headers(cls, v: dict[str, SecretStr]) -> dict[str, SecretStr]:
        reserved = {
            "content-type",
            "idempotency-key",
            "x-vigil-signature",
            "x-vigil-timestamp",
            "content-length",
        }
        for name in v:
            if not re.fullmatch(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+", name):
                raise ValueError(f"{name!r} is not a header name")
            if name.lower() in reserved:
                raise ValueError(f"{name!r} is set by the notifier")
            if any(c in v[name].get_secret_value() for c in "\r\n\x00"):
                raise ValueError(f"{name!r}: a header value cannot hold a line break")
        return v


SIGNATURE_VERSION = "v1"  # the scheme's name in X-Vigil-Signature; a new scheme gets a new one


def signed_material(timestamp: int, key: str, body: bytes) -> bytes:
    """What ``v1`` signs: ``<timestamp>\n<Idempotency-Key>\n<body>``. The timestamp makes a
    captured request expire; the key ties the signature to the event; neither header can hold a
    line break, so the parts cannot be shifted into one another."""
    return f"{timestamp}\n{key}\n".encode() + body


def sign(secret: bytes, timestamp: int, key: str, body: bytes) -> str:
    """The ``X-Vigil-Signature`` value: ``v1=`` + hex HMAC-SHA256 of :func:`signed_material`."""
    mac = hmac.new(secret, signed_material(timestamp, key, body), hashlib.sha256)
    return f"{SIGNATURE_VERSION}={mac.hexdigest()}"


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """``Retry-After`` in seconds (delta-seconds or an HTTP date); None when absent or bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def slack_message(alert: dict[str, Any], link: str | None) -> dict[str, Any]:
    """A Slack incoming-webhook message (also understood by Mattermost and Rocket.Chat)."""
    sev = str(alert.get("severity"))
    status = alert.get("status")
    what = alert.get("label") or "alert"
    if alert.get("track_id") is not None:
        what += f" (track {alert['track_id']})"
    at = alert.get("updated_at")
    when = (
        datetime.fromtimestamp(at, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
        if isinstance(at, int | float)
        else "?"
    )
    text = (
        f"{_SLACK_ICON.get(sev, '')} *{sev}* `{alert.get('rule_id')}` {status} on camera "
        f"`{alert.get('camera_id')}`: {what} at {when}"
    ).strip()
    if status == "reviewed" and isinstance(alert.get("review"), dict):
        text += f" (reviewed: {alert['review'].get('verdict')} by {alert['review'].get('by')})"
    fields = [
        {"type": "mrkdwn", "text": f"*rule type*\n{alert.get('rule_type')}"},
        {"type": "mrkdwn", "text": f"*alert id*\n`{alert.get('id')}`"},
    ]
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": text}},
        {"type": "section", "fields": fields},
    ]
    if link:
        blocks.append(
            {"type": "context", "elements": [{"type": "mrkdwn", "text": f"<{link}|snapshot>"}]}
        )
    return {"text": text, "blocks": blocks}


@dataclass(slots=True)
class Response:
    status: int
    reason: str
    headers: Any  # http.client.HTTPMessage
    body: bytes  # the first MAX_RESPONSE_BYTES

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


@register_sink
class WebhookSink(Sink):
    kind = "webhook"
    config_model = WebhookSinkConfig
    cfg: WebhookSinkConfig

    def __init__(self, cfg: WebhookSinkConfig, ctx: SinkContext) -> None:
        super().__init__(cfg, ctx)
        self._secret = cfg.secret.get_secret_value().encode() if cfg.secret else None
        p = urlsplit(cfg.url)
        self._https = p.scheme.lower() == "https"
        self._host = p.hostname or ""
        self._port = p.port or (443 if self._https else 80)
        self._target = (p.path or "/") + (f"?{p.query}" if p.query else "")
        self._headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            **{k: v.get_secret_value() for k, v in cfg.headers.items()},
        }
        if p.username is not None:  # https://user:password@host/...: basic authentication
            token = f"{unquote(p.username)}:{unquote(p.password or '')}".encode()
            self._headers["Authorization"] = "Basic " + base64.b64encode(token).decode()
        self._ssl: ssl.SSLContext | None = None
        self._local = threading.local()  # each worker thread: its own keep-alive connection
        self._lock = threading.Lock()
        self._open: set[http.client.HTTPConnection] = set()

    @property
    def workers(self) -> int:
        return self.cfg.concurrency

    def insecure_settings(self) -> list[str]:
        out = []
        if self._https and not self.cfg.verify_tls:
            out.append(
                "verify_tls: false (the server's certificate and host name are not checked: "
                "whoever is on the path can read and change the requests)"
            )
        if not self._https and urlsplit(self.cfg.url).password is not None:
            out.append("a password in an http:// url (sent over plain TCP; use https://)")
        if not self._https and self.cfg.headers:
            names = ", ".join(sorted(self.cfg.headers))
            out.append(f"headers {names} over plain TCP (http://; use https://)")
        return out

    def start(self) -> None:
        self.warn_if_insecure()
        if self._https and self._ssl is None:
            ctx = ssl.create_default_context(cafile=self.cfg.ca_file)
            if not self.cfg.verify_tls:
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            self._ssl = ctx

    def close(self) -> None:
        with self._lock:
            conns, self._open = self._open, set()
        for c in conns:
            c.close()

    def where(self) -> str:
        p = urlsplit(self.cfg.url)
        host = p.hostname or "?"
        return f"{p.scheme}://{host}" + (f":{p.port}" if p.port else "")

    def secrets(self) -> list[str]:
        p = urlsplit(self.cfg.url)
        out = [self.cfg.url]
        if p.path not in ("", "/"):  # Slack-style URLs carry their secret in the path
            out += [p.path, unquote(p.path)]
        if p.query:
            out.append(p.query)
        if p.password:
            out += [p.password, unquote(p.password)]
        if self._secret:
            out.append(self._secret.decode())
        out += [v.get_secret_value() for v in self.cfg.headers.values()]
        if "Authorization" in self._headers:
            out.append(self._headers["Authorization"])
        return [s for s in out if s]

    # -- connections ----------------------------------------------------------------------------

    def _connection(self) -> tuple[http.client.HTTPConnection, bool]:
        """This thread's connection and whether it was used before. One idle for longer than
        IDLE_S is replaced: servers close idle keep-alive connections (nginx after 75 s), and
        finding out by a failed request costs a retry."""
        local = self._local
        conn = getattr(local, "conn", None)
        if conn is not None and time.monotonic() - local.used > IDLE_S:
            self._drop()
            conn = None
        if conn is not None:
            return conn, True
        self.start()
        if self._https:
            conn = http.client.HTTPSConnection(
                self._host, self._port, timeout=self.cfg.timeout_s, context=self._ssl
            )
        else:
            conn = http.client.HTTPConnection(self._host, self._port, timeout=self.cfg.timeout_s)
        local.conn, local.used = conn, time.monotonic()
        with self._lock:
            self._open.add(conn)
        return conn, False

    def _drop(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            self._local.conn = None
            with self._lock:
                self._open.discard(conn)
            conn.close()

    def _request(self, d: Delivery) -> Response:
        """One POST on this thread's keep-alive connection (``timeout_s`` for the connect and
        for each read and write). A reused connection the server had closed meanwhile is
        replaced once at once: the request never reached the application."""
        body = self.body(d)
        headers = self.headers(d, body)
        while True:
            conn, reused = self._connection()
            try:
                conn.request(self.cfg.method, self._target, body=body, headers=headers)
                r = conn.getresponse()
                data = r.read(MAX_RESPONSE_BYTES)
                if not r.isclosed() or r.will_close:  # unread rest, or the server closes
                    self._drop()
                else:
                    self._local.used = time.monotonic()
                return Response(r.status, r.reason, r.headers, data)
            except TimeoutError:
                self._drop()
                raise SinkError(
                    f"no answer within timeout_s {self.cfg.timeout_s:g} s (timed out)"
                ) from None
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as e:
                self._drop()
                if reused:
                    continue  # a stale keep-alive connection: once more on a fresh one
                raise SinkError(f"{type(e).__name__}: {self.scrub(str(e))}") from None
            except ValueError as e:  # http.client refuses a header value (CR/LF...)
                self._drop()
                raise SinkError(f"request refused: {self.scrub(str(e))}", permanent=True) from None
            except (OSError, http.client.HTTPException) as e:
                self._drop()
                raise SinkError(
                    f"{type(e).__name__}: {self.scrub(str(e)) or 'no detail'}"
                ) from None

    def body(self, d: Delivery) -> bytes:
        """The request body: the bytes that are signed and sent."""
        alert = d.alert
        base = self.ctx.snapshot_base_url
        link = (
            snapshot_url(base, alert["id"])
            if base and self.cfg.include_snapshot != "none"
            else None
        )
        if self.cfg.format == "slack":
            return dumps_text(slack_message(alert, link)).encode()
        extra: dict[str, Any] = {}
        if link and self.cfg.include_snapshot == "url":
            extra["snapshot_url"] = link
        if self.cfg.include_snapshot == "base64" and alert.get("status") == "started":
            jpeg = self.ctx.snapshot(alert["id"])
            if jpeg:
                extra["snapshot_jpeg_base64"] = base64.b64encode(jpeg).decode("ascii")
        extra.update(self.ctx.links(alert))
        if not extra and d.raw:
            return d.raw  # exactly what was published on Kafka
        return dumps_text({**alert, **extra}).encode()

    def headers(self, d: Delivery, body: bytes) -> dict[str, str]:
        """Made for each attempt: a retry carries the time it was sent, not the first try's."""
        h = {**self._headers, "Idempotency-Key": d.key}
        if self._secret is not None:
            ts = int(time.time())
            h["X-Vigil-Timestamp"] = str(ts)
            h["X-Vigil-Signature"] = sign(self._secret, ts, d.key, body)
        return h

    def send(self, d: Delivery) -> str:
        r = self._request(d)
        return self._outcome(r)

    def test(self, alert: dict[str, Any]) -> str:
        d = Delivery(alert, b"", idempotency_key(alert))
        t0 = time.perf_counter()
        r = self._request(d)
        ms = (time.perf_counter() - t0) * 1000
        text = self.scrub(r.text[:500]).strip()
        line = f"HTTP {r.status} {r.reason} in {ms:.0f} ms" + (
            f"; response: {text}" if text else "; empty response"
        )
        self._outcome(r, line)
        return line

    def _outcome(self, r: Response, line: str | None = None) -> str:
        code = r.status
        if 200 <= code < 300:
            return line or f"HTTP {code}"
        detail = line or f"HTTP {code} {r.reason}: {self.scrub(r.text[:200]).strip()}"
        raise SinkError(
            detail.rstrip(": "),
            retry_after=parse_retry_after(r.headers.get("Retry-After")),
            permanent=not (code >= 500 or code in RETRIED),
        )
