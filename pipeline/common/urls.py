"""URLs that may carry secrets (camera, Redis and Kafka URLs): masking them before they are
printed anywhere: logs, errors, API responses, pages."""

from __future__ import annotations

import re

__all__ = ["hide_credentials", "mask_url", "userinfo"]

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://)(.*)$", re.S)


def userinfo(url: str) -> tuple[str, str, str] | None:
    """``(scheme://, userinfo, rest)`` split at the LAST ``@``, or None without userinfo.

    Not ``urlsplit``: a password with an unencoded ``/``, ``?`` or ``#`` ends the URL's
    authority early, and ``urlsplit`` then sees no password at all (it would be printed)."""
    m = _SCHEME.match(url)
    if m is None:
        return None
    scheme, rest = m.groups()
    at = rest.rfind("@")
    if at < 0:
        return None
    info = rest[:at]
    if ":" not in info and any(c in info for c in "/?#"):
        return None  # an "@" in the path, no credentials
    return scheme, info, rest[at + 1 :]


def mask_url(url: str) -> str:
    """Hide the password (and a user without password) of a URL before it is printed anywhere."""
    parts = userinfo(url)
    if parts is None:
        return url
    scheme, info, rest = parts
    if ":" in info:
        return f"{scheme}{info.split(':', 1)[0]}:***@{rest}"
    return f"{scheme}***@{rest}"


def hide_credentials(url: str) -> str:
    """The URL with its whole userinfo replaced by ``***`` (``rtsp://***@host/...``): what the
    console shows, where even the user name is nobody's business."""
    parts = userinfo(url)
    if parts is None:
        return url
    scheme, _, rest = parts
    return f"{scheme}***@{rest}"
