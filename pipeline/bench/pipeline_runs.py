"""The ingest pipeline over RTSP and Kafka against the naive ``predict`` loop, side by side."""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import cv2

from pipeline.bench.cpu_share import CpuShare
from pipeline.bench.footage import retimed
from pipeline.bench.measure import AckTimer, hist_state, percentile, reader_counts, rss_mb, to_ms
from pipeline.bench.report import cores_text
from pipeline.camera_sim import CameraSim

NAIVE_RESULT = "naive-result: "
# imported, not run as __main__: the child then shows the same warnings as the bench itself
NAIVE_CHILD = "import sys; from pipeline.bench import naive_child; sys.exit(naive_child())"
# glibc malloc keeps freed memory up to these sizes instead of unmapping it (32 MiB is glibc's
# largest mmap threshold on 64-bit)
MALLOC_TUNED = {"MALLOC_MMAP_THRESHOLD_": str(32 << 20), "MALLOC_TRIM_THRESHOLD_": str(256 << 20)}


class PipelineSection:
    """``pipeline``: the worker with N RTSP cameras, the naive loop, the soak."""

    def _sources(self, n: int) -> dict[str, Path]:
        cache = Path(os.environ.get("VIGIL_CACHE") or "~/.cache/vigil").expanduser() / "bench"
        return {
            f"cam{i}": retimed(self.files[i % len(self.files)], self.args.camera_fps, cache)
            for i in range(n)
        }

    def _config(
        self,
        gating: bool,
        alerts: dict | None = None,
        frame_store: bool | None = None,
        namespace: str = "",
    ):

        t = f"bench{self.tag}{namespace}"
        store = self.args.frame_store if frame_store is None else frame_store
        data = {
            "kafka": {
                "bootstrap_servers": self.args.bootstrap or self.base.kafka.bootstrap_servers,
                "topics": {
                    "cameras": f"{t}.cameras",
                    "detections": f"{t}.detections",
                    "alerts": f"{t}.alerts",
                    "detections_dlq": f"{t}.dlq",
                    "control": f"{t}.control",
                    "rules": f"{t}.rules",
                },
                "detections_partitions": 2,
                "cameras_partitions": 2,
            },
            "redis": {"store_frames": store, "key_prefix": f"{t}:"},
            "detector": self.det_dict,
            "ingest": {
                "default_fps": self.args.camera_fps,
                "motion": dict(self.base.ingest.motion.model_dump(), enabled=gating),
            },
        }
        if alerts is not None:
            data["alerts"] = alerts
        from pipeline.config import parse_config  # noqa: PLC0415 (Kafka/Redis clients: loaded by the sections that use them)

        return parse_config(data, "bench")

    def pipeline_run(self, det, n: int, gating: bool, seconds: float) -> dict[str, Any]:
        from pipeline.cameras.spec import CameraSpec  # noqa: PLC0415 (Kafka/Redis clients: loaded by the sections that use them)
        from pipeline.common.kafka import ensure_topics, make_producer  # noqa: PLC0415 (Kafka/Redis clients: loaded by the sections that use them)
        from pipeline.ingest import metrics  # noqa: PLC0415 (Kafka/Redis clients: loaded by the sections that use them)
        from pipeline.ingest.frame_store import FrameStore  # noqa: PLC0415 (Kafka/Redis clients: loaded by the sections that use them)
        from pipeline.ingest.worker import IngestWorker  # noqa: PLC0415 (Kafka/Redis clients: loaded by the sections that use them)

        cfg = self._config(gating)
        ensure_topics(cfg.kafka)
        sources = self._sources(n)
        self.threads_for(det)  # as a worker from pipeline.app.build_worker does at start
        # detector-only of the same detector, right before and after: the machine is shared
        bs = min(n, det.config.max_batch)
        adjacent = [self.time_detector(det, self.pool(n), bs, self.args.adjacent_seconds)]
        with CameraSim(sources, port=0) as sim:
            specs = {
                cid: CameraSpec(id=cid, url=sim.urls[cid], fps=self.args.camera_fps)
                for cid in sources
            }
            worker = IngestWorker(cfg, detector=det, worker_id=f"bench-{self.tag}")
            timer = AckTimer(make_producer(cfg.kafka, f"bench-{self.tag}"))
            worker.producer = timer
            if cfg.redis.store_frames:
                worker.frame_store = FrameStore(cfg.redis).start()
            stop = threading.Event()
            loop = threading.Thread(
                target=self._loop, args=(worker, stop), name="detection-loop", daemon=True
            )
            try:
                worker.reconcile(specs)
                loop.start()
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline and any(
                    r.stats.frames_decoded == 0 for r in worker._readers.values()
                ):
                    time.sleep(0.2)
                time.sleep(self.args.warmup)
                r0 = {cid: reader_counts(r) for cid, r in worker._readers.items()}
                p0 = dict(worker._processed)
                calls0, stale0 = worker.detector_frames, worker.stale_frames

                b0 = hist_state(metrics.BATCH_SIZE)
                rss = [rss_mb()]
                timer.start()
                share = CpuShare({"cameras": sim.pid})
                t0, c0 = time.monotonic(), time.process_time()
                while (left := t0 + seconds - time.monotonic()) > 0:
                    time.sleep(min(left, self.args.rss_interval))
                    rss.append(rss_mb())
                elapsed = time.monotonic() - t0
                cpu = time.process_time() - c0
                cores = share.stop()
                timer.stop()
                b1 = hist_state(metrics.BATCH_SIZE)
                r1 = {cid: reader_counts(r) for cid, r in worker._readers.items()}
                p1 = dict(worker._processed)
            finally:
                stop.set()
                loop.join(10)
                worker.close()
        adjacent.append(self.time_detector(det, self.pool(n), bs, self.args.adjacent_seconds))
        per_cam = {cid: round((p1.get(cid, 0) - p0.get(cid, 0)) / elapsed, 2) for cid in sources}
        shares = list(per_cam.values())
        lat = timer.latencies
        batches = b1[1] - b0[1]
        return {
            "cameras": n,
            "gating": gating,
            "backend": det.backend_name,
            "seconds": round(elapsed, 1),
            "fps": round(timer.acked / elapsed, 2),
            "published_fps": round(sum(shares), 2),
            "detector_fps": round((worker.detector_frames - calls0) / elapsed, 2),
            "latency_p50_ms": to_ms(percentile(lat, 50)),
            "latency_p99_ms": to_ms(percentile(lat, 99)),
            "per_camera_fps": per_cam,
            "fairness_min_over_max": round(min(shares) / max(shares), 3) if max(shares) else None,
            "offered_fps": round(sum(r1[c][0] - r0[c][0] for c in r1) / elapsed, 1),
            "cpu_ms_per_frame": round(1000 * cpu / max(sum(p1.values()) - sum(p0.values()), 1), 1),
            "cores_used": cores,
            "detector_only_adjacent": {
                "batch": bs,
                "fps": round(statistics.mean(a["fps"] for a in adjacent), 2),
                "cpu_ms_per_frame": round(
                    statistics.mean(a["cpu_ms_per_frame"] for a in adjacent), 1
                ),
                "runs": adjacent,
            },
            "dropped_fps": round(sum(r1[c][1] - r0[c][1] for c in r1) / elapsed, 1),
            # reader threads' CPU (part of the worker's), in cores
            "decode_cores": round(sum(r1[c][2] - r0[c][2] for c in r1) / elapsed, 3),
            "stale": worker.stale_frames - stale0,
            "mean_batch": round((b1[0] - b0[0]) / batches, 2) if batches else None,
            "publish_errors": timer.errors,
            "rss_mb": {
                "start": round(rss[0], 1),
                "end": round(rss[-1], 1),
                "max": round(max(rss), 1),
            },
        }

    @staticmethod
    def _loop(worker, stop: threading.Event) -> None:
        while not stop.is_set():
            worker.process_once()
        worker.flush()

    def naive_run(self, n: int, seconds: float, allocator: str = "stock") -> dict[str, Any]:
        """The naive baseline in a fresh process of its own, as a user's script would run.

        Not in the bench process: what ran there before changes how fast PyTorch runs.
        glibc's malloc returns freed memory to the system below its mmap/trim thresholds, so
        PyTorch's large CPU tensors page-fault again on every inference; the thresholds rise
        after large frees, and the naive loop measured up to 25 % faster after runs that had
        freed big buffers. ``allocator="tuned"`` fixes both thresholds high (what PyTorch's
        CPU performance guides get from jemalloc or tcmalloc): the stronger baseline.
        """
        args = {k: v for k, v in vars(self.args).items() if k != "func"}
        args["skip"] = sorted(args.get("skip") or ())
        job = {"args": args, "tag": self.tag, "cameras": n, "seconds": seconds}
        env = dict(os.environ)
        for key in MALLOC_TUNED:
            env.pop(key, None)
        if allocator == "tuned":
            env.update(MALLOC_TUNED)
        proc = subprocess.run(
            [sys.executable, "-c", NAIVE_CHILD],
            input=json.dumps(job),
            stdout=subprocess.PIPE,
            env=env,
            text=True,
            timeout=seconds + 300,
            check=False,
        )
        lines = [line for line in proc.stdout.splitlines() if line.startswith(NAIVE_RESULT)]
        if proc.returncode or not lines:
            raise RuntimeError(f"naive baseline process failed (exit code {proc.returncode})")
        result = json.loads(lines[-1][len(NAIVE_RESULT) :])
        result["allocator"] = allocator
        return result

    def naive_loop(self, n: int, seconds: float) -> dict[str, Any]:
        """Per camera: own YOLO, cap.read() -> predict(frame) -> producer.send, in a thread."""
        from detectors.loading import load_model, select_device  # noqa: PLC0415 (imports torch: loaded only when needed)
        from pipeline.common.kafka import ensure_topics, make_producer  # noqa: PLC0415 (Kafka/Redis clients: loaded by the sections that use them)

        cfg = self._config(False)
        ensure_topics(cfg.kafka)
        self.threads_for(None)
        device = select_device(self.det_dict["device"])
        from detectors.engine import resolve_classes  # noqa: PLC0415 (imports torch: loaded only when needed)

        names = load_model(self.det_dict["weights"], device).names
        classes = resolve_classes(self.det_dict["classes"], names)
        sources = self._sources(n)
        timer = AckTimer(make_producer(cfg.kafka, f"naive-{self.tag}"))
        counts = dict.fromkeys(sources, 0)
        lag = dict.fromkeys(sources, 0.0)
        stop = threading.Event()
        started = threading.Barrier(n + 1)

        def camera(cid: str, url: str) -> None:
            model = load_model(self.det_dict["weights"], device)  # YOLO(...) per camera
            cap = cv2.VideoCapture(url, cv2.CAP_FFMPEG)
            with contextlib.suppress(threading.BrokenBarrierError):
                started.wait(60)
            zero = None  # wall clock of stream time 0: how far behind live the loop reads
            while not stop.is_set():
                ok, frame = cap.read()
                if not ok:
                    continue
                ts = time.time()
                pos = cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
                zero = ts - pos if zero is None else zero
                if timer.recording:
                    lag[cid] = ts - zero - pos
                r = model.predict(
                    frame,
                    imgsz=self.args.imgsz,
                    conf=self.det_dict["conf"],
                    iou=self.det_dict["iou"],
                    classes=classes,
                    device=device,
                    verbose=False,
                )[0]
                b = r.boxes
                msg = {
                    "camera_id": cid,
                    "capture_ts": ts,
                    "detections": [
                        {
                            "class_id": int(c),
                            "confidence": round(float(p), 4),
                            "box": [round(float(v), 5) for v in xy],
                        }
                        for xy, p, c in zip(
                            b.xyxyn.tolist(), b.conf.tolist(), b.cls.tolist(), strict=True
                        )
                    ],
                }
                timer.send(
                    cfg.kafka.topics.detections, key=cid, value=msg, timestamp_ms=int(ts * 1000)
                )
                if timer.recording:
                    counts[cid] += 1
            cap.release()

        with CameraSim(sources, port=0) as sim:
            threads = [
                threading.Thread(target=camera, args=(cid, sim.urls[cid]), daemon=True)
                for cid in sources
            ]
            for t in threads:
                t.start()
            with contextlib.suppress(threading.BrokenBarrierError):
                started.wait(90)
            time.sleep(self.args.warmup)
            timer.start()
            share = CpuShare({"cameras": sim.pid})
            t0, c0 = time.monotonic(), time.process_time()
            time.sleep(seconds)
            elapsed = time.monotonic() - t0
            cpu = time.process_time() - c0
            cores = share.stop()
            timer.stop()
            stop.set()
            for t in threads:
                t.join(30)
        timer.flush(10)
        timer.close(10)
        per_cam = {cid: round(c / elapsed, 2) for cid, c in counts.items()}
        return {
            "cameras": n,
            "seconds": round(elapsed, 1),
            "fps": round(timer.acked / elapsed, 2),
            "latency_p50_ms": to_ms(percentile(timer.latencies, 50)),
            "latency_p99_ms": to_ms(percentile(timer.latencies, 99)),
            "per_camera_fps": per_cam,
            "cpu_ms_per_frame": round(1000 * cpu / max(sum(counts.values()), 1), 1),
            "cores_used": cores,
            "stream_lag_end_s": {cid: round(v, 2) for cid, v in lag.items()},
            "note": "latency from cap.read() returning; the time a frame waited in the stream "
            "before it (stream_lag_end_s at the end of the run) is not counted",
        }

    def pipeline(self) -> None:
        backend = self.args.pipeline_backend
        det = self.detector(backend)
        self.result["pipeline_backend"] = det.backend_name
        rows = []
        naive = []
        self.emit(
            f"\n## Pipeline over RTSP + Kafka (backend {det.backend_name}, cameras at {self.args.camera_fps:g} fps)"
        )
        self.emit(
            "| run | cameras | gating | offered fps | frames/s | detector frames/s | "
            "detector-only fps (adjacent) | p50 ms | p99 ms | fairness min/max | stale | "
            "mean batch | CPU ms/frame (detector-only) | RSS MB start/end | "
            "cores: worker (of it decoding)/camera server/kafka/others/idle "
            "(detector-only: worker/idle) |"
        )
        self.emit("|---" * 15 + "|")

        def show(kind: str, r: dict) -> None:
            rss = r.get("rss_mb")
            mem = f"{rss['start']}/{rss['end']}" if rss else "-"
            p99 = f"{r['latency_p99_ms']}"
            if r.get("stream_lag_end_s"):
                p99 += f" (+{max(r['stream_lag_end_s'].values())} s behind live)"
            adj = r.get("detector_only_adjacent") or {}
            cpu = str(r.get("cpu_ms_per_frame", "-"))
            if adj:
                cpu += f" ({adj.get('cpu_ms_per_frame')})"
            self.emit(
                f"| {kind} | {r['cameras']} | {'on' if r.get('gating') else 'off'} | "
                f"{r.get('offered_fps', '-')} | {r['fps']} | {r.get('detector_fps', '-')} | "
                f"{adj.get('fps', '-')} | {r['latency_p50_ms']} | {p99} | "
                f"{r.get('fairness_min_over_max', '-')} | {r.get('stale', '-')} | "
                f"{r.get('mean_batch', '-')} | {cpu} | {mem} | {cores_text(r)} |"
            )

        for n in self.args.cameras:
            r = self.pipeline_run(det, n, False, self.args.duration)
            rows.append(r)
            show("pipeline", r)
            if n in self.args.naive_cameras:
                for k in range(self.args.pairs):  # alternate: the machine's load drifts
                    if k:
                        r = self.pipeline_run(det, n, False, self.args.duration)
                        rows.append(r)
                        show("pipeline", r)
                    kinds = list(self.args.naive_allocators)
                    for allocator in kinds if k % 2 == 0 else kinds[::-1]:
                        nr = self.naive_run(n, self.args.duration, allocator)
                        naive.append(nr)
                        show(f"naive ({allocator} malloc)", nr)
            if n in self.args.gating_cameras:
                r = self.pipeline_run(det, n, True, self.args.duration)
                rows.append(r)
                show("pipeline", r)
        self.result["pipeline"] = rows
        self.result["naive"] = naive
        if self.args.soak:
            n = 4 if 4 in self.args.cameras else self.args.cameras[-1]
            self.emit(
                f"\n## Soak: {n} cameras for {self.args.soak:g} s (RSS every {self.args.rss_interval:g} s)"
            )
            r = self.pipeline_run(det, n, False, self.args.soak)
            self.result["soak"] = r
            show("soak", r)
