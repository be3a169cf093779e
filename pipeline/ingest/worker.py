"""The ingest worker: readers for the cameras Kafka assigns to it, one detector, one producer.

Flow: registry watcher -> readers (one thread per camera, latest frame only) -> detection loop
(batches the due frames of all cameras) -> ``vigil.detections`` keyed by camera id.

Back-pressure: a reader keeps only its newest frame (replaced ones are counted as dropped), so
memory does not grow with load; the loop takes at most one frame per camera per batch, cameras
served longest ago first (none starves when there are more cameras than ``max_batch``), and drops
frames older than ``ingest.max_frame_age_s`` (counted as stale) so latency stays bounded. With
motion gating (``ingest.motion``, ``cameras[].motion``; :mod:`pipeline.ingest.motion`) frames without
new motion skip the detector and carry the camera's last detections over.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipeline.common.contracts import Frame, FrameDetector, FrameListener
from pipeline.common.kafka import make_producer
from pipeline.common.lifecycle import OutageLog
from pipeline.ingest import metrics
from pipeline.ingest.camera import CameraSpec, Endpoint, check_camera_url
from pipeline.ingest.capture import CameraReader, configure_ffmpeg
from pipeline.ingest.config import IngestSettings
from pipeline.ingest.frame_store import FrameStore
from pipeline.ingest.live import CameraStatus, camera_status
from pipeline.ingest.messages import detection_message
from pipeline.ingest.motion import Decision, MotionDetector
from pipeline.ingest.registry import RegistryWatcher

log = logging.getLogger(__name__)


def default_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass(slots=True, eq=False)
class _Batch:
    """Frames taken together, from collection to publication."""

    frames: list[Frame]
    decisions: list[Decision | None]
    todo: list[Frame]  # the frames that go through the detector (motion gating skips others)
    det: Any = None
    job: Any = None  # detector.submit() handle while the batch runs in the background
    started: float = 0.0
    elapsed: float = 0.0
    results: list = field(default_factory=list)
    raw: list[np.ndarray] | None = None


class IngestWorker:
    """Cameras in, detection messages out. The detector is handed in (or made on first use by
    ``detector_factory``); retraining plugs in through the named callback points and frame
    listeners (``pipeline.app`` wires them), so ingest never imports a detector or retraining.

    Callback points (``add_callback``), each called with the worker; what a callback returns is
    kept in ``services[name]`` and closed (``close()``) when the worker closes:

    - ``before_detector``: at start, before the detector is made (hot reload puts the registry's
      production model in here);
    - ``on_start``: at start, with the detector loaded, before cameras are taken (host threads,
      collection, drift).
    """

    CALLBACK_POINTS = ("before_detector", "on_start")

    def __init__(
        self,
        cfg: IngestSettings,
        detector: FrameDetector | None = None,
        worker_id: str | None = None,
        detector_factory: Callable[[], FrameDetector] | None = None,
        forbidden_endpoints: Collection[Endpoint] = (),
    ) -> None:
        self.cfg = cfg
        # Vigil's own services (Kafka, Redis, MQTT): a registry record naming one as its camera
        # host is refused (the composition layer hands them in; ingest imports no other stage)
        self.forbidden_endpoints = frozenset(forbidden_endpoints)
        self._refused: dict[str, CameraSpec] = {}  # camera -> the definition refused (logged once)
        self.worker_id = worker_id or cfg.ingest.worker_id or default_worker_id()
        self._detector = detector
        self._detector_factory = detector_factory
        self._callbacks: dict[str, list[tuple[str, Callable[[IngestWorker], Any]]]] = {
            point: [] for point in self.CALLBACK_POINTS
        }
        self.services: dict[str, Any] = {}  # callback name -> what it started (closed at close)
        self._readers: dict[str, CameraReader] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._rr = 0  # round-robin start, so no camera starves when batches are full
        self._frame_listeners: list[FrameListener] = []
        self._status_listeners: list[Callable[[list[CameraStatus]], None]] = []
        # held around each detect call: swap_detector (hot reload) waits for the batch in flight
        self._detect_lock = threading.Lock()
        self.producer = None
        self.frame_store: FrameStore | None = None
        self.watcher: RegistryWatcher | None = None
        self.published = 0
        self.publish_errors = 0
        self._unacked = 0  # sent, neither acknowledged nor failed yet
        self._last_ack = time.monotonic()
        self.kafka_state = OutageLog(log, f"Kafka at {cfg.kafka.bootstrap_servers} (detections)")
        self.max_frame_age_s = cfg.ingest.max_frame_age_s
        self._served: dict[str, float] = {}  # camera -> when its last frame was taken (fairness)
        self._motion: dict[str, MotionDetector | None] = {}  # None: gating off for the camera
        # camera -> (untracked detections of its last detector run, (h, w)), for motion gating
        self._last_raw: dict[str, tuple[np.ndarray, tuple[int, int], object]] = {}
        self._last_by: dict[str, object] = {}  # camera -> detector that produced its last result
        self._last_dets: dict[str, list] = {}  # fallback for detectors without raw output
        self._fps_state: dict[str, tuple[float, int, int]] = {}  # camera -> (t, decoded, processed)
        self._processed: dict[str, int] = {}
        self._frame_ts: dict[str, float] = {}  # camera -> capture time of its newest frame out
        self.detector_frames = 0  # frames that went through the detector
        self.skipped_frames = 0  # frames published with carried-over detections (no motion)
        self.stale_frames = 0  # frames dropped because they were too old when their turn came
        self._in_flight: _Batch | None = None  # started on the detector, not yet published

    # -- camera ownership ------------------------------------------------------------------
    @property
    def cameras(self) -> list[str]:
        with self._lock:
            return sorted(self._readers)

    def _refuse(self, spec: CameraSpec) -> bool:
        """Whether ``spec`` points at one of Vigil's own services (logged once per definition)."""
        try:
            check_camera_url(spec.url, forbidden=self.forbidden_endpoints)
        except ValueError as e:
            if self._refused.get(spec.id) != spec:
                log.error("worker %s: camera %s refused: %s", self.worker_id, spec.id, e)
                self._refused[spec.id] = spec
            return True
        self._refused.pop(spec.id, None)
        return False

    def reconcile(self, owned: dict[str, CameraSpec]) -> None:
        """Start readers for new/changed cameras, stop the ones no longer owned. A refused
        definition starts nothing and leaves the camera's running reader (if any) as it was."""
        with self._lock:
            refused = {cid for cid, spec in owned.items() if self._refuse(spec)}
            self._refused = {cid: spec for cid, spec in self._refused.items() if cid in owned}
            for cid in list(self._readers):
                if cid in refused:
                    continue
                reader = self._readers[cid]
                spec = owned.get(cid)
                if spec is None or not spec.enabled or spec != reader.spec:
                    log.info("worker %s: stopping camera %s", self.worker_id, cid)
                    reader.stop()
                    del self._readers[cid]
                    if self._detector is not None and self._detector.trackers is not None:
                        self._detector.trackers.drop(cid)
                    for state in (
                        self._motion,
                        self._last_raw,
                        self._last_by,
                        self._last_dets,
                        self._served,
                        self._fps_state,
                        self._frame_ts,
                    ):
                        state.pop(cid, None)
                    metrics.CAMERA_UP.labels(cid).set(0)
            for cid, spec in owned.items():
                if cid in self._readers or not spec.enabled or cid in refused:
                    continue
                log.info("worker %s: starting %s", self.worker_id, spec)
                self._readers[cid] = self._make_reader(spec).start()

    def _make_reader(self, spec: CameraSpec) -> CameraReader:
        ing = self.cfg.ingest
        configure_ffmpeg(ing.probe_s)
        return CameraReader(
            spec,
            fps=spec.fps or ing.default_fps,
            open_timeout_s=ing.open_timeout_s,
            read_timeout_s=ing.read_timeout_s,
            backoff_initial_s=ing.reconnect.initial_s,
            backoff_max_s=ing.reconnect.max_s,
            backoff_jitter=ing.reconnect.jitter,
            on_frame=lambda _cid: self._wake.set(),
            decode_threads=ing.decode_threads,
        )

    # -- detection loop --------------------------------------------------------------------
    @property
    def detector(self) -> FrameDetector:
        if self._detector is None:
            if self._detector_factory is None:
                raise RuntimeError("IngestWorker needs a detector or a detector_factory")
            self._detector = self._detector_factory()
        return self._detector

    def swap_detector(self, new):
        """Replace the detector between batches (hot reload); returns the old one.

        Cameras keep streaming: the batch in flight finishes with the old model, the next one uses
        the new model. Tracks carry over when both models have the same classes.
        """
        with self._detect_lock:
            old = self._detector
            if (
                old is not None
                and getattr(old, "trackers", None) is not None
                and getattr(new, "trackers", None) is not None
                and old.names == new.names
            ):
                new.trackers = old.trackers
            self._detector = new
        return old

    def add_callback(self, point: str, fn: Callable[[IngestWorker], Any], name: str = "") -> None:
        """Run ``fn(worker)`` at callback point ``point`` (see the class docstring)."""
        if point not in self._callbacks:
            raise ValueError(f"unknown callback point {point!r} (one of {self.CALLBACK_POINTS})")
        self._callbacks[point].append((name or getattr(fn, "__name__", "callback"), fn))

    def _run_callbacks(self, point: str) -> None:
        for name, fn in self._callbacks[point]:
            service = fn(self)
            if service is not None:
                self.services[name] = service

    def add_frame_listener(self, listener: FrameListener) -> None:
        """Call ``listener(frame, detections)`` after each frame is published (collection, drift)."""
        self._frame_listeners.append(listener)

    def add_status_listener(self, listener: Callable[[list[CameraStatus]], None]) -> None:
        """Call ``listener(rows)`` with one row per owned camera at each stats export (about
        every second, from the detection loop: it must not block); the console's camera status."""
        self._status_listeners.append(listener)

    def _fps(self, camera_id: str) -> float:
        reader = self._readers.get(camera_id)
        return 1.0 / reader.interval if reader is not None else self.cfg.ingest.default_fps

    def _collect(self, max_batch: int, exclude: set[str] | frozenset = frozenset()) -> list[Frame]:
        """Up to ``max_batch`` new frames, one per camera, cameras served longest ago first."""
        with self._lock:
            readers = list(self._readers.values())
        if not readers:
            return []
        start = self._rr % len(readers)
        self._rr += 1
        order = readers[start:] + readers[:start]  # ties (never served) in round-robin order
        order.sort(key=lambda r: self._served.get(r.camera_id, 0.0))
        frames: list[Frame] = []
        now = time.time()
        for reader in order:
            if reader.camera_id in exclude:
                continue
            frame = reader.take()
            if frame is None:
                continue
            self._served[reader.camera_id] = time.monotonic()
            if now - frame.capture_ts > self.max_frame_age_s:
                metrics.FRAMES_STALE.labels(frame.camera_id).inc()
                self.stale_frames += 1
                continue
            frames.append(frame)
            if len(frames) >= max_batch:
                break
        return frames

    def _fill(self, frames: list[Frame]) -> list[Frame]:
        """Wait up to ``detector.max_wait_ms`` for frames of the other streaming cameras."""
        wait_s = self.cfg.detector.max_wait_ms / 1000.0
        limit = self.cfg.detector.max_batch
        if wait_s <= 0 or len(frames) >= limit:
            return frames
        with self._lock:
            streaming = sum(1 for r in self._readers.values() if r.stats.state == "streaming")
        want = min(limit, streaming)
        deadline = time.monotonic() + wait_s
        while len(frames) < want and (left := deadline - time.monotonic()) > 0:
            self._wake.wait(left)
            self._wake.clear()
            frames += self._collect(limit - len(frames), {f.camera_id for f in frames})
        return frames

    def _gate(self, frame: Frame) -> Decision | None:
        """Motion decision for ``frame``; None when gating is off for its camera."""
        cid = frame.camera_id
        if cid not in self._motion:
            with self._lock:
                reader = self._readers.get(cid)
            base = self.cfg.ingest.motion
            override = reader.spec.motion if reader is not None else None
            mcfg = override.apply(base) if override is not None else base
            self._motion[cid] = MotionDetector(mcfg) if mcfg.enabled else None
        gate = self._motion[cid]
        if gate is None:
            return None
        last = self._last_raw.get(cid)
        if last is not None:
            boxes, (h, w), _ = last
            scale = np.array([w, h, w, h], np.float32)
            objects = [tuple(b) for b in (boxes[:, :4] / scale).tolist()]
        else:
            objects = [d.box for d in self._last_dets.get(cid, ())]
        decision = gate.check(frame.image, frame.capture_ts, objects)
        if not decision.detect and self._last_by.get(cid) is not self._detector:
            decision.detect = True  # the model changed (hot reload): its own result is needed
        return decision

    def _carry_over(self, det, frame: Frame) -> list:
        """Detections for a frame without motion: the last detector result, tracked again so
        tracks stay alive as if the detector had seen the same boxes (it would have)."""
        last = self._last_raw.get(frame.camera_id)
        if last is not None:
            return det.finish(frame.image, last[0], frame.camera_id, self._fps(frame.camera_id))
        return self._last_dets.get(frame.camera_id, [])

    def _gating_on(self, camera_id: str) -> bool:
        return self._motion.get(camera_id, True) is not None  # unknown yet: assume it may be

    def process_once(self, timeout_s: float = 0.05) -> int:
        """Take the next batch and start it on the detector; returns the number of frames taken.

        With a background detector (``submit``/``wait``/``collect``: OpenVINO) the order is:
        wait until a backend stream is free of the batch in flight, take the newest frames and
        start them, then finish the batch in flight (NMS, tracking, messages, Kafka) while they
        run. The cores never wait for Python, and frames never queue behind a whole batch
        (latency stays about one batch). The batch taken here is published by the next call, or
        at once by a call that finds no new frame (an idle camera's last frame is not held back).
        """
        if self._in_flight is not None and self._in_flight.job is not None:
            self._in_flight.det.wait(self._in_flight.job)
        frames = self._collect(self.cfg.detector.max_batch)
        if not frames:
            if self._in_flight is not None:
                self._finish(self._take_in_flight())
                return 0
            self._wake.wait(timeout_s)
            self._wake.clear()
            return 0
        frames = self._fill(frames)
        if self._in_flight is not None and any(self._gating_on(f.camera_id) for f in frames):
            # the motion decision needs the previous detections of the same camera
            self._finish(self._take_in_flight())
        decisions = [self._gate(f) for f in frames]
        todo = [f for f, d in zip(frames, decisions, strict=True) if d is None or d.detect]
        batch = _Batch(frames, decisions, todo)
        with self._detect_lock:
            batch.det = det = self.detector
            if todo:  # at most max_batch frames: _collect takes no more
                batch.started = time.perf_counter()
                batch.job = det.submit([f.image for f in todo])
        previous = self._take_in_flight()
        if previous is not None:
            self._finish(previous)
        if batch.job is not None and det.overlaps:
            self._in_flight = batch
        else:
            self._finish(batch)
        return len(frames)

    def _take_in_flight(self) -> _Batch | None:
        with self._lock:
            batch, self._in_flight = self._in_flight, None
        return batch

    def flush(self) -> None:
        """Finish the batch in flight (at shutdown)."""
        batch = self._take_in_flight()
        if batch is not None:
            self._finish(batch)

    def _finish(self, batch: _Batch) -> None:
        """Detections of a started batch -> tracked -> messages -> Kafka."""
        det, frames, decisions, todo = batch.det, batch.frames, batch.decisions, batch.todo
        if batch.job is not None:  # the one call path: submit -> collect -> finish per frame
            boxes = det.collect(batch.job)
            batch.elapsed = time.perf_counter() - batch.started
            batch.raw = boxes
            batch.results = [
                det.finish(f.image, b, f.camera_id, self._fps(f.camera_id))
                for f, b in zip(todo, boxes, strict=True)
            ]
        elapsed = batch.elapsed
        if todo:
            metrics.INFERENCE_SECONDS.observe(elapsed)
            metrics.BATCH_SIZE.observe(len(todo))
            self.detector_frames += len(todo)
        per_frame_ms = elapsed * 1000 / len(todo) if todo else 0.0
        detected = iter(batch.results)
        raws = iter(batch.raw or ())
        for frame, decision in zip(frames, decisions, strict=True):
            carried = decision is not None and not decision.detect
            if carried:
                with self._detect_lock:
                    dets = self._carry_over(det, frame)
                self.skipped_frames += 1
                metrics.FRAMES_MOTION_SKIPPED.labels(frame.camera_id).inc()
            else:
                dets = next(detected)
                boxes = next(raws, None)  # one per detected frame (when asked for)
                if decision is not None:
                    self._last_dets[frame.camera_id] = dets
                    self._last_by[frame.camera_id] = det
                    if boxes is not None:
                        self._last_raw[frame.camera_id] = (boxes, frame.image.shape[:2], det)
            msg = detection_message(
                frame, dets, det.name, det.version, self.worker_id, 0.0 if carried else per_frame_ms
            )
            if decision is not None:
                msg["motion"] = decision.motion
                msg["carried_over"] = carried
            self._processed[frame.camera_id] = self._processed.get(frame.camera_id, 0) + 1
            self._frame_ts[frame.camera_id] = frame.capture_ts
            if dets and self.frame_store is not None:
                self.frame_store.put(frame)  # before publishing: the alert may need it at once
            self._publish(frame, msg)
            metrics.FRAMES_PROCESSED.labels(frame.camera_id).inc()
            for listener in self._frame_listeners:
                listener(frame, dets)

    def _publish(self, frame: Frame, msg: dict) -> None:
        sent_at = time.time()

        def ok(_meta) -> None:
            self.published += 1
            self._unacked -= 1
            self._last_ack = time.monotonic()
            self.kafka_state.up()
            now = time.time()
            metrics.PUBLISH_SECONDS.observe(now - sent_at)
            metrics.CAPTURE_TO_PUBLISH_SECONDS.observe(now - frame.capture_ts)

        def failed(exc: Exception) -> None:
            self.publish_errors += 1
            self._unacked -= 1
            metrics.PUBLISH_ERRORS.inc()
            self.kafka_state.down(f"detection messages are not delivered ({type(exc).__name__})")
            log.debug(
                "camera %s: message seq %d not delivered: %s", frame.camera_id, frame.seq, exc
            )

        if self._unacked <= 0:
            self._last_ack = time.monotonic()  # silence counts from the oldest message waiting
        self._unacked += 1
        try:
            fut = self.producer.send(
                self.cfg.kafka.topics.detections,
                key=frame.camera_id,
                value=msg,
                timestamp_ms=int(frame.capture_ts * 1000),
            )
        except Exception as exc:  # buffer full while Kafka is away: realtime data, drop and count
            failed(exc)
            return
        fut.add_callback(ok)
        fut.add_errback(failed)

    def _check_kafka(self, now: float, silent_s: float = 5.0) -> None:
        """Kafka is lost for this worker when messages wait and nothing was acknowledged for
        ``silent_s`` (sends are buffered: their failures only come at delivery.timeout.ms)."""
        if self._unacked > 0 and now - self._last_ack > silent_s:
            self.kafka_state.down(
                f"no acknowledgement for {now - self._last_ack:.0f} s, "
                f"{self._unacked} detection messages waiting",
                failed_operation=False,
            )

    def _export_reader_stats(self) -> None:
        with self._lock:
            readers = list(self._readers.values())
        det = self._detector
        if det is not None:
            metrics.DETECTOR_INFO.labels(
                det.name,
                det.version,
                getattr(det, "backend_name", "ultralytics"),
                str(getattr(det, "device", "")),
            ).set(1)
        now = time.monotonic()
        rows: list[CameraStatus] = []
        for r in readers:
            s = r.stats
            processed = self._processed.get(r.camera_id, 0)
            prev = self._fps_state.get(r.camera_id)
            decode_fps = processed_fps = 0.0
            if prev is not None and now > prev[0]:
                dt = now - prev[0]
                decode_fps = (s.frames_decoded - prev[1]) / dt
                processed_fps = (processed - prev[2]) / dt
                metrics.DECODE_FPS.labels(r.camera_id).set(decode_fps)
                metrics.PROCESSED_FPS.labels(r.camera_id).set(processed_fps)
            self._fps_state[r.camera_id] = (now, s.frames_decoded, processed)
            metrics.FRAMES_DECODED.labels(r.camera_id).set(s.frames_decoded)
            metrics.FRAMES_DROPPED.labels(r.camera_id).set(s.frames_dropped)
            metrics.DECODE_CPU.labels(r.camera_id).set(s.decode_cpu_s)
            metrics.RECONNECTS.labels(r.camera_id).set(s.reconnects)
            metrics.CAMERA_UP.labels(r.camera_id).set(1 if s.state == "streaming" else 0)
            if self._status_listeners:
                fts = self._frame_ts.get(r.camera_id)
                rows.append(
                    camera_status(r.camera_id, r.spec.url, s, decode_fps, processed_fps, fts)
                )
        for listener in self._status_listeners:
            listener(rows)

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> IngestWorker:
        """Connect to Kafka and join the ingest group; cameras arrive through the watcher."""
        self._run_callbacks("before_detector")  # e.g. hot reload: the registry's production model
        _ = self.detector  # load weights before taking cameras: a bad model fails fast
        self._run_callbacks("on_start")
        self.producer = make_producer(self.cfg.kafka, f"ingest-{self.worker_id}")
        if self.cfg.redis.store_frames:
            self.frame_store = FrameStore(self.cfg.redis).start()
        self.watcher = RegistryWatcher(
            self.cfg.kafka,
            self.cfg.ingest.group_id,
            self.reconcile,
            session_timeout_ms=self.cfg.ingest.session_timeout_ms,
            client_suffix=f"ingest-{self.worker_id}",
        ).start()
        log.info(
            "ingest worker %s started (detector %s %s)",
            self.worker_id,
            self.detector.name,
            self.detector.version,
        )
        return self

    def run(self, stop: threading.Event, max_seconds: float | None = None) -> None:
        deadline = time.monotonic() + max_seconds if max_seconds else None
        last_stats = 0.0
        while not stop.is_set():
            if deadline and time.monotonic() >= deadline:
                break
            if self.watcher is not None and self.watcher.error is not None:
                raise RuntimeError(f"camera registry watcher failed: {self.watcher.error}")
            self.process_once()
            now = time.monotonic()
            if now - last_stats > 1.0:
                self._export_reader_stats()
                self._check_kafka(now)
                last_stats = now
        self.flush()

    def close(self, timeout_s: float = 10.0) -> None:
        """Leave the group (cameras move to other workers at once) and flush what was accepted."""
        if self.watcher is not None:
            self.watcher.stop()
        if self.producer is not None:
            self.flush()  # the batch in flight (when the loop was stopped without run())
        with self._lock:
            readers = list(self._readers.values())
            self._readers.clear()
        for reader in readers:
            reader.stop()
        # Wait for the reader threads to leave OpenCV: a process that exits while one is still
        # inside FFmpeg aborts ("terminate called without an active exception", SIGABRT).
        deadline = time.monotonic() + self.cfg.ingest.read_timeout_s + 2.0
        for reader in readers:
            reader.join(max(0.0, deadline - time.monotonic()))
            if reader.alive:
                log.warning("camera %s: reader did not stop in time", reader.camera_id)
        for service in self.services.values():
            close = getattr(service, "close", None)
            if close is not None:
                close()
        if self.frame_store is not None:
            self.frame_store.close()
        if self.producer is not None:
            self.producer.flush(timeout=timeout_s)
            self.producer.close(timeout=timeout_s)
        log.info(
            "ingest worker %s stopped: %d messages published, %d errors",
            self.worker_id,
            self.published,
            self.publish_errors,
        )
