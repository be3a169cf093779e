"""The ``console:`` section: where the console listens and how it guards sessions."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from pipeline.common.config import StrictModel


class ConsoleConfig(StrictModel):
    enabled: bool = Field(False, description="start the console inside `vigil run`")
    host: str = Field("127.0.0.1", description="bind address; 127.0.0.1 unless told otherwise")
    port: int = Field(8080, ge=1, le=65535)
    tls_cert: str | None = Field(None, description="PEM certificate: serve HTTPS")
    tls_key: str | None = Field(None, description="PEM private key of tls_cert")
    session_ttl_s: int = Field(3600, ge=60, description="idle sessions expire after this")
    session_max_age_s: int = Field(
        12 * 3600, ge=60, description="sessions end this long after login, active or not"
    )
    token_ttl_s: int = Field(
        90 * 86400, ge=60, description="API tokens expire this long after they are made"
    )
    login_attempts_per_minute: int = Field(
        5,
        ge=1,
        le=1000,
        description="per user name from one client address (4x that per address); then 429",
    )
    login_concurrency: int = Field(
        2, ge=1, le=64, description="password checks at once (64 MiB each); more wait, then 503"
    )
    preview_timeout_s: float = Field(120.0, gt=0, le=3600)
    preview_max_range_s: float = Field(
        24 * 3600.0, gt=0, description="longest time range a preview may replay"
    )
    preview_recording_frames: int = Field(
        50,
        ge=0,
        le=500,
        description="would-be alerts per preview whose picture is decoded from the recordings "
        "(once the live frame expired); 0: none",
    )
    snapshot_base_url: str | None = Field(
        None,
        description="how other systems reach the console (links in notifications; "
        "default public_url)",
    )
    public_url: str | None = Field(
        None,
        description="the URL users reach the console at, e.g. behind a TLS proxy "
        "(https://...: cookies are Secure); absolute links start with it",
    )
    trusted_proxies: list[str] = Field(
        default_factory=list,
        description="addresses/networks whose X-Forwarded-For/-Proto are believed; none by default",
    )
    stream_recheck_s: float = Field(
        15.0,
        gt=0,
        le=15,
        description="live streams (SSE, MJPEG) re-check their session this often, then end",
    )
    max_streams_per_user: int = Field(8, ge=1, le=1000, description="open streams; then 429")
    redis_max_connections: int = Field(
        32, ge=2, le=10_000, description="per console pool (one sync, one async); then wait"
    )
    redis_pool_timeout_s: float = Field(
        5.0, gt=0, le=60, description="wait for a free pooled connection, then 503"
    )
    max_body_bytes: int = Field(
        1024 * 1024, ge=1024, le=1024**3, description="larger request bodies get 413"
    )

    allow_file_cameras: bool = Field(
        False,
        description="accept local files and file:// URLs as cameras from the API (footage "
        "replay; off: an operator could make the console and the workers read any file)",
    )

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, v: str | None) -> str | None:
        if v is None:
            return None
        parts = urlsplit(v)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"public_url {v!r}: give an absolute http:// or https:// URL")
        return v.rstrip("/")

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies(cls, v: list[str]) -> list[str]:
        for item in v:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(
                    f"trusted_proxies: {item!r} is not an IP address or network"
                ) from None
        return v

    @model_validator(mode="after")
    def _tls_pair(self) -> ConsoleConfig:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key: give both (HTTPS) or neither (HTTP)")
        for key in ("tls_cert", "tls_key"):
            path = getattr(self, key)
            if path is not None and not Path(path).expanduser().is_file():
                raise ValueError(f"{key}: file {path} not found")
        return self

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None

    @property
    def links_base(self) -> str | None:
        """Where absolute links to the console (notifications' snapshot links) start."""
        return self.snapshot_base_url or self.public_url

    @property
    def https(self) -> bool:
        """Users reach the console over HTTPS: it terminates TLS, or public_url says so."""
        return self.tls or (self.public_url or "").startswith("https://")
