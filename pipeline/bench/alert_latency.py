"""Capture-to-Redis latency of alert events with the detector under load."""

from __future__ import annotations

import threading
import time

from pipeline.bench.measure import percentile, rounded
from pipeline.camera_sim import CameraSim


class AlertLatencySection:
    """``alerts``: the whole chain from camera to Redis under load."""

    def alert_latency(self) -> None:
        """Capture-to-Redis latency of alert events while the detector runs at
        ``--alert-load`` (default 80 %) of its capacity: the whole chain, snapshots included."""
        from alerts.config import parse_alerts_config  # noqa: PLC0415 (Kafka/Redis clients: loaded by the sections that use them)
        from alerts.service import AlertService  # noqa: PLC0415 (Kafka/Redis clients: loaded by the sections that use them)
        from alerts.store import AlertStore  # noqa: PLC0415 (Kafka/Redis clients: loaded by the sections that use them)
        from pipeline.cameras.spec import CameraSpec  # noqa: PLC0415 (Kafka/Redis clients: loaded by the sections that use them)
        from pipeline.common.kafka import ensure_topics, make_producer  # noqa: PLC0415 (Kafka/Redis clients: loaded by the sections that use them)
        from pipeline.ingest.frame_store import FrameStore  # noqa: PLC0415 (Kafka/Redis clients: loaded by the sections that use them)
        from pipeline.ingest.worker import IngestWorker  # noqa: PLC0415 (Kafka/Redis clients: loaded by the sections that use them)

        n = self.args.alert_cameras
        det = self.detector(self.args.pipeline_backend)
        self.threads_for(det)
        bs = min(n, det.config.max_batch)
        capacity = self.time_detector(det, self.pool(n), bs, self.args.adjacent_seconds)["fps"]
        per_camera = round(self.args.alert_load * capacity / n, 2)
        sources = self._sources(n)
        rules = []
        for cid in sources:  # rules that fire often on this footage: people come and go
            rules.append(
                {"id": f"{cid}-intrusion", "type": "zone_intrusion", "cameras": [cid]}
                | {"classes": ["person"], "min_frames": 3, "severity": "high"}
            )
            rules.append(
                {"id": f"{cid}-crowding", "type": "crowding", "cameras": [cid]}
                | {"classes": ["person"], "min_count": 2, "min_seconds": 1, "clear_after_s": 1}
            )
        # topics of its own: the alert service reads from the beginning, and the naive runs'
        # messages (not Vigil's format) would only fill the dead-letter topic
        cfg = self._config(False, alerts={"rules": rules}, frame_store=True, namespace="-alerts")
        ensure_topics(cfg.kafka)
        acfg = parse_alerts_config(cfg.alerts)
        store = AlertStore(cfg.redis)
        stop_worker, stop_alerts = threading.Event(), threading.Event()
        service = threading.Thread(
            target=lambda: AlertService(cfg, acfg).run(stop_alerts), daemon=True
        )
        with CameraSim(sources, port=0) as sim:
            specs = {cid: CameraSpec(id=cid, url=sim.urls[cid], fps=per_camera) for cid in sources}
            worker = IngestWorker(cfg, detector=det, worker_id=f"bench-{self.tag}")
            worker.producer = make_producer(cfg.kafka, f"bench-alerts-{self.tag}")
            worker.frame_store = FrameStore(cfg.redis).start()
            loop = threading.Thread(target=self._loop, args=(worker, stop_worker), daemon=True)
            try:
                service.start()
                worker.reconcile(specs)
                loop.start()
                time.sleep(self.args.warmup)
                frames0, t0 = worker.detector_frames, time.time()
                time.sleep(self.args.alert_seconds)
                t1 = time.time()
                processed = (worker.detector_frames - frames0) / (t1 - t0)
            finally:
                stop_worker.set()
                loop.join(10)
                worker.close()
                time.sleep(3)  # the service drains what was published
                stop_alerts.set()
                service.join(30)
        latencies: list[float] = []
        snapshots = events = 0
        for entry in store.recent(count=100_000):
            alert = store.get_alert(entry["id"]) or {}
            status = entry["status"]
            written = alert.get(f"written_{status}")
            key = "latency_ms" if status == "started" else "ended_latency_ms"
            if written is None or not t0 <= float(written) <= t1 or alert.get(key) is None:
                continue
            events += 1
            latencies.append(float(alert[key]))
            snapshots += status == "started" and bool(alert.get("snapshot"))
        out = {
            "cameras": n,
            "camera_stream_fps": self.args.camera_fps,
            "detection_fps_per_camera": per_camera,
            "detector_capacity_fps": capacity,
            "processed_fps": round(processed, 2),
            "load": round(processed / capacity, 3) if capacity else None,
            "seconds": round(t1 - t0, 1),
            "alert_events": events,
            "snapshots": snapshots,
            "latency_p50_ms": rounded(percentile(latencies, 50)),
            "latency_p99_ms": rounded(percentile(latencies, 99)),
            "latency_max_ms": max(latencies) if latencies else None,
        }
        self.result["alert_latency"] = out
        self.emit(
            f"\n## Alert latency, capture to Redis, detector at {out['load']} of capacity "
            f"({n} cameras x {per_camera} fps, capacity {capacity} fps, {out['seconds']} s)"
        )
        self.emit(
            f"alert events {events} (snapshots {snapshots}): p50 {out['latency_p50_ms']} ms, "
            f"p99 {out['latency_p99_ms']} ms, max {out['latency_max_ms']} ms"
        )
