#!/usr/bin/python3
"""Serve video files as looping live RTSP cameras (the local stand-in for real IP cameras).

Runs under Debian's system Python, which has GStreamer's introspection bindings (python3-gi,
gir1.2-gst-rtsp-server-1.0); the project's own Python does not.

    /usr/bin/python3 deploy/local/rtsp_server.py --port 8554 people-detection.mp4 lobby=classroom.mp4

serves ``rtsp://127.0.0.1:8554/people-detection`` and ``rtsp://127.0.0.1:8554/lobby`` and prints
one ``READY url...`` line on stdout once it listens.

How: H.264 files are not re-encoded. A small demux pipeline per stream
(``filesrc ! qtdemux ! h264parse ! appsink``) hands access units to the RTSP media's ``appsrc``
(``appsrc ! h264parse ! rtph264pay``). At end of file the demux pipeline is seeked back to 0 and
the timestamps get an offset, so the stream never ends and is paced at the file's own frame rate,
like a live camera. Files that are not H.264 are decoded and re-encoded with x264 instead.
One media is shared by all clients of a mount; when the last one leaves it is torn down and the
next client starts a fresh loop.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import re
import signal
import socket
import sys
import threading
from pathlib import Path

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstApp", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstApp, GstRtspServer  # noqa: E402

MOUNT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
PROBE_TIMEOUT_S = 10
PULL_TIMEOUT_NS = 5 * Gst.SECOND
PACING_SLICE_S = 0.05  # longest uninterrupted sleep, so a stop is noticed quickly
DEFAULT_FRAME_NS = Gst.SECOND // 25
H264_CAPS = "video/x-h264,stream-format=byte-stream,alignment=au"
MEDIA_LAUNCH = (
    "( appsrc name=src is-live=true format=time do-timestamp=false ! "
    "h264parse config-interval=-1 ! rtph264pay name=pay0 pt=96 config-interval=1 )"
)

_ = GstApp  # imported for its side effect: typed AppSrc/AppSink methods (try_pull_sample, ...)


class SourceError(Exception):
    """A file that cannot be served; the message names the file."""


def log(message: str) -> None:
    """Diagnostics go to stderr; stdout carries only the READY line."""
    with contextlib.suppress(OSError):  # nobody reads stderr any more (a dead parent)
        print(f"rtsp_server: {message}", file=sys.stderr, flush=True)


# --- arguments -----------------------------------------------------------------------------------


def parse_source(arg: str) -> tuple[str, Path]:
    """``FILE`` is served under its stem, ``NAME=FILE`` under NAME."""
    name, sep, rest = arg.partition("=")
    if sep and MOUNT_NAME.match(name) and not Path(arg).exists():
        path = Path(rest)
    else:
        name, path = Path(arg).stem, Path(arg)
    if not MOUNT_NAME.match(name):
        raise SourceError(
            f"{arg}: {name!r} is not a usable mount name (letters, digits, '_', '-', '.'); "
            "give one as NAME=FILE"
        )
    if not path.is_file():
        raise SourceError(f"{path}: no such file")
    return name, path.resolve()


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, dict[str, Path]]:
    parser = argparse.ArgumentParser(description="Serve video files as looping live RTSP streams.")
    parser.add_argument("--port", type=int, default=8554, help="RTSP port (0: any free port)")
    parser.add_argument("--bind", default="127.0.0.1", help="address to listen on")
    parser.add_argument(
        "--reencode", action="store_true", help="decode and re-encode with x264 even for H.264"
    )
    parser.add_argument(
        "--exit-with-stdin",
        action="store_true",
        help="exit when stdin closes (a parent process holds the pipe; no orphans if it dies)",
    )
    parser.add_argument("files", nargs="+", metavar="[NAME=]FILE")
    args = parser.parse_args(argv)
    if not 0 <= args.port <= 65535:
        parser.error(f"--port {args.port}: not a TCP port")
    sources: dict[str, Path] = {}
    for arg in args.files:
        name, path = parse_source(arg)
        if name in sources:
            raise SourceError(f"{arg}: mount name {name!r} is used twice; give one as NAME=FILE")
        sources[name] = path
    return args, sources


# --- reading a file in a loop --------------------------------------------------------------------


def demux_description(path: Path, reencode: bool) -> str:
    """Passthrough for H.264 files, x264 (zero latency, fast) for anything else."""
    location = GLib.strescape(str(path), None)
    if reencode:
        body = (
            f'filesrc location="{location}" ! decodebin ! videoconvert ! video/x-raw,format=I420 ! '
            "x264enc tune=zerolatency speed-preset=ultrafast key-int-max=30"
        )
    else:
        body = f'filesrc location="{location}" ! qtdemux ! h264parse config-interval=-1'
    return f"{body} ! {H264_CAPS} ! appsink name=sink sync=false max-buffers=8"


def bus_error(pipeline: Gst.Pipeline) -> str | None:
    """The first error posted on the pipeline's bus, if any (for probe diagnostics)."""
    message = pipeline.get_bus().timed_pop_filtered(Gst.SECOND, Gst.MessageType.ERROR)
    if message is None:
        return None
    err, _debug = message.parse_error()
    return err.message


def probe(path: Path, reencode: bool) -> Gst.Caps:
    """Preroll the file once and return its H.264 caps, or raise SourceError saying why not."""
    pipeline = Gst.parse_launch(demux_description(path, reencode))
    try:
        pipeline.set_state(Gst.State.PAUSED)
        result, _state, _pending = pipeline.get_state(PROBE_TIMEOUT_S * Gst.SECOND)
        sample = None
        if result == Gst.StateChangeReturn.SUCCESS:
            sample = pipeline.get_by_name("sink").try_pull_preroll(Gst.SECOND)
        if sample is None:
            why = (bus_error(pipeline) or "").rstrip(
                "."
            ) or f"no video frame (waited up to {PROBE_TIMEOUT_S} s)"
            raise SourceError(f"{path}: cannot read as {'video' if reencode else 'H.264'}: {why}")
        return sample.get_caps()
    finally:
        pipeline.set_state(Gst.State.NULL)


def choose_mode(path: Path, force_reencode: bool) -> tuple[bool, Gst.Caps]:
    """Prefer passthrough; fall back to re-encoding rather than giving up on a file."""
    if not force_reencode:
        try:
            return False, probe(path, reencode=False)
        except (SourceError, GLib.Error) as e:
            log(f"{e}; falling back to decode + x264enc")
    try:
        return True, probe(path, reencode=True)
    except GLib.Error as e:
        raise SourceError(f"{path}: cannot build a pipeline: {e.message}") from e


class FileLoop:
    """H.264 access units of one file, forever, with timestamps that keep increasing.

    Output times start at 0 and each pass over the file continues where the previous one ended,
    so a reader sees one endless stream at the file's own frame rate.
    """

    def __init__(self, path: Path, reencode: bool) -> None:
        self.path = path
        self.pipeline = Gst.parse_launch(demux_description(path, reencode))
        self.sink = self.pipeline.get_by_name("sink")
        self.stopped = threading.Event()
        self._pass_start: int | None = None  # first dts of the current pass, file time
        self._offset = 0  # output time at which the current pass starts
        self._end = 0  # output time just after the latest frame
        self._frame_ns = DEFAULT_FRAME_NS

    def _drain_bus(self) -> None:
        """Log problems and discard the rest: nothing else reads this bus, so it would only grow.

        (Polled rather than a sync handler: PyGObject leaks the messages a sync handler sees.)
        """
        bus = self.pipeline.get_bus()
        while (message := bus.pop()) is not None:
            if message.type == Gst.MessageType.ERROR:
                log(f"{self.path}: {message.parse_error()[0].message}")
            elif message.type == Gst.MessageType.WARNING:
                log(f"{self.path}: warning: {message.parse_warning()[0].message}")

    def start(self) -> None:
        if self.pipeline.set_state(Gst.State.PLAYING) == Gst.StateChangeReturn.FAILURE:
            raise SourceError(f"{self.path}: demux pipeline failed to start")

    def stop(self) -> None:
        self.stopped.set()
        self.pipeline.set_state(Gst.State.NULL)

    def next_buffer(self) -> Gst.Buffer | None:
        """The next access unit (rewinding at end of file); None when stopped or broken."""
        for _attempt in range(2):
            sample = self.sink.try_pull_sample(PULL_TIMEOUT_NS)
            if sample is not None:
                return self._retime(sample.get_buffer())
            self._drain_bus()
            if self.stopped.is_set():
                return None
            if not self.sink.is_eos():
                log(f"{self.path}: no frame within {PULL_TIMEOUT_NS // Gst.SECOND} s")
                return None
            self._rewind()
        log(f"{self.path}: no frames after rewinding")
        return None

    def _rewind(self) -> None:
        self._offset, self._pass_start = self._end, None
        flags = Gst.SeekFlags.FLUSH | Gst.SeekFlags.KEY_UNIT
        if not self.pipeline.seek_simple(Gst.Format.TIME, flags, 0):
            log(f"{self.path}: seek to start failed")

    def _retime(self, buf: Gst.Buffer) -> Gst.Buffer:
        dts = buf.dts if buf.dts != Gst.CLOCK_TIME_NONE else buf.pts
        if self._pass_start is None:
            self._pass_start = dts
        shift = self._offset - self._pass_start
        out = buf.copy()  # shallow: shares the memory, owns the timestamps
        out.dts = dts + shift
        out.pts = buf.pts + shift if buf.pts != Gst.CLOCK_TIME_NONE else out.dts
        if buf.duration != Gst.CLOCK_TIME_NONE and buf.duration > 0:
            self._frame_ns = buf.duration
        out.duration = self._frame_ns
        self._end = max(self._end, out.dts + self._frame_ns)
        return out


# --- feeding the RTSP media ----------------------------------------------------------------------


class LiveFeeder:
    """Pushes a FileLoop into a live appsrc, each frame at its running time, like a camera."""

    def __init__(self, appsrc: GstApp.AppSrc, loop: FileLoop) -> None:
        self.appsrc = appsrc
        self.loop = loop
        self._base: int | None = None  # running time of the first frame
        self._handler = appsrc.connect("need-data", self.on_need_data)

    def close(self) -> None:
        """Stop reading and let go of the appsrc (its handler would keep us alive otherwise)."""
        self.loop.stop()
        self.appsrc.disconnect(self._handler)

    def on_need_data(self, appsrc: GstApp.AppSrc, _length: int) -> None:
        buf = self.loop.next_buffer()
        if buf is None:
            if not self.loop.stopped.is_set():
                appsrc.end_of_stream()
            return
        clock = appsrc.get_clock()
        if clock is not None:
            now = clock.get_time() - appsrc.get_base_time()
            if self._base is None:
                self._base = max(now, 0)
            buf.dts += self._base
            buf.pts += self._base
            self._wait_until(clock, buf.dts)
        if not self.loop.stopped.is_set():
            appsrc.push_buffer(buf)

    def _wait_until(self, clock: Gst.Clock, running_time: int) -> None:
        """Sleep in short slices so that a stopped media never blocks for long."""
        while not self.loop.stopped.is_set():
            left = running_time - (clock.get_time() - self.appsrc.get_base_time())
            if left <= 0:
                return
            self.loop.stopped.wait(min(left / Gst.SECOND, PACING_SLICE_S))


class LoopingFactory(GstRtspServer.RTSPMediaFactory):
    """One shared live media per mount, fed from its own FileLoop."""

    def __init__(self, name: str, path: Path, reencode: bool, caps: Gst.Caps) -> None:
        super().__init__()
        self.name, self.path, self.reencode, self.caps = name, path, reencode, caps
        self.set_launch(MEDIA_LAUNCH)
        self.set_shared(True)
        self.set_eos_shutdown(False)
        self.connect("media-configure", self._on_media_configure)

    def _on_media_configure(self, _factory: object, media: GstRtspServer.RTSPMedia) -> None:
        appsrc = media.get_element().get_by_name("src")
        appsrc.set_caps(self.caps)
        loop = FileLoop(self.path, self.reencode)
        feeder = LiveFeeder(appsrc, loop)
        _LIVE.add(feeder)
        media.connect("unprepared", lambda _media: self._on_unprepared(feeder))
        try:
            loop.start()
        except SourceError as e:
            log(str(e))
        log(f"/{self.name}: media started for a new client")

    def _on_unprepared(self, feeder: LiveFeeder) -> None:
        _LIVE.discard(feeder)
        feeder.close()
        log(f"/{self.name}: media stopped (no clients left)")


_LIVE: set[LiveFeeder] = set()  # the feeders of the media that are playing now


# --- server --------------------------------------------------------------------------------------


def bind_error(bind: str, port: int) -> str:
    """Why the RTSP server could not listen, in the OS's words when it can be found out."""
    family = socket.AF_INET6 if ":" in bind else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((bind, port))
    except OSError as e:
        reason = "already in use" if e.errno == errno.EADDRINUSE else e.strerror
        return f"cannot listen on {bind}:{port}: port {port} {reason}"
    return f"cannot listen on {bind}:{port}"


def build_server(args: argparse.Namespace, sources: dict[str, Path]) -> GstRtspServer.RTSPServer:
    server = GstRtspServer.RTSPServer()
    server.set_address(args.bind)
    server.set_service(str(args.port))
    mounts = server.get_mount_points()
    for name, path in sources.items():
        reencode, caps = choose_mode(path, args.reencode)
        mounts.add_factory(f"/{name}", LoopingFactory(name, path, reencode, caps))
        log(f"/{name}: {path} ({'re-encoded' if reencode else 'H.264 passthrough'})")
    return server


def shutdown(main_loop: GLib.MainLoop) -> bool:
    log("stopping")
    for feeder in list(_LIVE):
        feeder.loop.stop()
    main_loop.quit()
    return GLib.SOURCE_REMOVE


def watch_stdin(main_loop: GLib.MainLoop) -> None:
    """Quit when stdin reaches end of file: the parent that started us has gone."""

    def on_stdin(_channel: GLib.IOChannel, _condition: GLib.IOCondition) -> bool:
        try:
            data = os.read(0, 4096)
        except OSError:
            data = b""
        if data:
            return GLib.SOURCE_CONTINUE
        log("stdin closed")
        shutdown(main_loop)
        return GLib.SOURCE_REMOVE

    conditions = GLib.IOCondition.IN | GLib.IOCondition.HUP | GLib.IOCondition.ERR
    GLib.io_add_watch(GLib.IOChannel.unix_new(0), GLib.PRIORITY_DEFAULT, conditions, on_stdin)


def main(argv: list[str] | None = None) -> int:
    Gst.init(None)
    try:
        args, sources = parse_args(argv)
        server = build_server(args, sources)
    except SourceError as e:
        log(f"error: {e}")
        return 2
    if server.attach(None) == 0:
        log(f"error: {bind_error(args.bind, args.port)}")
        return 3
    host = f"[{args.bind}]" if ":" in args.bind else args.bind
    port = server.get_bound_port()
    urls = [f"rtsp://{host}:{port}/{name}" for name in sources]
    main_loop = GLib.MainLoop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_HIGH, signum, shutdown, main_loop)
    if args.exit_with_stdin:
        watch_stdin(main_loop)
    print("READY " + " ".join(urls), flush=True)
    main_loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
