"""Collecting frames for retraining next to a live ingest worker, and what that costs.

:class:`CollectionHook` is an ``on_frame_processed`` listener of
:class:`~pipeline.ingest.worker.IngestWorker`. On the detection thread it only runs the sampler's
cheap pre-check and hands candidate frames to a bounded queue (full: the frame is skipped and
counted, never waited for); a background thread makes the final decision, hashes, encodes and
writes. :class:`AlertFrameSource` adds the frames that triggered alerts: it reads the alerts topic
and fetches the triggering frame from the Redis frame store (``pipeline.ingest.frame_store``).
:func:`measure_overhead` measures what collection costs the detection loop.

Over recorded footage: :func:`collect_videos` (:mod:`detectors.retrain.offline_collection`,
importable from here too).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from prometheus_client import Counter

from detectors.retrain.config import CollectionConfig, CollectionPolicy
from detectors.retrain.offline_collection import VideoCollectReport, collect_videos
from detectors.retrain.sampling import Collector
from pipeline.common.contracts import Connections, Frame
from pipeline.common.kafka import make_consumer
from pipeline.common.redis import frame_key, redis_client

__all__ = [
    "COLLECTED",
    "COLLECTION_SKIPPED",
    "AlertFrameSource",
    "CollectionHook",
    "CollectionService",
    "VideoCollectReport",
    "collect_videos",
    "measure_overhead",
    "start_live_collection",
]

log = logging.getLogger(__name__)

COLLECTED = Counter(
    "vigil_collection_frames_saved_total", "Frames kept for retraining", ["camera", "reason"]
)
COLLECTION_SKIPPED = Counter(
    "vigil_collection_frames_skipped_total",
    "Candidate frames not kept (queue full, near-duplicate, error)",
    ["why"],
)


def _lower_priority(nice: int = 10) -> None:
    """Run the calling thread at a lower CPU priority (Linux: per-thread nice), so frames are
    written with the CPU time detection leaves over."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)


class CollectionHook:
    """``on_frame_processed`` listener that samples frames into a :class:`Collector`."""

    def __init__(self, collector: Collector, queue_size: int = 16) -> None:
        self.collector = collector
        self._queue: queue.Queue[tuple[Frame, list] | None] = queue.Queue(maxsize=queue_size)
        self._thread = threading.Thread(target=self._run, name="collector", daemon=True)
        self.queued = 0
        self.processed = 0
        self._done = threading.Condition()
        self.queue_full = 0
        self.saved = 0

    def start(self) -> CollectionHook:
        self._thread.start()
        return self

    def __call__(self, frame: Frame, detections: list) -> None:
        sampler = self.collector.sampler(frame.camera_id)
        if not sampler.wants(frame.capture_ts, detections):
            return
        try:
            self._queue.put_nowait((frame, list(detections)))
            self.queued += 1
        except queue.Full:
            self.queue_full += 1
            COLLECTION_SKIPPED.labels("queue_full").inc()

    def _run(self) -> None:
        _lower_priority()
        while True:
            item = self._queue.get()
            if item is None:
                return
            frame, dets = item
            try:
                before = self.collector.stats.duplicates
                saved = self.collector.consider(
                    frame.camera_id, frame.image, frame.capture_ts, dets
                )
                if saved is not None:
                    self.saved += 1
                    rec = self.collector.manifest.records.get(saved) or {}
                    for reason in rec.get("reasons") or []:
                        COLLECTED.labels(frame.camera_id, reason).inc()
                elif self.collector.stats.duplicates > before:
                    COLLECTION_SKIPPED.labels("duplicate").inc()
            except Exception:  # never let a bad frame end collection
                COLLECTION_SKIPPED.labels("error").inc()
                log.exception("collector: frame of camera %s failed", frame.camera_id)
            finally:
                with self._done:
                    self.processed += 1
                    self._done.notify_all()

    def drain(self, timeout_s: float = 10.0) -> None:
        """Wait until the queue is empty (tests and benchmarks)."""
        with self._done:
            self._done.wait_for(lambda: self.processed >= self.queued, timeout_s)

    def close(self, timeout_s: float = 10.0) -> None:
        with contextlib.suppress(queue.Full):
            self._queue.put(None, timeout=timeout_s)
        self._thread.join(timeout_s)
        self.collector.close()


class AlertFrameSource:
    """Keeps the frames that triggered alerts (alerts topic + Redis frame store)."""

    def __init__(self, cfg: Connections, collector: Collector, group_id: str) -> None:
        self.cfg = cfg
        self.collector = collector
        self.group_id = group_id
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="collector-alerts", daemon=True)
        self.saved = 0
        self.missing = 0
        self.error: Exception | None = None

    def start(self) -> AlertFrameSource:
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        self._thread.join(timeout_s)

    def handle(self, alert: dict[str, Any], client) -> bool:
        """Keep the frame of one alert message; True when saved."""
        if alert.get("status") != "started":
            return False
        cam = alert.get("camera_id")
        if not isinstance(cam, str) or not self.collector.policy_for(cam).alerts:
            return False
        key = frame_key(self.cfg.redis.key_prefix, cam, alert.get("epoch", 0), alert["frame_seq"])
        data = client.get(key)
        if not data:
            self.missing += 1
            COLLECTION_SKIPPED.labels("alert_frame_missing").inc()
            return False
        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        if img is None:
            return False
        saved = self.collector.offer(
            cam,
            img,
            float(alert.get("updated_at") or time.time()),
            ["alert"],
            meta={"alert": {"id": alert.get("id"), "rule_id": alert.get("rule_id")}},
        )
        if saved is not None:
            self.saved += 1
            COLLECTED.labels(cam, "alert").inc()
        return saved is not None

    def _run(self) -> None:
        try:
            consumer = make_consumer(
                self.cfg.kafka,
                "collect-alerts",
                group_id=self.group_id,
                auto_offset_reset="latest",
                enable_auto_commit=True,
            )
            consumer.subscribe([self.cfg.kafka.topics.alerts])
            client = redis_client(self.cfg.redis)
        except Exception as e:
            self.error = e
            log.error("collector: cannot read alerts (%s); alert frames are not collected", e)
            return
        try:
            while not self._stop.is_set():
                for recs in consumer.poll(timeout_ms=500).values():
                    for r in recs:
                        try:
                            self.handle(json.loads(r.value), client)
                        except Exception as e:  # one bad message must not stop the source
                            log.warning("collector: alert message skipped: %s", e)
        finally:
            consumer.close()
            client.close()


@dataclass
class CollectionService:
    """What :func:`attach` started for a worker; ``close`` stops it."""

    collector: Collector
    hook: CollectionHook
    alerts: AlertFrameSource | None = None

    def close(self) -> None:
        if self.alerts is not None:
            self.alerts.stop()
        self.hook.close()


def start_live_collection(
    cfg: Connections, cc: CollectionConfig, worker_id: str, ingest_group: str
) -> CollectionService | None:
    """Start collection next to an ingest worker when ``collection.enabled`` is set; the
    service's ``hook`` is the frame listener to add to the worker."""
    if not cc.enabled:
        return None
    collector = Collector(
        cc.dir,
        cc.policy_for,
        disk_budget_mb=cc.disk_budget_mb,
        jpeg_quality=cc.jpeg_quality,
        source=f"worker:{worker_id}",
    )
    hook = CollectionHook(collector, cc.queue_size).start()
    alerts = None
    wants_alerts = cc.policy.alerts or any(cc.policy_for(cid).alerts for cid in cc.cameras)
    if wants_alerts and cfg.redis.store_frames:
        group = cc.alerts_group_id or f"{ingest_group}-collect"
        alerts = AlertFrameSource(cfg, collector, group).start()
    elif wants_alerts:
        log.warning("collection: alert frames need redis.store_frames: true; not collected")
    log.info("collecting frames for retraining into %s", collector.root)
    return CollectionService(collector, hook, alerts)


# --------------------------------------------------------------------------------------------
# Benchmark: what collection costs the detection loop


def measure_overhead(
    video: str | Path,
    detector,
    out: str | Path,
    *,
    frames: int = 96,
    rounds: int = 2,
    policy: CollectionPolicy | None = None,
    camera_id: str = "bench",
    timeline_fps: float = 10.0,
) -> dict[str, float]:
    """Detection-loop fps with and without a live collector, alternating runs in one process.

    The same frames go through ``detector.detect`` in batches of ``max_batch``; with collection,
    every processed frame is offered to a :class:`CollectionHook` exactly as the ingest worker
    does. The default policy is deliberately aggressive (a candidate every 0.5 s of footage).
    """
    cap = cv2.VideoCapture(str(video))
    imgs: list[np.ndarray] = []
    while len(imgs) < frames:
        ok, img = cap.read()
        if not ok:
            break
        imgs.append(img)
    cap.release()
    if not imgs:
        raise ValueError(f"no frames could be read from {video}")
    policy = policy or CollectionPolicy(
        periodic_s=1.0, min_interval_s=0.5, dedup_distance=0, max_images=10_000
    )
    batch = detector.config.max_batch
    detector.detect(imgs[:batch])  # warm

    def run(hook: CollectionHook | None, clock: list[float]) -> float:
        cpu0 = time.process_time()  # all threads of the process, the collector's included
        t0 = time.perf_counter()
        for start in range(0, len(imgs), batch):
            chunk = imgs[start : start + batch]
            results = detector.detect(chunk)
            if hook is None:
                continue
            for img, dets in zip(chunk, results, strict=True):
                clock[0] += 1.0 / timeline_fps
                hook(Frame(camera_id, int(clock[0] * timeline_fps), 0, clock[0], img), dets)
        if hook is not None:
            hook.drain()
        cpu[hook is not None].append(time.process_time() - cpu0)
        return len(imgs) / (time.perf_counter() - t0)

    cpu: dict[bool, list[float]] = {False: [], True: []}
    without, with_, ratios = [], [], []
    saved = 0
    clock = [1_000_000.0]
    for r in range(rounds):  # adjacent pairs, so drifting load on a shared host cancels out
        collector = Collector(Path(out) / f"round{r}", policy, source="bench")
        hook = CollectionHook(collector).start()
        if r % 2:
            with_.append(run(hook, clock))
            without.append(run(None, clock))
        else:
            without.append(run(None, clock))
            with_.append(run(hook, clock))
        hook.close()
        saved += collector.stats.saved
        ratios.append(with_[-1] / without[-1])
    ratio = float(np.median(ratios))
    return {
        "fps_without": round(float(np.median(without)), 2),
        "fps_with": round(float(np.median(with_)), 2),
        "ratio": round(ratio, 4),
        "overhead_pct": round(100 * (1 - ratio), 2),
        "ratios": [round(x, 4) for x in ratios],
        # CPU seconds per frame without / with: the fps ratio on a host with no spare core
        "cpu_ratio": round(float(np.median(cpu[False]) / np.median(cpu[True])), 4),
        "frames": len(imgs),
        "rounds": rounds,
        "saved": saved,
        "cpu_count": os.cpu_count() or 0,
    }
