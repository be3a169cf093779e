"""``vigil run`` / ``vigil ingest``: wire the pieces together and shut down cleanly on a signal."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable

from pipeline import metrics
from pipeline.config import VigilConfig
from pipeline.kafka_io import ensure_topics
from pipeline.registry import put_cameras
from pipeline.worker import IngestWorker

log = logging.getLogger(__name__)


def install_signal_handlers(stop: threading.Event) -> None:
    """Ctrl-C / SIGTERM end the run loop; the worker then flushes its producer."""

    def handler(signum, _frame) -> None:
        log.info("received %s, shutting down", signal.Signals(signum).name)
        stop.set()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, handler)
        signal.signal(signal.SIGTERM, handler)


def sync_registry(cfg: VigilConfig) -> None:
    """Publish the YAML's cameras to the registry topic; cameras added live are left alone."""
    if cfg.cameras:
        put_cameras(cfg.kafka, cfg.cameras)
        log.info("registry: applied %d camera(s) from the config", len(cfg.cameras))


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
    worker = IngestWorker(cfg).start()
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
