"""The ingest worker: readers for the cameras Kafka assigns to it, one detector, one producer.

Flow: registry watcher -> readers (one thread per camera, latest frame only) -> detection loop
(batches the due frames of all cameras) -> ``vigil.detections`` keyed by camera id.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable

from pipeline import metrics
from pipeline.camera import CameraSpec
from pipeline.capture import CameraReader, Frame
from pipeline.config import VigilConfig
from pipeline.frame_store import FrameStore
from pipeline.kafka_io import make_producer
from pipeline.messages import detection_message
from pipeline.registry import RegistryWatcher

log = logging.getLogger(__name__)


def default_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class IngestWorker:
    def __init__(
        self,
        cfg: VigilConfig,
        detector=None,
        worker_id: str | None = None,
        on_frame_processed: Callable[[Frame, list], None] | None = None,
    ) -> None:
        self.cfg = cfg
        self.worker_id = worker_id or cfg.ingest.worker_id or default_worker_id()
        self._detector = detector
        self._readers: dict[str, CameraReader] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._rr = 0  # round-robin start, so no camera starves when batches are full
        self._on_frame_processed = on_frame_processed
        self.producer = None
        self.frame_store: FrameStore | None = None
        self.watcher: RegistryWatcher | None = None
        self.published = 0
        self.publish_errors = 0
        self.max_frame_age_s = 2.0

    # -- camera ownership ------------------------------------------------------------------
    @property
    def cameras(self) -> list[str]:
        with self._lock:
            return sorted(self._readers)

    def reconcile(self, owned: dict[str, CameraSpec]) -> None:
        """Start readers for new/changed cameras, stop the ones no longer owned."""
        with self._lock:
            for cid in list(self._readers):
                reader = self._readers[cid]
                spec = owned.get(cid)
                if spec is None or not spec.enabled or spec != reader.spec:
                    log.info("worker %s: stopping camera %s", self.worker_id, cid)
                    reader.stop()
                    del self._readers[cid]
                    if self._detector is not None and self._detector.trackers is not None:
                        self._detector.trackers.drop(cid)
                    metrics.CAMERA_UP.labels(cid).set(0)
            for cid, spec in owned.items():
                if cid in self._readers or not spec.enabled:
                    continue
                log.info("worker %s: starting %s", self.worker_id, spec)
                self._readers[cid] = self._make_reader(spec).start()

    def _make_reader(self, spec: CameraSpec) -> CameraReader:
        ing = self.cfg.ingest
        return CameraReader(
            spec,
            fps=spec.fps or ing.default_fps,
            open_timeout_s=ing.open_timeout_s,
            read_timeout_s=ing.read_timeout_s,
            backoff_initial_s=ing.reconnect.initial_s,
            backoff_max_s=ing.reconnect.max_s,
            backoff_jitter=ing.reconnect.jitter,
            on_frame=lambda _cid: self._wake.set(),
        )

    # -- detection loop --------------------------------------------------------------------
    @property
    def detector(self):
        if self._detector is None:
            from detectors.engine import Detector

            self._detector = Detector(self.cfg.detector)
        return self._detector

    def _fps(self, camera_id: str) -> float:
        reader = self._readers.get(camera_id)
        return 1.0 / reader.interval if reader is not None else self.cfg.ingest.default_fps

    def _collect(self, max_batch: int) -> list[Frame]:
        with self._lock:
            readers = list(self._readers.values())
        if not readers:
            return []
        start = self._rr % len(readers)
        self._rr += 1
        frames: list[Frame] = []
        now = time.time()
        for reader in readers[start:] + readers[:start]:
            frame = reader.take()
            if frame is None:
                continue
            if now - frame.capture_ts > self.max_frame_age_s:
                metrics.FRAMES_STALE.labels(frame.camera_id).inc()
                continue
            frames.append(frame)
            if len(frames) >= max_batch:
                break
        return frames

    def process_once(self, timeout_s: float = 0.05) -> int:
        """Run one batch if any camera has a new frame; returns the number of frames processed."""
        frames = self._collect(self.cfg.detector.max_batch)
        if not frames:
            self._wake.wait(timeout_s)
            self._wake.clear()
            return 0
        det = self.detector
        t0 = time.perf_counter()
        results = det.detect(
            [f.image for f in frames],
            streams=[f.camera_id for f in frames],
            frame_rates=[self._fps(f.camera_id) for f in frames],
        )
        elapsed = time.perf_counter() - t0
        metrics.INFERENCE_SECONDS.observe(elapsed)
        metrics.BATCH_SIZE.observe(len(frames))
        per_frame_ms = elapsed * 1000 / len(frames)
        for frame, dets in zip(frames, results, strict=True):
            msg = detection_message(
                frame, dets, det.name, det.version, self.worker_id, per_frame_ms
            )
            if dets and self.frame_store is not None:
                self.frame_store.put(frame)  # before publishing: the alert may need it at once
            self._publish(frame, msg)
            metrics.FRAMES_PROCESSED.labels(frame.camera_id).inc()
            if self._on_frame_processed is not None:
                self._on_frame_processed(frame, dets)
        return len(frames)

    def _publish(self, frame: Frame, msg: dict) -> None:
        sent_at = time.time()

        def ok(_meta) -> None:
            self.published += 1
            now = time.time()
            metrics.PUBLISH_SECONDS.observe(now - sent_at)
            metrics.CAPTURE_TO_PUBLISH_SECONDS.observe(now - frame.capture_ts)

        def failed(exc: Exception) -> None:
            self.publish_errors += 1
            metrics.PUBLISH_ERRORS.inc()
            log.warning(
                "camera %s: detection message seq %d not delivered: %s",
                frame.camera_id,
                frame.seq,
                exc,
            )

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

    def _export_reader_stats(self) -> None:
        with self._lock:
            readers = list(self._readers.values())
        for r in readers:
            s = r.stats
            metrics.FRAMES_DECODED.labels(r.camera_id).set(s.frames_decoded)
            metrics.FRAMES_DROPPED.labels(r.camera_id).set(s.frames_dropped)
            metrics.RECONNECTS.labels(r.camera_id).set(s.reconnects)
            metrics.CAMERA_UP.labels(r.camera_id).set(1 if s.state == "streaming" else 0)

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> IngestWorker:
        """Connect to Kafka and join the ingest group; cameras arrive through the watcher."""
        _ = self.detector  # load weights before taking cameras: a bad model fails fast
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
                last_stats = now

    def close(self, timeout_s: float = 10.0) -> None:
        """Leave the group (cameras move to other workers at once) and flush what was accepted."""
        if self.watcher is not None:
            self.watcher.stop()
        with self._lock:
            for reader in self._readers.values():
                reader.stop()
            self._readers.clear()
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
