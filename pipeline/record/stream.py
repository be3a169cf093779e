"""Opening a camera's stream for recording, and the recordings folder: FFmpeg's options per
kind of URL, errors worded without the URL's secrets (a camera URL may hold a password)."""

from __future__ import annotations

import io
import tempfile
from pathlib import Path

import av

from pipeline.common.errors import InputError, UserError
from pipeline.common.streams import protocols_for, unsafe_character
from pipeline.common.urls import mask_url


class StreamUnavailable(UserError):
    """A stream that cannot be opened or read; the message masks the URL's secrets."""


class UnrecordableStream(UserError):
    """A stream that opens but that MP4 segments cannot hold (no video, or a video codec the MP4
    format has no place for): reconnecting would not change it, so the recording stops."""


def codec_text(stream) -> str:
    """``name (long name)`` of a stream's codec, as FFmpeg names it."""
    try:
        codec = stream.codec_context.codec
        name, long_name = codec.name, codec.long_name
    except Exception:  # no codec FFmpeg knows: its id is all there is
        return str(getattr(stream, "codec_tag", "") or "an unknown codec")
    return f"{name} ({long_name})" if long_name and long_name != name else name


def check_recordable(container, url: str, source: str = "url") -> None:
    """:class:`UnrecordableStream` naming the codec when ``container``'s first video stream
    cannot be copied into an MP4 segment (or there is none); ``source`` names the setting the
    URL came from (``url``, ``record_url``)."""
    if not container.streams.video:
        kinds = sorted({s.type for s in container.streams}) or ["no streams"]
        raise UnrecordableStream(
            f"{source} {mask_url(url)} has no video stream (it has {', '.join(kinds)})"
        )
    vs = container.streams.video[0]
    try:  # the muxer is the judge: the same template the segments are made from
        with av.open(io.BytesIO(), "w", format="mp4") as probe:
            probe.add_stream_from_template(vs)
    except (ValueError, av.FFmpegError):
        raise UnrecordableStream(
            f"{source} {mask_url(url)}: its video is {codec_text(vs)}, which MP4 segments "
            "cannot hold (the recorder copies packets, it never re-encodes); set the camera's "
            "stream to H.264 or H.265, or turn its recording off"
        ) from None


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


def open_stream(
    url: str, open_timeout_s: float = 10.0, read_timeout_s: float = 10.0, source: str = "url"
):
    """The input container of ``url`` with its first video stream, :class:`StreamUnavailable`
    (cannot open; the URL masked) or :class:`UnrecordableStream` (no video MP4 can hold)."""
    if unsafe_character(url) is not None:
        raise StreamUnavailable(f"{mask_url(url)!r}: control character or whitespace in the URL")
    try:
        container = av.open(
            url, options=open_options(url, open_timeout_s), timeout=(open_timeout_s, read_timeout_s)
        )
    except (av.FFmpegError, OSError) as e:
        raise StreamUnavailable(f"cannot open {mask_url(url)} ({error_text(e)})") from None
    try:
        check_recordable(container, url, source)
    except UnrecordableStream:
        container.close()
        raise
    return container
