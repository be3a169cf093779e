"""The ``console:`` section: where the console listens and how it guards sessions."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator

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
    snapshot_base_url: str | None = Field(
        None, description="how other systems reach the console (links in notifications)"
    )

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
