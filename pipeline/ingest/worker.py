"""The ingest worker: readers for the cameras Kafka assigns to it, one detector, one producer.

Flow: registry watcher -> readers (one thread per camera, latest frame only) -> detection loop
(batches the due frames of all cameras) -> ``vigil.detections`` keyed by camera id.

Back-pressure: a reader keeps only its newest frame (replaced ones are counted as dropped), so
memory does not grow with load. The worker composes the loop's parts, each readable alone:
which frames go into the next batch (:mod:`~pipeline.ingest.scheduler`: one per camera, fair,
stale ones dropped), which of them skip the detector and carry detections over
(:mod:`~pipeline.ingest.gating`, motion gating), the detector and its batches
(:mod:`~pipeline.ingest.detection`: pipelining, hot swap), the messages to Kafka
(:mod:`~pipeline.ingest.publisher`) and the counters and per-camera figures
(:mod:`~pipeline.ingest.stats`). It owns the cameras and orders the steps.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Collection
from typing import Any

from pipeline.cameras.registry import RegistryWatcher
from pipeline.cameras.spec import CameraSpec, Endpoint
from pipeline.common.contracts import FrameDetector, FrameListener
from pipeline.common.kafka import make_producer
from pipeline.common.lifecycle import OutageLog
from pipeline.common.motion_spells import MotionSpells
from pipeline.ingest import metrics
from pipeline.ingest.capture import CameraReader, configure_ffmpeg
from pipeline.ingest.config import IngestSettings
from pipeline.ingest.detection import Batch, DetectorSlot
from pipeline.ingest.frame_store import FrameStore
from pipeline.ingest.gating import MotionGating
from pipeline.ingest.messages import detection_message
from pipeline.ingest.motion import MotionConfig
from pipeline.ingest.publisher import DetectionPublisher
from pipeline.ingest.scheduler import BatchScheduler
from pipeline.ingest.stats import StatusListener, WorkerStats

log = logging.getLogger(__name__)


def default_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


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
        self._callbacks: dict[str, list[tuple[str, Callable[[IngestWorker], Any]]]] = {
            point: [] for point in self.CALLBACK_POINTS
        }
        self.services: dict[str, Any] = {}  # callback name -> what it started (closed at close)
        self._readers: dict[str, CameraReader] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()  # set by a reader with a new frame
        self._frame_listeners: list[FrameListener] = []
        self._status_listeners: list[StatusListener] = []
        self.frame_store: FrameStore | None = None
        self.watcher: RegistryWatcher | None = None
        # the loop's parts (module docstring)
        self.scheduler = BatchScheduler(self._reader_list, self._wake, cfg.ingest.max_frame_age_s)
        self.gating = MotionGating(self._motion_settings, self._motion_wanted)
        self.spells = MotionSpells()  # motion spells on the motion topic, for the recorders
        self.detectors = DetectorSlot(detector, detector_factory)
        self.publisher = DetectionPublisher(
            cfg.kafka.topics.detections, cfg.kafka.bootstrap_servers, log, cfg.kafka.topics.motion
        )
        self.stats = WorkerStats()
        self._in_flight: Batch | None = None  # started on the detector, not yet published

    # -- the parts' figures, where callers have always read them ----------------------------
    @property
    def producer(self) -> Any:
        return self.publisher.producer

    @producer.setter
    def producer(self, producer: Any) -> None:
        self.publisher.producer = producer

    @property
    def kafka_state(self) -> OutageLog:
        return self.publisher.kafka_state

    @property
    def published(self) -> int:
        return self.publisher.published

    @property
    def publish_errors(self) -> int:
        return self.publisher.publish_errors

    @property
    def _unacked(self) -> int:
        return self.publisher.unacked

    @property
    def detector_frames(self) -> int:
        return self.stats.detector_frames

    @property
    def skipped_frames(self) -> int:
        return self.stats.skipped_frames

    @property
    def stale_frames(self) -> int:
        return self.scheduler.stale_frames

    @property
    def _processed(self) -> dict[str, int]:
        return self.stats.processed

    @property
    def max_frame_age_s(self) -> float:
        return self.scheduler.max_frame_age_s

    # -- camera ownership ------------------------------------------------------------------
    @property
    def cameras(self) -> list[str]:
        with self._lock:
            return sorted(self._readers)

    def _reader_list(self) -> list[CameraReader]:
        with self._lock:
            return list(self._readers.values())

    def _refuse(self, spec: CameraSpec) -> bool:
        """Whether ``spec`` points at one of Vigil's own services, by its ``url`` or its
        ``record_url`` (a hostile definition is refused whole; logged once per definition)."""
        try:
            spec.check_urls(forbidden=self.forbidden_endpoints)
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
                    self.detectors.drop_tracks(cid)
                    self.gating.forget(cid)
                    self.spells.forget(cid)
                    self.scheduler.forget(cid)
                    self.stats.forget(cid)
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

    def _motion_settings(self, camera_id: str) -> MotionConfig:
        """``ingest.motion`` with the camera's own ``motion`` keys over it."""
        with self._lock:
            reader = self._readers.get(camera_id)
        base = self.cfg.ingest.motion
        override = reader.spec.motion if reader is not None else None
        return override.apply(base) if override is not None else base

    def _motion_wanted(self, camera_id: str) -> bool:
        """Whether the camera's motion is wanted without gating: it is recorded in mode events
        (a recorder starts on the motion spells this worker publishes)."""
        with self._lock:
            reader = self._readers.get(camera_id)
        rec = reader.spec.record if reader is not None else None
        return rec is not None and rec.enabled and rec.mode == "events"

    def _fps(self, camera_id: str) -> float:
        reader = self._readers.get(camera_id)
        return 1.0 / reader.interval if reader is not None else self.cfg.ingest.default_fps

    # -- detector and plug-ins -------------------------------------------------------------
    @property
    def detector(self) -> FrameDetector:
        return self.detectors.get()

    @property
    def _detector(self) -> FrameDetector | None:
        """The detector if made yet (never makes one)."""
        return self.detectors.current

    @_detector.setter
    def _detector(self, detector: FrameDetector | None) -> None:
        self.detectors.current = detector

    def swap_detector(self, new: FrameDetector) -> FrameDetector | None:
        """Replace the detector between batches (hot reload); returns the old one.

        Cameras keep streaming: the batch in flight finishes with the old model, the next one uses
        the new model. Tracks carry over when both models have the same classes.
        """
        return self.detectors.swap(new)

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

    def add_status_listener(self, listener: StatusListener) -> None:
        """Call ``listener(rows)`` with one row per owned camera at each stats export (about
        every second, from the detection loop: it must not block); the console's camera status."""
        self._status_listeners.append(listener)

    # -- detection loop --------------------------------------------------------------------
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
        limits = self.cfg.detector
        frames = self.scheduler.collect(limits.max_batch)
        if not frames:
            if self._in_flight is not None:
                self._finish(self._take_in_flight())
                return 0
            self.scheduler.idle(timeout_s)
            return 0
        frames = self.scheduler.fill(frames, limits.max_batch, limits.max_wait_ms / 1000.0)
        if self._in_flight is not None and any(self.gating.is_on(f.camera_id) for f in frames):
            # the motion decision needs the previous detections of the same camera
            self._finish(self._take_in_flight())
        decisions = [self.gating.decide(f, self.detectors.current) for f in frames]
        todo = [f for f, d in zip(frames, decisions, strict=True) if d is None or d.detect]
        batch = Batch(frames, decisions, todo)
        self.detectors.start(batch)  # at most max_batch frames: the scheduler takes no more
        previous = self._take_in_flight()
        if previous is not None:
            self._finish(previous)
        if batch.job is not None and batch.det.overlaps:
            self._in_flight = batch
        else:
            self._finish(batch)
        return len(frames)

    def _take_in_flight(self) -> Batch | None:
        with self._lock:
            batch, self._in_flight = self._in_flight, None
        return batch

    def flush(self) -> None:
        """Finish the batch in flight (at shutdown)."""
        batch = self._take_in_flight()
        if batch is not None:
            self._finish(batch)

    def _finish(self, batch: Batch) -> None:
        """Detections of a started batch -> tracked -> messages -> Kafka."""
        self.detectors.collect(batch, self._fps)
        det, frames, decisions, todo = batch.det, batch.frames, batch.decisions, batch.todo
        if todo:
            self.stats.detected(len(todo), batch.elapsed)
        per_frame_ms = batch.elapsed * 1000 / len(todo) if todo else 0.0
        detected = iter(batch.results)
        raws = iter(batch.raw or ())
        for frame, decision in zip(frames, decisions, strict=True):
            carried = decision is not None and not decision.detect
            if carried:
                with self.detectors.lock:
                    dets = self.gating.carry_over(det, frame, self._fps(frame.camera_id))
                self.stats.carried(frame.camera_id)
            else:
                dets = next(detected)
                raw = next(raws, None)  # one per detected frame (when asked for)
                if decision is not None:
                    self.gating.remember(frame, dets, raw, det)
            msg = detection_message(
                frame, dets, det.name, det.version, self.worker_id, 0.0 if carried else per_frame_ms
            )
            if decision is not None:
                msg["motion"] = decision.motion
                msg["carried_over"] = carried
                spell = self.spells.update(frame.camera_id, frame.capture_ts, decision.motion)
                if spell is not None:
                    self.publisher.publish_motion(spell.camera_id, spell.message())
            self.stats.frame_out(frame)
            if dets and self.frame_store is not None:
                self.frame_store.put(frame)  # before publishing: the alert may need it at once
            self.publisher.publish(frame, msg)
            self.stats.frame_sent(frame)
            for listener in self._frame_listeners:
                listener(frame, dets)

    def _export_reader_stats(self) -> None:
        self.stats.export(self._reader_list(), self._detector, self._status_listeners)

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
                self.publisher.check(now)
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
        self.publisher.close(timeout_s)
        log.info(
            "ingest worker %s stopped: %d messages published, %d errors",
            self.worker_id,
            self.published,
            self.publish_errors,
        )
