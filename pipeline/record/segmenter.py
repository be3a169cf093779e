"""Recording one camera: its packets copied (never decoded) into fragmented MP4 segments.

A :class:`Recorder` reads the camera's video stream with PyAV (FFmpeg's demuxer), and writes each
packet unchanged into the current segment (FFmpeg's muxer). A new segment starts at the first
keyframe at least ``segment_s`` after the current one started, so every segment starts on a
keyframe and plays on its own. Segments are fragmented MP4 (a fragment per keyframe): a recorder
killed mid-segment leaves a file that plays up to its last complete fragment.

Time (docs/recordings.md, "Time"): a packet's time is its presentation time stamp (PTS) placed on
the wall clock the ingest worker stamps frames with (``time.time()`` when a frame arrives,
``capture_ts``): ``wall = offset + pts_s``, where ``offset`` is the smallest ``arrival - dts_s``
seen over the previous segment (arrival = ``time.time()`` when the demuxer hands the packet over;
DTS because packets are sent in decoding order). Network delays only make a packet late, never
early, so the smallest difference is the packet that came quickest: the estimate of when the
camera sent it. The first segment waits ``settle_s`` of packets before it starts, so the burst
FFmpeg buffers while probing a new stream does not count as arriving now. A new offset is applied
at segment boundaries only, so times inside a segment are exactly the camera's PTS spacing.

An outage ends the segment at its last packet, so it shows as a gap before the next segment: a
reconnect starts a new anchor and never stretches a segment over the time the camera was away.
Reconnecting backs off (pipeline.common.retry); each outage logs one line when the stream is
lost, one when the first reconnect fails, one when it is back.

The segment itself (the finished one, and the file being written) is in ``segment.py``; opening
the stream and checking the folder in ``stream.py``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av

from pipeline.common.contracts import validate_camera_id
from pipeline.common.errors import InputError
from pipeline.common.retry import Stopped, retry_with_backoff
from pipeline.common.streams import is_file_url, unsafe_character
from pipeline.common.urls import mask_url
from pipeline.record.events import EventGate, EventSchedule
from pipeline.record.layout import relative_path
from pipeline.record.metrics import (
    RECORDING_PAUSED,
    RECORDING_PAUSES,
    RECORDING_UNRECORDABLE,
    pause_reason,
)
from pipeline.record.segment import MOVFLAGS, Segment, SegmentOutput, shown_end
from pipeline.record.stream import (
    StreamUnavailable,
    UnrecordableStream,
    check_writable_dir,
    error_text,
    open_options,
    open_stream,
)

# the names this module has always offered (the index, the exports and the tests import them)
__all__ = [
    "MOVFLAGS",
    "Recorder",
    "RecorderStats",
    "Segment",
    "StreamUnavailable",
    "UnrecordableStream",
    "check_writable_dir",
    "error_text",
    "open_options",
    "open_stream",
    "shown_end",
]

log = logging.getLogger(__name__)

#: Packets a new connection buffers before its first segment (see the module's docstring).
DEFAULT_SETTLE_S = 1.0
#: A packet whose time on the wall clock is this far from its arrival means the camera's clock
#: jumped (a reboot, a wrapped counter): the recorder starts a new segment and a new anchor.
RESYNC_S = 5.0
LAG_SAMPLES = 2000


@dataclass(slots=True)
class RecorderStats:
    # starting | connecting | settling | recording | lost | paused | stopped | failed
    state: str = "starting"
    segments: int = 0
    packets: int = 0
    bytes: int = 0
    reconnects: int = 0
    open_failures: int = 0  # failed attempts to open the stream
    last_error: str | None = None
    cpu_s: float = 0.0  # CPU seconds of the recorder's thread
    # arrival - wall time of each packet (s), the latest LAG_SAMPLES: how late packets come
    # after the time they are stamped with (>= 0 but for jitter between anchors)
    lag_s: deque = field(default_factory=lambda: deque(maxlen=LAG_SAMPLES))


class Recorder:
    """Records one camera into ``<root>/<camera>/...``; survives outages by reconnecting.

    ``on_segment`` is called (on the recorder's thread) with each finished :class:`Segment`: the
    index writer. Its errors are logged once per failing spell, never stop the recording.

    ``events``: record only around the events it schedules (``record.mode: events``,
    ``events.py``); None records continuously. ``realtime=False`` reads a file as fast as it
    can, each packet arriving at the file's start plus its decoding time (tests, imports).
    """

    def __init__(
        self,
        camera_id: str,
        url: str,
        root: Path | str,
        *,
        segment_s: float = 10.0,
        open_timeout_s: float = 10.0,
        read_timeout_s: float = 10.0,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 10.0,
        settle_s: float = DEFAULT_SETTLE_S,
        on_segment: Callable[[Segment], None] | None = None,
        source: str = "url",
        events: EventSchedule | None = None,
        realtime: bool = True,
    ) -> None:
        try:
            self.camera_id = validate_camera_id(camera_id)
        except ValueError as e:
            raise InputError(str(e)) from None
        if unsafe_character(url) is not None:
            raise InputError(
                f"camera {camera_id}: url {mask_url(url)!r} holds a control character or whitespace"
            )
        self.url = url
        self.source = source  # the camera setting the URL is from (url, record_url): for errors
        self.root = check_writable_dir(Path(root))
        self.segment_s = segment_s
        self.open_timeout_s = open_timeout_s
        self.read_timeout_s = read_timeout_s
        self.backoff = (backoff_initial_s, backoff_max_s)
        self.settle_s = settle_s
        self.on_segment = on_segment
        self.stats = RecorderStats()
        self._file = is_file_url(url)
        self.realtime = realtime or not self._file
        self.gate = (
            None
            if events is None
            else EventGate(
                events, self._write, lambda: self._finish_segment(at_keyframe=True), str(self)
            )
        )
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._out: SegmentOutput | None = None
        self._index_failing = False
        self._write_failing = False
        RECORDING_PAUSED.labels(self.camera_id).set(0)
        RECORDING_UNRECORDABLE.labels(self.camera_id).set(0)

    def __str__(self) -> str:
        return f"recorder {self.camera_id} ({mask_url(self.url)})"

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> Recorder:
        self._thread = threading.Thread(
            target=self._thread_main, name=f"record-{self.camera_id}", daemon=True
        )
        self._thread.start()
        return self

    def stop(self, timeout_s: float | None = None) -> None:
        """Finish the current segment and stop; waits for the thread (at most ``timeout_s``,
        default the read timeout plus a margin: a read in progress ends by then)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.read_timeout_s + 5.0 if timeout_s is None else timeout_s)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _thread_main(self) -> None:
        try:
            self.run()
        except UnrecordableStream as e:  # reconnecting would not change it: one line, stop
            self.stats.state, self.stats.last_error = "failed", str(e)
            RECORDING_UNRECORDABLE.labels(self.camera_id).set(1)
            log.error("%s: %s; recording stopped", self, e)
        except StreamUnavailable as e:
            self.stats.state, self.stats.last_error = "failed", str(e)
            log.error("%s: %s", self, e)
        except Exception:
            self.stats.state = "failed"
            log.exception("%s: failed", self)

    # -- the loop ----------------------------------------------------------------------------
    def run(self) -> None:
        """Record until :meth:`stop` (a file URL: until its end). A file that cannot be opened
        raises :class:`StreamUnavailable`; a network camera is retried with backoff."""
        lost_since: float | None = None
        attempts = 0

        def failed(e: BaseException) -> None:
            nonlocal attempts, lost_since
            attempts += 1
            self.stats.open_failures += 1
            self.stats.last_error = error_text(e)
            self.stats.state = "lost"
            if attempts == 1:  # one line for the outage, not one per attempt
                lost_since = lost_since or time.monotonic()
                log.warning(
                    "%s: %s; retrying with backoff (up to %.1f s between attempts)",
                    self,
                    self.stats.last_error,
                    self.backoff[1],
                )

        def opened() -> None:
            nonlocal attempts, lost_since
            if lost_since is not None:
                log.info(
                    "%s: back after %.1f s (%d attempts)",
                    self,
                    time.monotonic() - lost_since,
                    attempts,
                )
            else:
                log.info("%s: connected", self)
            lost_since, attempts = None, 0

        while not self._stop.is_set():
            self.stats.state = "connecting"
            if self._file:
                container = open_stream(
                    self.url, self.open_timeout_s, self.read_timeout_s, self.source
                )
                log.info("%s: opened", self)
            else:
                try:
                    container = retry_with_backoff(
                        lambda: open_stream(
                            self.url, self.open_timeout_s, self.read_timeout_s, self.source
                        ),
                        self._stop,
                        (StreamUnavailable,),
                        *self.backoff,
                        on_failure=failed,
                        on_success=opened,
                    )
                except Stopped:
                    break
            try:
                self._record(container)
            finally:
                self._finish_segment()
                container.close()
            if self._stop.is_set():
                break
            if self._file:
                log.info("%s: end of file", self)
                break
            self.stats.reconnects += 1
            self.stats.state = "lost"
            lost_since = time.monotonic()
            log.warning("%s: stream lost (%s); reconnecting", self, self.stats.last_error)
        self.stats.state = "stopped"

    def _record(self, container) -> None:
        """Copy packets until the stream ends, fails or the recorder is stopped."""
        vs = container.streams.video[0]
        tb: Fraction = vs.time_base
        frame_s = 1.0 / float(vs.average_rate) if vs.average_rate else 0.1
        offset: float | None = None  # wall - pts_s of the current segment
        window = float("inf")  # smallest arrival - dts_s since the current segment began
        first_arrival: float | None = None
        pending: list = []  # packets of the settling phase
        pace: float | None = None  # a file plays at its own rate, like a camera would
        last_due = 0.0
        put = self._write if self.gate is None else self.gate.put
        if self.gate is not None:
            self.gate.reset()
        self.stats.state = "settling"
        try:
            for pkt in container.demux(vs):
                if self._stop.is_set():
                    break
                if pkt.pts is None or pkt.size == 0:
                    continue  # no time stamp (an RTSP session's first packet): cannot place it
                pts_s = float(pkt.pts * tb)
                # packets are sent in decoding order: their arrival is compared with the DTS (a
                # packet without one, e.g. the P frame after a session's first packet, does not
                # count: its PTS is ahead of when it was sent)
                send_s = float(pkt.dts * tb) if pkt.dts is not None else None
                if self._file:
                    due = pts_s if send_s is None else send_s
                    if pace is None:
                        pace = (time.monotonic() if self.realtime else time.time()) - due
                    elif abs(due - last_due) > RESYNC_S:  # its time stamps jump: play on at
                        pace += last_due + frame_s - due  # its rate (not asleep, nor a burst)
                    last_due = due
                    if (
                        self.realtime
                        and (wait := pace + due - time.monotonic()) > 0
                        and self._stop.wait(wait)
                    ):
                        break
                arrival = time.time() if self.realtime else pace + due
                self.stats.packets += 1
                dur_s = float(pkt.duration * tb) if pkt.duration else frame_s
                jump = arrival - (offset + pts_s) if offset is not None else 0.0
                if abs(jump) > RESYNC_S:
                    log.warning(
                        "%s: the stream's time stamps jumped by %.1f s; new segment, new anchor",
                        self,
                        jump,
                    )
                    self._finish_segment()
                    if self.gate is not None:  # the packets held are on the old clock
                        self.gate.ring.clear()
                    offset, window = None, float("inf")
                    first_arrival = arrival - self.settle_s  # settled: start at the next keyframe
                if send_s is not None:
                    window = min(window, arrival - send_s)
                if offset is None:
                    first_arrival = first_arrival if first_arrival is not None else arrival
                    pending.append((pkt, pts_s, send_s, dur_s, arrival))
                    if arrival - first_arrival < self.settle_s:
                        continue
                    offset = window if window < float("inf") else arrival - pts_s
                    self.stats.state = "recording"
                    for p in pending:
                        offset, window = put(vs, *p, offset, window)
                    pending.clear()
                    continue
                offset, window = put(vs, pkt, pts_s, send_s, dur_s, arrival, offset, window)
                self.stats.cpu_s = time.thread_time()
            else:
                self.stats.last_error = "end of stream"
        except (av.FFmpegError, OSError) as e:
            self.stats.last_error = error_text(e)
        finally:
            if pending and offset is None:  # stopped or lost while settling: keep what came
                offset = window if window < float("inf") else pending[0][-1] - pending[0][1]
                for p in pending:
                    offset, window = put(vs, *p, offset, window)
            self.stats.cpu_s = time.thread_time()

    def _write(self, template, pkt, pts_s, send_s, dur_s, arrival, offset, window):
        """Write one packet, starting a new segment on a keyframe when the current one is long
        enough; returns the (offset, window) to carry on with."""
        out = self._out
        wall = offset + pts_s
        if pkt.is_keyframe and (out is None or wall - out.start >= self.segment_s - dur_s / 2):
            if out is not None:
                self._finish_segment(at_keyframe=True)
                if window < float("inf"):
                    offset = window  # the new anchor applies from this boundary on
                wall = offset + pts_s
            window = float("inf")
            out = self._open_segment(template, wall, pkt)
        if send_s is not None:
            window = min(window, arrival - send_s)
            self.stats.lag_s.append(arrival - (offset + send_s))
        if out is None:
            return offset, window  # waiting for a keyframe (or for the disk)
        dts = pkt.dts if pkt.dts is not None else pkt.pts
        dts -= out.base
        if out.last_dts is not None and dts <= out.last_dts:
            dts = out.last_dts + 1  # the muxer needs strictly increasing DTS
        pkt.pts, pkt.dts = pkt.pts - out.base, min(dts, pkt.pts - out.base)
        pkt.stream = out.stream
        try:
            out.container.mux(pkt)
        except (av.FFmpegError, OSError) as e:
            self._write_failed(e)
            self._finish_segment()
            return offset, window
        out.last_dts = pkt.dts
        out.frames += 1
        if pkt.is_keyframe:
            out.complete_end, out.gop = out.max_end, []
        out.gop.append((wall, wall + dur_s))
        out.decoded_until = offset + (pts_s if send_s is None else send_s)
        out.max_end = max(out.max_end, wall + dur_s)
        self.stats.bytes += pkt.size
        return offset, window

    def _open_segment(self, template, start: float, pkt) -> SegmentOutput | None:
        rel = relative_path(self.camera_id, start)
        path = self.root / rel
        base = pkt.dts if pkt.dts is not None else pkt.pts
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._out = SegmentOutput(path, rel, start, template, base)
        except (av.FFmpegError, OSError) as e:
            self._write_failed(e)
            self._out = None
            return None
        if self._write_failing:
            self._write_failing = False
            self.stats.state = "recording"
            RECORDING_PAUSED.labels(self.camera_id).set(0)
            log.info("%s: writing segments again; recording resumed", self)
        return self._out

    def _write_failed(self, e: BaseException) -> None:
        self.stats.last_error = error_text(e)
        if not self._write_failing:  # one line per state change
            self._write_failing = True
            self.stats.state = "paused"
            RECORDING_PAUSED.labels(self.camera_id).set(1)
            RECORDING_PAUSES.labels(self.camera_id, pause_reason(e)).inc()
            log.error(
                "%s: cannot write segments under %s (%s); recording paused, trying again at "
                "each keyframe",
                self,
                self.root,
                self.stats.last_error,
            )

    def _finish_segment(self, at_keyframe: bool = False) -> None:
        out, self._out = self._out, None
        if out is None:
            return
        try:
            out.container.close()
            size = os.path.getsize(out.path)
        except (av.FFmpegError, OSError) as e:
            self._write_failed(e)
            return
        if out.frames == 0:
            out.path.unlink(missing_ok=True)
            return
        seg = Segment(self.camera_id, out.rel, out.start, out.end(at_keyframe), size, out.frames)
        self.stats.segments += 1
        if self.on_segment is None:
            return
        try:
            self.on_segment(seg)
        except Exception as e:  # the index is rebuilt from the files; recording goes on
            if not self._index_failing:
                self._index_failing = True
                log.warning(
                    "%s: cannot index segment %s (%s); it stays on disk (`vigil recordings "
                    "reindex` adds it)",
                    self,
                    seg.path,
                    error_text(e),
                )
        else:
            if self._index_failing:
                self._index_failing = False
                log.info("%s: indexing segments again", self)
