"""A camera definition, as stored in the registry topic and in the YAML file."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from pydantic import Field, field_validator

from pipeline.common.config import StrictModel
from pipeline.common.contracts import validate_camera_id
from pipeline.common.urls import mask_url, userinfo

__all__ = ["STREAM_SCHEMES", "CameraSpec", "mask_url", "validate_stream_url"]
from pipeline.ingest.motion import MotionOverride

STREAM_SCHEMES = ("rtsp", "rtsps", "http", "https", "file")


def validate_stream_url(url: str) -> str:
    """Accept rtsp(s)/http(s) URLs with a host, and existing local files (for recorded footage)."""
    if not isinstance(url, str) or not url.strip():
        raise ValueError("camera url is empty")
    url = url.strip()
    parts = urlsplit(url)
    if not parts.scheme or len(parts.scheme) == 1:  # plain path (or a Windows drive letter)
        if not Path(url).is_file():
            raise ValueError(
                f"camera url {mask_url(url)!r}: no such file, and not an rtsp:// or http(s):// URL"
            )
        return url
    if parts.scheme not in STREAM_SCHEMES:
        raise ValueError(
            f"camera url {mask_url(url)!r}: unsupported scheme {parts.scheme!r} (use one of {', '.join(STREAM_SCHEMES)})"
        )
    if parts.scheme == "file":
        if not Path(parts.path).is_file():
            raise ValueError(f"camera url {mask_url(url)!r}: no such file")
        return url
    info = userinfo(url)
    if info is not None and any(c in info[1] for c in "/?#"):
        raise ValueError(
            f"camera url {mask_url(url)!r}: the user or password contains '/', '?' or '#'; "
            "percent-encode them (%2F, %3F, %23)"
        )
    if not parts.hostname:
        raise ValueError(f"camera url {mask_url(url)!r}: missing host")
    try:
        _ = parts.port
    except ValueError:
        raise ValueError(f"camera url {mask_url(url)!r}: invalid port") from None
    return url


class CameraSpec(StrictModel):
    id: str
    url: str = Field(repr=False)
    fps: float | None = Field(
        None, gt=0, le=120, description="detection rate; None = ingest default"
    )
    enabled: bool = True
    labels: dict[str, str] = {}
    motion: MotionOverride | None = None  # keys left out come from ingest.motion

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        return validate_camera_id(v)

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        return validate_stream_url(v)

    @property
    def safe_url(self) -> str:
        return mask_url(self.url)

    def __str__(self) -> str:
        return f"camera {self.id} ({self.safe_url})"
