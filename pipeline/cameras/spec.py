"""A camera definition, as stored in the registry topic and in the YAML file.

Every way a camera enters (YAML ``cameras:``, ``vigil cameras add|apply``, the console's API and
records read back from the registry topic) goes through :func:`check_camera_url`, for its ``url``
and its ``record_url`` alike (:data:`URL_FIELDS`): FFmpeg writes the URL verbatim into its RTSP and HTTP requests, so a line break in it is a request of the
URL's author to whatever listens at its host and port (Redis, Kafka, MQTT, a cloud metadata
service).
"""

from __future__ import annotations

import ipaddress
import re
import socket
import unicodedata
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from pydantic import ConfigDict, Field, ValidationInfo, field_validator

from pipeline.common.config import StrictModel
from pipeline.common.contracts import validate_camera_id
from pipeline.common.endpoints import Endpoint
from pipeline.common.streams import is_file_url, unsafe_character
from pipeline.common.urls import mask_url, userinfo

__all__ = [
    "STREAM_SCHEMES",
    "URL_FIELDS",
    "CameraSpec",
    "Endpoint",
    "check_camera_url",
    "endpoint_key",
    "is_file_url",
    "mask_url",
    "unsafe_character",
    "validate_stream_url",
]
from pipeline.cameras.settings import MotionOverride, RecordConfig

STREAM_SCHEMES = ("rtsp", "rtsps", "http", "https", "file")
DEFAULT_PORTS = {"rtsp": 554, "rtsps": 322, "http": 80, "https": 443}
# Cloud metadata services by name (their addresses are link-local, refused as such).
METADATA_HOSTS = frozenset(
    {
        "metadata",
        "metadata.google.internal",
        "metadata.goog",
        "instance-data",
        "instance-data.ec2.internal",
    }
)
FILE_CAMERAS_REFUSED = (
    "camera url: local files and file:// URLs are not accepted here (footage replay is "
    "configured in the YAML file or with `vigil cameras add`; console.allow_file_cameras: true "
    "allows them in the console)"
)
_CONTROL = {"Cc": True, "Cf": True, "Zl": True, "Zp": True}  # Unicode categories
_NUMERIC_HOST = re.compile(r"[0-9a-fA-FxX.]+")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_V4_COMPATIBLE = ipaddress.ip_network("::/96")


def ip_of(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address a literal host stands for, in every form FFmpeg's resolver accepts: dotted,
    decimal (``2852039166``), hex, octal, short (``127.1``), IPv6 with a zone; None for names.
    IPv4-mapped, IPv4-compatible and NAT64 IPv6 forms come back as the IPv4 address."""
    host = host.strip("[]").split("%", 1)[0]
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        if not _NUMERIC_HOST.fullmatch(host):
            return None
        try:
            addr = ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            return addr.ipv4_mapped
        if addr in _NAT64 or (addr in _V4_COMPATIBLE and int(addr) > 1):
            return ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF)
    return addr


def endpoint_key(host: str, port: int) -> Endpoint:
    """``(host, port)`` in one spelling per service: every loopback and wildcard address and
    ``localhost`` become ``localhost``, literal addresses their canonical form, names lower case."""
    name = host.strip("[]").rstrip(".").lower()
    addr = ip_of(name)
    if addr is not None:
        name = "localhost" if addr.is_loopback or addr.is_unspecified else str(addr)
    elif name == "localhost" or name.endswith(".localhost"):
        name = "localhost"
    return name, int(port)


def _link_local(host: str) -> bool:
    addr = ip_of(host)
    if addr is None:
        return host.strip("[]").rstrip(".").lower() in METADATA_HOSTS
    return addr.is_link_local


def check_camera_url(
    url: str, *, allow_files: bool = True, forbidden: Collection[Endpoint] = ()
) -> str:
    """The camera URL, stripped, or ValueError saying what is wrong (the URL masked).

    Refused: control characters and whitespace inside (a space only in local file paths),
    schemes other than :data:`STREAM_SCHEMES`, link-local hosts (cloud metadata services),
    ``forbidden`` service endpoints (Kafka, Redis, MQTT, handed in by the composition layer,
    compared through :func:`endpoint_key`), and local files when ``allow_files`` is false: that
    refusal comes before the file is looked at, so it never tells whether a path exists.
    """
    if not isinstance(url, str) or not url.strip():
        raise ValueError("camera url is empty")
    url = url.strip()
    local = is_file_url(url)
    bad = unsafe_character(url)
    if bad is not None:
        index, char = bad
        raise ValueError(
            f"camera url {mask_url(url)!r}: control character or whitespace U+{ord(char):04X} at "
            f"position {index} (not allowed in a camera URL; percent-encode it)"
        )
    parts = urlsplit(url)
    if local and not allow_files:
        raise ValueError(FILE_CAMERAS_REFUSED)
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
    if info is not None and any(_CONTROL.get(unicodedata.category(c)) for c in unquote(info[1])):
        # FFmpeg decodes the userinfo into its Authorization header (Digest quotes it verbatim);
        # a percent-encoded space is fine there (passwords hold spaces)
        raise ValueError(
            f"camera url {mask_url(url)!r}: percent-encoded control character or line break in "
            "the user or password"
        )
    if not parts.hostname:
        raise ValueError(f"camera url {mask_url(url)!r}: missing host")
    try:
        port = parts.port or DEFAULT_PORTS[parts.scheme]
    except ValueError:
        raise ValueError(f"camera url {mask_url(url)!r}: invalid port") from None
    if _link_local(parts.hostname):
        raise ValueError(
            f"camera url {mask_url(url)!r}: link-local or cloud metadata host "
            f"{parts.hostname!r} is not a camera"
        )
    if endpoint_key(parts.hostname, port) in {endpoint_key(h, p) for h, p in forbidden}:
        raise ValueError(
            f"camera url {mask_url(url)!r}: {parts.hostname}:{port} is one of Vigil's own "
            "services (Kafka, Redis or MQTT), not a camera"
        )
    return url


#: The fields of :class:`CameraSpec` that hold a stream URL, each checked by check_camera_url.
URL_FIELDS = ("url", "record_url")


def validate_stream_url(url: str) -> str:
    """:func:`check_camera_url` without a forbidden endpoint, local files allowed."""
    return check_camera_url(url)


class CameraSpec(StrictModel):
    """One camera. Validate with :meth:`checked` where the caller knows more than the URL:
    Vigil's service endpoints (refused as camera hosts) and whether local files are allowed."""

    # a ValidationError printed as it is (a traceback, a log line) must not quote the URL
    model_config = ConfigDict(hide_input_in_errors=True)

    id: str
    url: str = Field(repr=False)
    fps: float | None = Field(
        None, gt=0, le=120, description="detection rate; None = ingest default"
    )
    enabled: bool = True
    labels: dict[str, str] = {}
    motion: MotionOverride | None = None  # keys left out come from ingest.motion
    # the main stream the recorder copies (docs/recordings.md); None: the recording is of `url`
    record_url: str | None = Field(None, repr=False)
    record: RecordConfig = RecordConfig()

    @classmethod
    def checked(
        cls,
        data: Mapping[str, Any],
        *,
        allow_files: bool = True,
        forbidden: Collection[Endpoint] = (),
    ) -> CameraSpec:
        """``CameraSpec(**data)`` with :func:`check_camera_url`'s ``allow_files`` and
        ``forbidden``; a ValidationError names the field as usual."""
        return cls.model_validate(
            dict(data), context={"allow_files": allow_files, "forbidden": forbidden}
        )

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        return validate_camera_id(v)

    @field_validator(*URL_FIELDS)
    @classmethod
    def _url(cls, v: str | None, info: ValidationInfo) -> str | None:
        if v is None and info.field_name != "url":
            return None
        ctx = info.context or {}
        return check_camera_url(
            v, allow_files=ctx.get("allow_files", True), forbidden=ctx.get("forbidden", ())
        )

    def urls(self) -> dict[str, str]:
        """The camera's URLs by field (``url``, and ``record_url`` when set)."""
        return {f: getattr(self, f) for f in URL_FIELDS if getattr(self, f) is not None}

    def check_urls(self, *, allow_files: bool = True, forbidden: Collection[Endpoint] = ()) -> None:
        """:func:`check_camera_url` on every URL of the camera; the ValueError names the field."""
        for name, url in self.urls().items():
            try:
                check_camera_url(url, allow_files=allow_files, forbidden=forbidden)
            except ValueError as e:
                raise ValueError(f"{name}: {e}") from None

    @property
    def recording_url(self) -> str:
        """What the recorder records: the main stream, or else the detection stream."""
        return self.record_url or self.url

    @property
    def safe_url(self) -> str:
        return mask_url(self.url)

    def __str__(self) -> str:
        return f"camera {self.id} ({self.safe_url})"
