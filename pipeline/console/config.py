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
    session_ttl_s: int = Field(12 * 3600, ge=60, description="idle sessions expire after this")
    login_attempts_per_minute: int = Field(
        5, ge=1, le=1000, description="per user name and per client address; then 429"
    )
    preview_timeout_s: float = Field(120.0, gt=0, le=3600)
    preview_max_range_s: float = Field(
        24 * 3600.0, gt=0, description="longest time range a preview may replay"
    )
    snapshot_base_url: str | None = Field(
        None, description="how other systems reach the console (links in notifications)"
    )
    allow_file_cameras: bool = Field(
        False,
        description="accept local files and file:// URLs as cameras from the API (footage "
        "replay; off: an operator could make the console and the workers read any file)",
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
