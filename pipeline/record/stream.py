"""Opening a camera's stream for recording, and the recordings folder: FFmpeg's options per
kind of URL, errors worded without the URL's secrets (a camera URL may hold a password)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import av

from pipeline.common.errors import InputError, UserError
from pipeline.common.streams import protocols_for, unsafe_character
from pipeline.common.urls import mask_url


class StreamUnavailable(UserError):
    """A stream that cannot be opened or read; the message masks the URL's secrets."""


def check_writable_dir(root: Path) -> Path:
    """``root``, created if missing, or :class:`InputError` naming it when it cannot be written."""
    root = Path(root)
    try:
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=root, prefix=".write-test-"):
            pass
    except OSError as e:
        raise InputError(
            f"recordings dir {root}: cannot write there ({e.strerror or type(e).__name__})"
        ) from None
    return root


def open_options(url: str, open_timeout_s: float) -> dict[str, str]:
    """FFmpeg's options for reading ``url``: its kind's protocols only, RTSP over TCP (UDP loses
    packets on busy hosts), a socket timeout and a short probe."""
    opts = {"protocol_whitelist": protocols_for(url), "analyzeduration": "500000"}
    if url.lower().startswith(("rtsp://", "rtsps://")):
        opts["rtsp_transport"] = "tcp"
        opts["timeout"] = str(int(open_timeout_s * 1_000_000))  # socket I/O, microseconds
    return opts


def error_text(e: BaseException) -> str:
    """An FFmpeg error without the file name it carries (a camera URL may hold a password)."""
    if isinstance(e, UserError):
        return str(e)  # written to be shown: the URL masked
    if isinstance(e, av.FFmpegError):
        return f"{type(e).__name__}: {e.strerror or 'error'}"
    if isinstance(e, OSError) and e.strerror:
        return f"{type(e).__name__}: {e.strerror}"
    return type(e).__name__


def open_stream(url: str, open_timeout_s: float = 10.0, read_timeout_s: float = 10.0):
    """The input container of ``url`` with its first video stream, or :class:`StreamUnavailable`
    (the URL masked)."""
    if unsafe_character(url) is not None:
        raise StreamUnavailable(f"{mask_url(url)!r}: control character or whitespace in the URL")
    try:
        container = av.open(
            url, options=open_options(url, open_timeout_s), timeout=(open_timeout_s, read_timeout_s)
        )
    except (av.FFmpegError, OSError) as e:
        raise StreamUnavailable(f"cannot open {mask_url(url)} ({error_text(e)})") from None
    if not container.streams.video:
        container.close()
        raise StreamUnavailable(f"{mask_url(url)} has no video stream")
    return container
