"""The ingest side of the operator console: each camera's newest frame and status in Redis.

Two hashes per camera (docs/console.md, "Redis keys written for the console"):

- ``{p}live:<camera>``: the newest processed frame as JPEG with its detections, at most
  ``ingest.live_jpeg_fps`` per camera (by capture time), TTL 30 s;
- ``{p}camera_status:<camera>``: the reader's state, last error and rates, every 2 s, TTL 15 s.

:class:`LiveView` is a frame listener of the worker. The worker calls it from its detection loop,
so it never waits: a frame it takes goes into a bounded set of pending frames (the newest per
camera; when that set is full the frame is dropped and counted), and one background thread
encodes the JPEG and writes it, one Redis round trip per frame. Status rows go the same way.
``width`` and ``height`` are the frame's; the JPEG is scaled down to 960 pixels wide when the
frame is wider (``encode_jpeg``, as for snapshots); boxes are normalised, so they fit either.

When a camera leaves the worker (removed, disabled, moved to another worker, or the worker
stops), both its keys are deleted, but only while this worker is still the one named in them:
the worker that takes the camera over may already have written its own.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import cv2
import redis

from pipeline.common.contracts import Detection, Frame
from pipeline.common.lifecycle import OutageLog
from pipeline.common.redis import RedisConfig, RedisKeys, redis_client
from pipeline.common.urls import mask_url, url_secrets
from pipeline.ingest.capture import ReaderStats
from pipeline.ingest.frame_store import encode_jpeg

log = logging.getLogger(__name__)

LIVE_TTL_S = 30
STATUS_TTL_S = 15
STATUS_INTERVAL_S = 2.0
_TOLERANCE_S = 1e-3  # capture times are floats: a frame due "now" is not throttled by rounding

# Deletes each key that still names this worker (ARGV[1]): a camera that moved on keeps the
# keys its new worker wrote.
_DELETE_OWNED = """
local n = 0
for _, key in ipairs(KEYS) do
  if redis.call('HGET', key, 'worker') == ARGV[1] then n = n + redis.call('DEL', key) end
end
return n
"""


@dataclass(slots=True)
class CameraStatus:
    """One camera as its worker sees it: the row behind ``{p}camera_status:<camera>``."""

    camera_id: str
    state: str
    last_error: str = ""
    offered_fps: float = 0.0  # frames decoded per second (what the camera delivers)
    processed_fps: float = 0.0  # frames published per second
    frame_ts: float = 0.0  # capture time of the newest processed frame, 0 if none yet
    dropped: int = 0  # frames the reader replaced before the detector took them
    reconnects: int = 0


def safe_error(error: str | None, url: str) -> str:
    """``error`` fit for the console: "" for none, and never the camera's password.

    The reader's texts name neither the URL nor its credentials today; this keeps it so should
    one ever quote FFmpeg or the URL (the URL appears masked, as everywhere else).
    """
    if not error:
        return ""
    if not url:
        return error
    text = error.replace(url, mask_url(url))
    for secret in url_secrets(url):  # password, query, credential path tokens (mask_url's)
        text = text.replace(secret, "***")
    return text


def camera_status(
    camera_id: str,
    url: str,
    stats: ReaderStats,
    offered_fps: float = 0.0,
    processed_fps: float = 0.0,
    frame_ts: float | None = None,
) -> CameraStatus:
    """The status row of one reader (the worker builds these in its periodic stats export)."""
    return CameraStatus(
        camera_id=camera_id,
        state="connecting" if stats.state == "starting" else stats.state,  # console's states
        last_error=safe_error(stats.last_error, url),
        offered_fps=max(0.0, offered_fps),
        processed_fps=max(0.0, processed_fps),
        frame_ts=frame_ts or 0.0,
        dropped=stats.frames_dropped,
        reconnects=stats.reconnects,
    )


def detections_json(detections: list[Detection]) -> str:
    """The ``detections`` field: ``[{label, confidence, box, track_id}]``.

    ``Detection.box`` is already normalised to [0, 1] (pipeline.common.contracts; the detector
    divides by the frame's size), so it is only clamped and rounded here, never divided again.
    """
    return json.dumps(
        [
            {
                "label": d.label,
                "confidence": round(float(d.confidence), 4),
                "box": [round(min(max(float(v), 0.0), 1.0), 5) for v in d.box],
                "track_id": None if d.track_id is None else int(d.track_id),
            }
            for d in detections
        ],
        separators=(",", ":"),
    )


class LiveView:
    """Frame listener writing the console's live frames, and the camera status publisher.

    ``__call__(frame, detections)`` (every processed frame, worker loop): throttled to ``fps`` per
    camera by capture time, then handed to the writer thread without waiting.
    ``publish_status(rows)`` (the worker's stats export, about every second): the owned cameras'
    rows, written every ``status_interval_s``; a camera missing from ``rows`` has left the worker.

    Counters: ``written`` (live frames), ``statuses`` (status round trips), ``throttled``,
    ``replaced`` (a newer frame of the same camera came before the writer got to it), ``dropped``
    (pending set full), ``errors`` (failed writes, Redis away or encoding failed).
    """

    def __init__(
        self,
        redis_cfg: RedisConfig,
        worker_id: str,
        fps: float,
        max_pending: int = 16,
        status_interval_s: float = STATUS_INTERVAL_S,
        client: Any = None,
    ) -> None:
        if fps <= 0:
            raise ValueError("LiveView needs fps > 0 (ingest.live_jpeg_fps 0 turns it off)")
        self.keys = RedisKeys(redis_cfg.key_prefix)
        self.worker_id = worker_id
        self.interval_s = 1.0 / fps
        self.max_pending = max(1, max_pending)
        self.status_interval_s = status_interval_s
        self._client = client if client is not None else redis_client(redis_cfg)
        self._owns_client = client is None
        self._redis = OutageLog(log, "Redis (console live view and camera status)")
        self._due: dict[str, float] = {}  # camera -> capture time its next live frame is due
        self._pending: OrderedDict[str, tuple[Frame, list[Detection]]] = OrderedDict()
        self._status: list[CameraStatus] | None = None
        self._status_at = -float("inf")
        self._published: set[str] = set()  # cameras with keys written by this worker
        self._cond = threading.Condition()
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="live-view", daemon=True)
        self.written = 0
        self.statuses = 0
        self.throttled = 0
        self.replaced = 0
        self.dropped = 0
        self.errors = 0

    def start(self) -> LiveView:
        self._thread.start()
        return self

    # -- worker loop side: never blocks on Redis -------------------------------------------
    def __call__(self, frame: Frame, detections: list[Detection]) -> None:
        cid, ts = frame.camera_id, frame.capture_ts
        due = self._due.get(cid)
        if due is not None and due - self.interval_s - _TOLERANCE_S <= ts < due - _TOLERANCE_S:
            self.throttled += 1  # (earlier than that: the clock went back, start again)
            return
        on_time = due is not None and due - _TOLERANCE_S <= ts < due + self.interval_s
        with self._cond:
            if cid in self._pending:
                self.replaced += 1  # the writer is behind: only the newest frame matters
            elif len(self._pending) >= self.max_pending:
                self.dropped += 1
                return  # due time unchanged: the camera's next frame may take the place
            self._pending[cid] = (frame, detections)
            self._cond.notify()
        # on schedule: keep it (on average exactly fps, whatever the camera's own rate);
        # first frame, or a gap of more than an interval: a new schedule from this frame
        self._due[cid] = due + self.interval_s if on_time else ts + self.interval_s

    def publish_status(self, rows: list[CameraStatus]) -> None:
        """Hand over the owned cameras' rows; written at most every ``status_interval_s``."""
        now = time.monotonic()
        if now - self._status_at < self.status_interval_s:
            return
        self._status_at = now
        with self._cond:
            self._status = list(rows)
            self._cond.notify()

    # -- writer thread ---------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(
                    lambda: self._pending or self._status is not None or self._closing
                )
                if self._closing:
                    return  # pending frames are not worth a wait at shutdown: close() deletes
                # status first: it is rare, and frames of busy cameras would never let it by
                rows, self._status = self._status, None
                item = self._pending.popitem(last=False)[1] if rows is None else None
            if rows is not None:
                self._write_status(rows)
            else:
                self._write_live(*item)

    def _write_live(self, frame: Frame, detections: list[Detection]) -> None:
        try:
            jpeg = encode_jpeg(frame.image)
        except (ValueError, cv2.error) as e:
            self.errors += 1
            log.warning("camera %s: live frame not encoded (%s)", frame.camera_id, e)
            return
        key = self.keys.live(frame.camera_id)
        pipe = self._client.pipeline(transaction=False)
        pipe.hset(
            key,
            mapping={
                "jpeg": jpeg,
                "detections": detections_json(detections),
                "capture_ts": float(frame.capture_ts),
                "seq": int(frame.seq),
                "width": frame.width,
                "height": frame.height,
                "worker": self.worker_id,
            },
        )
        pipe.expire(key, LIVE_TTL_S)
        if self._execute(pipe, "live frames are not written"):
            self.written += 1
            self._published.add(frame.camera_id)

    def _write_status(self, rows: list[CameraStatus]) -> None:
        now = time.time()
        owned = {r.camera_id for r in rows}
        gone = sorted(self._published - owned)
        pipe = self._client.pipeline(transaction=False)
        for r in rows:
            key = self.keys.camera_status(r.camera_id)
            pipe.hset(
                key,
                mapping={
                    "state": r.state,
                    "last_error": r.last_error,
                    "worker": self.worker_id,
                    "offered_fps": round(r.offered_fps, 2),
                    "processed_fps": round(r.processed_fps, 2),
                    "frame_ts": float(r.frame_ts),
                    "dropped": int(r.dropped),
                    "reconnects": int(r.reconnects),
                    "updated_at": now,
                },
            )
            pipe.expire(key, STATUS_TTL_S)
        for cid in gone:
            self._delete_owned(pipe, cid)
        if self._execute(pipe, "camera status is not written"):
            self.statuses += 1
            self._published = owned  # the gone ones are deleted (or belong to another worker)

    def _delete_owned(self, pipe: Any, camera_id: str) -> None:
        keys = (self.keys.camera_status(camera_id), self.keys.live(camera_id))
        pipe.eval(_DELETE_OWNED, len(keys), *keys, self.worker_id)

    def _execute(self, pipe: Any, consequence: str) -> bool:
        try:
            pipe.execute()
        except redis.RedisError as e:
            self.errors += 1
            self._redis.down(f"{consequence} ({type(e).__name__})")
            return False
        self._redis.up()
        return True

    # -- shutdown --------------------------------------------------------------------------
    def close(self, timeout_s: float = 5.0) -> None:
        """Stop the writer (frames still pending are left: nobody waits for them), then delete
        the keys that still name this worker: it watches its cameras no more, and a worker that
        took one over has written its own. With Redis away they expire (15 s / 30 s)."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        if self._thread.ident is not None:
            self._thread.join(timeout_s)
        if self._thread.is_alive():
            log.warning("live view: writer did not stop in time (Redis slow?)")
        elif self._published:
            pipe = self._client.pipeline(transaction=False)
            for cid in sorted(self._published):
                self._delete_owned(pipe, cid)
            if self._execute(pipe, "keys of this worker's cameras are left to expire"):
                self._published.clear()
        if self._owns_client:
            self._client.close()
