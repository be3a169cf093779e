"""What every FFmpeg reader of a camera agrees on: which URLs are local files and the protocols
FFmpeg may use for each kind (``protocol_whitelist``).

FFmpeg otherwise opens anything it knows from a URL, a playlist or a redirect: concat:, subfile:,
data:, pipe:, file: inside a network stream... Ingest (OpenCV's FFmpeg backend) and the recorders
(PyAV) pass the same list.
"""

from __future__ import annotations

import unicodedata
from urllib.parse import urlsplit

__all__ = [
    "ANY_CAMERA_PROTOCOLS",
    "FILE_PROTOCOLS",
    "NETWORK_PROTOCOLS",
    "is_file_url",
    "protocols_for",
    "unsafe_character",
]

# RTSP runs over tcp/udp/rtp (tls for rtsps, http for RTSP-over-HTTP).
NETWORK_PROTOCOLS = "rtsp,rtsps,rtp,srtp,udp,tcp,tls,http,https"
FILE_PROTOCOLS = "file"
ANY_CAMERA_PROTOCOLS = f"{FILE_PROTOCOLS},{NETWORK_PROTOCOLS}"


def is_file_url(url: str) -> bool:
    """A local file (plain path, Windows drive letter) or a ``file:`` URL: footage replay."""
    scheme = urlsplit(url).scheme
    return scheme in ("", "file") or len(scheme) == 1


def protocols_for(url: str) -> str:
    """The protocols a reader of ``url`` may use: a file camera reads local files and nothing
    else, a network camera never reads a local file."""
    return FILE_PROTOCOLS if is_file_url(url) else NETWORK_PROTOCOLS


def unsafe_character(url: str) -> tuple[int, str] | None:
    """The first control character or whitespace of ``url`` (index, character), or None. A
    plain space is allowed in local file paths only (no request line to break out of)."""
    allow_space = is_file_url(url)
    for i, c in enumerate(url):
        if c == " " and allow_space:
            continue
        if c.isspace() or unicodedata.category(c) in ("Cc", "Cf", "Zs", "Zl", "Zp"):
            return i, c
    return None
