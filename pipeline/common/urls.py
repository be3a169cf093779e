"""URLs that may carry secrets (camera, Redis and Kafka URLs): masking them before they are
printed anywhere: logs, errors, API responses, pages.

A secret hides in three places of a URL: the userinfo (``rtsp://admin:pw@cam/``), the query
(``rtsp://cam/stream?user=admin&pwd=pw``, many cameras take their login there) and path tokens
(``rtsp://cam/user=admin_password=pw_channel=1``). The query is masked whole (no list of
parameter names is ever complete); a path segment is masked whole when it holds a
credential-looking ``name=``.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

__all__ = ["hide_credentials", "mask_url", "url_secrets", "userinfo"]

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://)(.*)$", re.S)
# "name=" (or "name:") that names a credential, at the start of a segment or after a separator
_CREDENTIAL_TOKEN = re.compile(
    r"(?:^|[^a-z0-9])(?:user(?:name)?|usr|uid|login|account|pass(?:word|wd|phrase)?|pwd|psw|pw"
    r"|token|secret|auth[a-z_]*|api_?key|access_?key|stream_?key|key|sig(?:nature)?"
    r"|credentials?|session(?:_?id)?|sid)\s*[=:]",
    re.I,
)
MASK = "***"


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


def _split_rest(rest: str) -> tuple[str, list[str], str | None, str | None]:
    """``host[:port]/path?query#fragment`` -> (authority, path segments, query, fragment)."""
    rest, hash_, fragment = rest.partition("#")
    rest, qmark, query = rest.partition("?")
    authority, slash, path = rest.partition("/")
    return (
        authority,
        path.split("/") if slash else [],
        query if qmark else None,
        fragment if hash_ else None,
    )


def _credential_segment(segment: str) -> bool:
    return bool(_CREDENTIAL_TOKEN.search(unquote(segment)))


def _mask_rest(rest: str) -> str:
    """The part after the userinfo with its query, fragment and credential path tokens masked."""
    authority, segments, query, fragment = _split_rest(rest)
    out = authority
    if segments:
        out += "/" + "/".join(MASK if _credential_segment(s) else s for s in segments)
    if query:
        out += "?" + MASK
    elif query is not None:
        out += "?"
    if fragment:
        out += "#" + MASK
    return out


def mask_url(url: str) -> str:
    """Hide the password (and a user without password), the query and credential-looking path
    tokens of a URL before it is printed anywhere. A plain file path is returned as it is."""
    m = _SCHEME.match(url)
    if m is None:
        return url
    parts = userinfo(url)
    if parts is None:
        return m.group(1) + _mask_rest(m.group(2))
    scheme, info, rest = parts
    if ":" in info:
        return f"{scheme}{info.split(':', 1)[0]}:{MASK}@{_mask_rest(rest)}"
    return f"{scheme}{MASK}@{_mask_rest(rest)}"


def hide_credentials(url: str) -> str:
    """The URL with its whole userinfo replaced by ``***`` (``rtsp://***@host/...``), the query
    and credential path tokens masked: what the console shows, where even the user name is
    nobody's business."""
    m = _SCHEME.match(url)
    if m is None:
        return url
    parts = userinfo(url)
    if parts is None:
        return m.group(1) + _mask_rest(m.group(2))
    scheme, _, rest = parts
    return f"{scheme}{MASK}@{_mask_rest(rest)}"


def url_secrets(url: str) -> list[str]:
    """The pieces of ``url`` that :func:`mask_url` hides (raw and percent-decoded), longest
    first: to scrub them from a text that quotes them outside the URL (an FFmpeg error)."""
    m = _SCHEME.match(url)
    if m is None:
        return []
    found: set[str] = set()
    parts = userinfo(url)
    rest = m.group(2)
    if parts is not None:
        user, colon, password = parts[1].partition(":")
        found.add(password if colon else user)
        rest = parts[2]
    _, segments, query, fragment = _split_rest(rest)
    found.update(s for s in segments if _credential_segment(s))
    found.update(p for p in (query, fragment) if p)
    if query:  # each value alone too; one-character values ("1") would mangle the text
        found.update(v for v in (i.partition("=")[2] for i in query.split("&")) if len(v) > 1)
    found |= {unquote(s) for s in found}
    return sorted((s for s in found if s), key=len, reverse=True)
