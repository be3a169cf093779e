"""One reader thread per camera: decode with OpenCV's FFmpeg backend, keep only the latest frame.

Realtime over completeness: the reader decodes every frame the camera sends (so the stream never
backs up inside FFmpeg), but only hands over the newest one at the camera's detection rate. A frame
that is replaced before the detector took it is counted as dropped, never queued.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from dataclasses import dataclass, field

import cv2

from pipeline.cameras.spec import CameraSpec, is_file_url, mask_url, unsafe_character
from pipeline.common.contracts import Frame
from pipeline.common.errors import UserError
from pipeline.common.streams import ANY_CAMERA_PROTOCOLS, protocols_for

log = logging.getLogger(__name__)

# FFmpeg options of every capture, unless the user set OPENCV_FFMPEG_CAPTURE_OPTIONS.
_USER_CAPTURE_OPTIONS = os.environ.get("OPENCV_FFMPEG_CAPTURE_OPTIONS")
DEFAULT_PROBE_S = 0.5
# FFmpeg protocols a camera may use (protocol_whitelist, pipeline.common.streams). The process
# default: ANY_CAMERA_PROTOCOLS, what a capture opened outside open_capture() gets (footage readers).
_probe_s = DEFAULT_PROBE_S
# OpenCV reads OPENCV_FFMPEG_CAPTURE_OPTIONS at each open: the per-camera whitelist is set and
# the open made under this lock (OpenCV opens one capture at a time per process anyway).
_OPEN_LOCK = threading.Lock()


def capture_options(protocols: str = ANY_CAMERA_PROTOCOLS) -> str:
    """The FFmpeg options of a capture limited to ``protocols``: the user's
    OPENCV_FFMPEG_CAPTURE_OPTIONS when set (the whitelist added unless they set their own), else
    RTSP over TCP and the ``ingest.probe_s`` probe."""
    if _USER_CAPTURE_OPTIONS is not None:
        base = _USER_CAPTURE_OPTIONS
        if "protocol_whitelist;" in base:
            return base
    else:
        base = f"rtsp_transport;tcp|analyzeduration;{int(_probe_s * 1_000_000)}"
    return f"{base}|protocol_whitelist;{protocols}" if base else f"protocol_whitelist;{protocols}"


def configure_ffmpeg(probe_s: float = DEFAULT_PROBE_S) -> str:
    """Set the FFmpeg options of the captures this process opens (process-wide in OpenCV).

    RTSP over TCP: UDP loses packets on busy hosts and shows up as smeared frames. A short probe
    (``analyzeduration``): OpenCV opens one capture at a time per process (a global lock around
    the open), and FFmpeg's default probe of a live stream (up to 5 s, 2-3 s on the demo cameras)
    made every camera wait for all the cameras before it (``ingest.probe_s``). A protocol
    whitelist: the camera protocols only (:func:`open_capture` narrows it per camera).
    """
    global _probe_s
    _probe_s = probe_s
    options = capture_options()
    os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"] = options
    return options


def open_capture(url: str, params: list[int]) -> cv2.VideoCapture:
    """``cv2.VideoCapture(url)`` on FFmpeg with the protocols of its kind of camera only: a
    file camera reads local files and nothing else, a network camera never reads a local file.
    A URL with a control character or whitespace is never handed to FFmpeg (a closed capture)."""
    if unsafe_character(url) is not None:  # validated before; the last guard before FFmpeg
        log.error("refusing to open %r: control character or whitespace", mask_url(url))
        return cv2.VideoCapture()
    protocols = protocols_for(url)
    with _OPEN_LOCK:
        default = os.environ.get("OPENCV_FFMPEG_CAPTURE_OPTIONS")
        os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"] = capture_options(protocols)
        try:
            return cv2.VideoCapture(url, cv2.CAP_FFMPEG, params)
        finally:
            if default is None:
                os.environ.pop("OPENCV_FFMPEG_CAPTURE_OPTIONS", None)
            else:
                os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"] = default


configure_ffmpeg()
# FFmpeg's and OpenCV's own lines ("Connection refused", "Stream timeout triggered", ...) would
# repeat on every reconnect attempt; the reader logs one line per state change instead.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET
cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)

MAX_CONSECUTIVE_BAD_FRAMES = 25


@dataclass(slots=True)
class ReaderStats:
    state: str = "starting"  # starting | connecting | streaming | backoff | finished | stopped
    frames_decoded: int = 0
    frames_delivered: int = 0
    frames_dropped: int = 0
    frames_corrupt: int = 0
    reconnects: int = 0
    # CPU seconds of the reader thread (FFmpeg decodes on it with ingest.decode_threads: 1):
    # what each camera costs, whether or not the detector takes its frames
    decode_cpu_s: float = 0.0
    last_error: str | None = None
    last_frame_ts: float | None = None
    extra: dict = field(default_factory=dict)


def is_file_source(url: str) -> bool:
    return is_file_url(url)


def backoff_delays(initial: float, maximum: float, jitter: float, rng: random.Random):
    """Exponential backoff with jitter, so a fleet of workers does not reconnect in lock-step."""
    delay = initial
    while True:
        yield delay * (1 + rng.uniform(-jitter, jitter))
        delay = min(delay * 2, maximum)


class CameraUnavailable(UserError):
    """A camera URL that could not be opened or read; the message masks the password."""


def probe_camera(url: str, open_timeout_s: float = 10.0, read_timeout_s: float = 10.0):
    """Open ``url`` once and read one frame: ``(width, height, fps)`` (fps 0.0 when the stream
    does not say), or :class:`CameraUnavailable` saying what failed."""
    cap = open_capture(
        url,
        [
            cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
            int(open_timeout_s * 1000),
            cv2.CAP_PROP_READ_TIMEOUT_MSEC,
            int(read_timeout_s * 1000),
        ],
    )
    try:
        if not cap.isOpened():
            raise CameraUnavailable(
                f"cannot open {mask_url(url)} (unreachable, wrong URL or credentials)"
            )
        ok, image = cap.read()
        if not ok or image is None or image.ndim != 3:
            raise CameraUnavailable(f"{mask_url(url)} opened but sent no decodable frame")
        fps = cap.get(cv2.CAP_PROP_FPS) or 0.0
        return int(image.shape[1]), int(image.shape[0]), float(fps if 0 < fps < 1000 else 0.0)
    finally:
        cap.release()


class CameraReader:
    """Owns one ``cv2.VideoCapture``; survives camera outages by reconnecting with backoff."""

    def __init__(
        self,
        spec: CameraSpec,
        fps: float,
        open_timeout_s: float = 10.0,
        read_timeout_s: float = 10.0,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 2.0,
        backoff_jitter: float = 0.2,
        on_frame: callable | None = None,
        decode_threads: int = 1,
    ) -> None:
        self.spec = spec
        self.camera_id = spec.id
        self.interval = 1.0 / fps
        self.open_timeout_ms = int(open_timeout_s * 1000)
        self.read_timeout_ms = int(read_timeout_s * 1000)
        self.decode_threads = int(decode_threads)
        self._backoff = (backoff_initial_s, backoff_max_s, backoff_jitter)
        self._on_frame = on_frame
        self.stats = ReaderStats()
        self.epoch = int(time.time() * 1000)
        self._seq = -1
        self._lock = threading.Lock()
        self._latest: Frame | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"reader-{spec.id}", daemon=True)
        self._file = is_file_source(spec.url)

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> CameraReader:
        self._thread.start()
        return self

    def stop(self, join_timeout: float | None = 0.0) -> None:
        """Signal the thread; it may be inside a blocking read, so joining is optional."""
        self._stop.set()
        if join_timeout:
            self._thread.join(join_timeout)

    def join(self, timeout_s: float) -> None:
        self._thread.join(timeout_s)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    # -- consumer side ---------------------------------------------------------------------
    def take(self) -> Frame | None:
        """Return the newest frame not handed out yet, or None."""
        with self._lock:
            frame, self._latest = self._latest, None
        if frame is not None:
            self.stats.frames_delivered += 1
        return frame

    def pending_since(self) -> float | None:
        with self._lock:
            return self._latest.capture_ts if self._latest is not None else None

    # -- reader thread ---------------------------------------------------------------------
    def _open(self) -> cv2.VideoCapture | None:
        params = [
            cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
            self.open_timeout_ms,
            cv2.CAP_PROP_READ_TIMEOUT_MSEC,
            self.read_timeout_ms,
        ]
        if self.decode_threads > 0:
            params += [cv2.CAP_PROP_N_THREADS, self.decode_threads]
        cap = open_capture(self.spec.url, params)
        if not cap.isOpened():
            cap.release()
            return None
        return cap

    def _run(self) -> None:
        rng = random.Random(hash(self.camera_id))
        delays = None
        down_since: float | None = None  # while the camera is lost: when, for the "back" line
        attempts = 0
        while not self._stop.is_set():
            self.stats.state = "connecting"
            cap = self._open()
            if cap is None:
                self.stats.last_error = "cannot open stream (unreachable, wrong URL or credentials)"
                if self._file:
                    log.error("%s: cannot open file", self.spec)
                    self.stats.state = "finished"
                    return
                delays = delays or backoff_delays(*self._backoff, rng)
                wait = next(delays)
                attempts += 1
                if down_since is None:  # one line per outage, not one per attempt
                    down_since = time.monotonic()
                    log.warning(
                        "%s: %s; retrying every %.1f s at most",
                        self.spec,
                        self.stats.last_error,
                        self._backoff[1],
                    )
                else:
                    log.debug("%s: still unreachable; retry in %.1f s", self.spec, wait)
                self.stats.state = "backoff"
                self._stop.wait(wait)
                continue
            if down_since is not None:
                log.info(
                    "%s: back after %.1f s (%d attempts)",
                    self.spec,
                    time.monotonic() - down_since,
                    attempts,
                )
                down_since, attempts = None, 0
            else:
                log.info("%s: connected", self.spec)
            self.stats.state = "streaming"
            got_frames = self._read_loop(cap)
            cap.release()
            if self._stop.is_set():
                break
            if self._file:
                log.info("%s: end of file", self.spec)
                self.stats.state = "finished"
                return
            if got_frames:
                delays = None  # the stream worked: start the backoff again from the beginning
            self.stats.reconnects += 1
            delays = delays or backoff_delays(*self._backoff, rng)
            wait = next(delays)
            log.warning("%s: stream lost (%s); reconnecting", self.spec, self.stats.last_error)
            down_since, attempts = time.monotonic(), 0
            self.stats.state = "backoff"
            self._stop.wait(wait)
        self.stats.state = "stopped"

    def _read_loop(self, cap: cv2.VideoCapture) -> bool:
        """Decode until the stream fails; returns whether any frame arrived."""
        got_any = False
        bad_in_a_row = 0
        next_due = 0.0
        file_interval = 0.0
        if self._file:
            native = cap.get(cv2.CAP_PROP_FPS) or 0.0
            file_interval = 1.0 / native if 0 < native < 240 else 0.0
        next_file_frame = time.monotonic()
        while not self._stop.is_set():
            if not cap.grab():
                self.stats.last_error = "read failed or timed out"
                return got_any
            now = time.time()
            self._seq += 1
            self.stats.frames_decoded += 1
            self.stats.decode_cpu_s = time.thread_time()  # every frame, taken or not
            if file_interval:  # recorded footage plays at its own rate, like a camera would
                next_file_frame += file_interval
                sleep = next_file_frame - time.monotonic()
                if sleep > 0:
                    self._stop.wait(sleep)
            if now < next_due:
                continue  # decoded (keeps FFmpeg in sync) but not converted: not due yet
            ok, image = cap.retrieve()
            if not ok or image is None or image.size == 0 or image.ndim != 3:
                self.stats.frames_corrupt += 1
                bad_in_a_row += 1
                if bad_in_a_row >= MAX_CONSECUTIVE_BAD_FRAMES:
                    self.stats.last_error = f"{bad_in_a_row} corrupt frames in a row"
                    return got_any
                continue
            bad_in_a_row = 0
            got_any = True
            next_due = max(next_due + self.interval, now) if next_due else now + self.interval
            frame = Frame(self.camera_id, self._seq, self.epoch, now, image)
            with self._lock:
                if self._latest is not None:
                    self.stats.frames_dropped += 1
                self._latest = frame
            self.stats.last_frame_ts = now
            if self._on_frame is not None:
                self._on_frame(self.camera_id)
        return got_any
