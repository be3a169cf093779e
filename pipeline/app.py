"""The composition root: wire ingest, the detector, retraining and alerts together, and shut
down cleanly on a signal (``vigil run`` / ``vigil ingest``).

The stages never import each other; this module hands the detector to the ingest worker and plugs
hot reload, collection, drift and the console's live view into it through its callback points
and listeners.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from detectors import host_threads
from detectors.engine import Detector
from detectors.retrain.collector import start_live_collection
from detectors.retrain.drift import start_drift_monitor
from detectors.retrain.hot_reload import start_hot_reload
from pipeline.cameras.registry import put_cameras
from pipeline.common.contracts import FrameDetector
from pipeline.common.endpoints import service_endpoints
from pipeline.common.kafka import ensure_topics
from pipeline.common.lifecycle import install_signal_handlers
from pipeline.config import VigilConfig
from pipeline.ingest import metrics
from pipeline.ingest.live import LiveView
from pipeline.ingest.worker import IngestWorker

log = logging.getLogger(__name__)


def sync_registry(cfg: VigilConfig) -> None:
    """Publish the YAML's cameras to the registry topic; cameras added live are left alone."""
    if cfg.cameras:
        put_cameras(cfg.kafka, cfg.cameras)
        log.info("registry: applied %d camera(s) from the config", len(cfg.cameras))


def _tune_host_threads(worker: IngestWorker) -> None:
    """Size PyTorch's and OpenCV's thread pools for the backend (detectors/host_threads.py)."""
    det = worker.detector
    backend = getattr(det, "backend_name", "ultralytics")
    device = str(getattr(det, "device", "cpu"))
    host_threads.apply(worker.cfg.detector.host_threads, backend, device)
    log.info("backend %s on %s: %s", backend, device, host_threads.current())


def _hot_reload(worker: IngestWorker):
    cfg = worker.cfg
    return start_hot_reload(
        cfg.redis, cfg.models, cfg.detector, worker.worker_id, worker.swap_detector
    )


def _collection(worker: IngestWorker):
    cfg = worker.cfg
    service = start_live_collection(cfg, cfg.collection, worker.worker_id, cfg.ingest.group_id)
    if service is not None:
        worker.add_frame_listener(service.hook)
    return service


def _drift(worker: IngestWorker):
    monitor = start_drift_monitor(
        worker.cfg.redis, worker.cfg.models, lambda: getattr(worker.detector, "version", None)
    )
    if monitor is not None:
        worker.add_frame_listener(monitor)
    return monitor


def _live_view(worker: IngestWorker) -> LiveView:
    """The console's live frames and camera status (``ingest.live_jpeg_fps``, docs/console.md)."""
    cfg = worker.cfg
    view = LiveView(cfg.redis, worker.worker_id, cfg.ingest.live_jpeg_fps).start()
    worker.add_frame_listener(view)
    worker.add_status_listener(view.publish_status)
    return view


def build_worker(
    cfg: VigilConfig, detector: FrameDetector | None = None, worker_id: str | None = None
) -> IngestWorker:
    """An ingest worker with the detector of ``cfg.detector`` (unless one is given) and the
    plug-ins the config asks for: hot reload (``models.registry``), collection
    (``collection.enabled``), drift (``models.drift``) and the console's live view
    (``ingest.live_jpeg_fps`` > 0). ``worker.services`` holds what they started, by name."""

    def make_detector() -> FrameDetector:
        return Detector(cfg.detector)  # loads the weights: after hot reload had its say

    worker = IngestWorker(
        cfg,
        detector=detector,
        worker_id=worker_id,
        detector_factory=make_detector,
        forbidden_endpoints=service_endpoints(cfg),
    )
    worker.add_callback("before_detector", _hot_reload, "hot_reload")
    worker.add_callback("on_start", _tune_host_threads, "host_threads")
    worker.add_callback("on_start", _collection, "collection")
    worker.add_callback("on_start", _drift, "drift")
    if cfg.ingest.live_jpeg_fps > 0:
        worker.add_callback("on_start", _live_view, "live_view")
    return worker


def run_ingest(
    cfg: VigilConfig,
    stop: threading.Event | None = None,
    max_seconds: float | None = None,
    metrics_port: int | None = None,
    sync_cameras: bool = False,
    extra_services: list[Callable[[threading.Event], object]] | None = None,
) -> int:
    stop = stop or threading.Event()
    install_signal_handlers(stop)
    metrics.serve(metrics_port)
    ensure_topics(cfg.kafka)
    if sync_cameras:
        sync_registry(cfg)
    worker = build_worker(cfg).start()
    threads = []
    for service in extra_services or []:
        t = threading.Thread(target=service, args=(stop,), daemon=True)
        t.start()
        threads.append(t)
    try:
        worker.run(stop, max_seconds)
    finally:
        stop.set()
        worker.close()
        for t in threads:
            t.join(timeout=15)
    return 0
