"""``vigil bench``: the performance figures of BENCHMARKS.md, measured side by side in one run.

Sections (all on the shared footage, same model, image size and thresholds throughout):

* ``accuracy``: every backend's detections against ultralytics ``predict`` (the PyTorch
  reference) frame by frame: matched boxes IoU >= 0.9, same class, confidence within 0.05.
* ``detector``: detector-only throughput per backend and batch size (decoded frames in memory,
  batches mixing the cameras' resolutions; letterbox + inference + NMS, no tracking; the next
  batch starts before the previous one's NMS, as in the worker).
* ``pipeline``: the ingest worker with N cameras served over RTSP by the camera simulator, real
  Kafka: frames/s published (acknowledged), capture-to-acknowledgement latency p50/p99, per-camera
  share, dropped/stale frames, worker RSS; with and without motion gating.
* ``naive``: the obvious alternative in the same run: per camera a thread with its own
  ``YOLO(...)`` and a ``cap.read()`` / ``model.predict(frame)`` / ``producer.send`` loop.
* ``gating``: offline replay of a footage file at the camera's detection rate through tracking
  and the alert rules, with motion gating off and on: detector calls and the alerts of each.
* ``alerts``: capture-to-Redis latency of alert events with the detector at ``--alert-load`` of
  its capacity (cameras -> ingest -> Kafka -> alert service with snapshots -> Redis).

Cameras: real IP cameras send 25-30 frames/s; the clips are 10-17 frames/s, too slow for four of
them to saturate the detector. ``--camera-fps`` (default 30) serves re-timed copies: every frame
of the clip once, at that rate (encoded once with GStreamer's x264 and cached).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import logging
import os
import platform
import shutil
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.cpu_share import CpuShare

log = logging.getLogger(__name__)

CAMERA_FILES = (
    "one-by-one-person-detection.mp4",  # 768x432
    "people-detection.mp4",  # 480x270
    "bottle-detection.mp4",  # 640x360
    "classroom.mp4",  # 480x270
    "person-bicycle-car-detection.mp4",
    "face-demographics-walking.mp4",
    "car-detection.mp4",  # 768x432
    "one-by-one-person-detection.mp4",
)
IOU_MIN = 0.9
CONF_TOL = 0.05


# -- detections matching -------------------------------------------------------------------------


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def match_detections(
    ref: Sequence,
    test: Sequence,
    conf_thres: float,
    iou_min: float = IOU_MIN,
    tol: float = CONF_TOL,
) -> dict[str, Any]:
    """Compare two detection lists of one frame (objects with class_id, confidence, box).

    Greedy by reference confidence: a test detection of the same class with IoU >= ``iou_min``
    matches; a match whose confidences differ by more than ``tol`` is a failure. Unmatched
    detections count as failures unless their confidence is within ``tol`` of ``conf_thres``
    (a box at 0.26 on one side and 0.24 on the other is the same answer at the threshold).
    """
    used: set[int] = set()
    out = {"ref": len(ref), "test": len(test), "matched": 0, "missing": 0, "extra": 0}
    out.update({"borderline": 0, "conf_fail": 0, "min_iou": 1.0, "max_conf_diff": 0.0})
    for r in sorted(ref, key=lambda d: -d.confidence):
        best, best_iou = -1, 0.0
        for j, t in enumerate(test):
            if j in used or t.class_id != r.class_id:
                continue
            iou = box_iou(r.box, t.box)
            if iou > best_iou:
                best, best_iou = j, iou
        if best >= 0 and best_iou >= iou_min:
            used.add(best)
            out["matched"] += 1
            diff = abs(test[best].confidence - r.confidence)
            out["min_iou"] = min(out["min_iou"], best_iou)
            out["max_conf_diff"] = max(out["max_conf_diff"], diff)
            out["conf_fail"] += diff > tol
        elif r.confidence < conf_thres + tol:
            out["borderline"] += 1
        else:
            out["missing"] += 1
    for j, t in enumerate(test):
        if j not in used:
            if t.confidence < conf_thres + tol:
                out["borderline"] += 1
            else:
                out["extra"] += 1
    return out


def merge_matches(stats: list[dict[str, Any]]) -> dict[str, Any]:
    out = {k: sum(s[k] for s in stats) for k in ("ref", "test", "matched", "missing", "extra")}
    out["borderline"] = sum(s["borderline"] for s in stats)
    out["conf_fail"] = sum(s["conf_fail"] for s in stats)
    out["min_iou"] = round(min((s["min_iou"] for s in stats), default=1.0), 4)
    out["max_conf_diff"] = round(max((s["max_conf_diff"] for s in stats), default=0.0), 4)
    out["ok"] = out["missing"] == 0 and out["extra"] == 0 and out["conf_fail"] == 0
    return out


# -- footage -------------------------------------------------------------------------------------


def sample_frames(path: str | Path, count: int) -> list[np.ndarray]:
    """``count`` frames spread over the whole file."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) or count
    want = {int(i * total / count) for i in range(count)}
    frames, i = [], 0
    while len(frames) < len(want):
        ok, frame = cap.read()
        if not ok:
            break
        if i in want:
            frames.append(frame)
        i += 1
    cap.release()
    return frames


def replay_frames(path: str | Path, fps: float) -> list[tuple[float, np.ndarray]]:
    """(seconds since start, frame) of a file as a camera reader at ``fps`` would take them."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    native = cap.get(cv2.CAP_PROP_FPS) or 25.0
    out, i, next_due = [], 0, 0.0
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        t = i / native
        if t + 1e-9 >= next_due:
            out.append((t, frame))
            next_due += 1.0 / fps
        i += 1
    cap.release()
    return out


def retimed(path: Path, fps: float, cache: Path) -> Path:
    """A copy of ``path`` that plays every frame once at ``fps`` (H.264 4:2:0, cached).

    4:2:0 like the footage and like every IP camera: left to itself, x264enc takes the BGR
    frames as 4:4:4 (High 4:4:4 profile), which decodes and converts about twice as slowly.
    """
    import cv2

    cap = cv2.VideoCapture(str(path))
    native = cap.get(cv2.CAP_PROP_FPS)
    if native and abs(native - fps) < 0.5:
        return path
    out = cache / f"{path.stem}-{fps:g}fps-420.mp4"
    if out.is_file() and out.stat().st_mtime >= path.stat().st_mtime:
        return out
    gst = shutil.which("gst-launch-1.0")
    if gst is None:
        log.warning("gst-launch-1.0 not found: serving %s at its own rate", path.name)
        return path
    out.parent.mkdir(parents=True, exist_ok=True)
    w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
    tmp = out.with_suffix(f".tmp{os.getpid()}.mp4")
    cmd = [gst, "-q", "fdsrc", "fd=0", "!", "rawvideoparse", f"width={w}", f"height={h}"]
    cmd += ["format=bgr", f"framerate={round(fps * 1000)}/1000", "!", "videoconvert", "!"]
    cmd += ["video/x-raw,format=I420", "!"]
    cmd += ["x264enc", "speed-preset=veryfast", f"key-int-max={round(2 * fps)}", "tune=zerolatency"]
    cmd += ["!", "h264parse", "!", "mp4mux", "!", "filesink", f"location={tmp}"]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE)
    assert proc.stdin is not None
    try:
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            proc.stdin.write(np.ascontiguousarray(frame).tobytes())
    finally:
        proc.stdin.close()
        rc = proc.wait()
        cap.release()
    if rc != 0 or not tmp.is_file():
        tmp.unlink(missing_ok=True)
        log.warning("re-timing %s failed (gst-launch exit %s): serving it as it is", path, rc)
        return path
    tmp.replace(out)
    return out


# -- process figures -----------------------------------------------------------------------------


def _cpu_has_bf16() -> bool:
    try:
        import openvino as ov

        return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    except Exception:  # no OpenVINO or no CPU plugin: nothing to show
        return False


def _round(v: float | None, digits: int = 1) -> float | None:
    return None if v is None else round(v, digits)


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return 0.0


def percentile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    return float(np.percentile(np.asarray(values, dtype=float), q))


def machine() -> dict[str, Any]:
    import torch

    cpu = platform.processor() or ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    info: dict[str, Any] = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "loadavg_start": list(os.getloadavg()),
    }
    for mod in ("ultralytics", "onnxruntime", "openvino", "tensorrt", "cv2"):
        with contextlib.suppress(Exception):
            info[mod] = __import__(mod).__version__
    return info


class AckTimer:
    """Wraps a KafkaProducer: records capture-to-acknowledgement latency of each send."""

    def __init__(self, producer) -> None:
        self.producer = producer
        self.recording = False
        self.latencies: list[float] = []
        self.acked = 0
        self.errors = 0

    def send(self, topic, key=None, value=None, timestamp_ms=None, **kw):
        fut = self.producer.send(topic, key=key, value=value, timestamp_ms=timestamp_ms, **kw)
        captured = (timestamp_ms or time.time() * 1000) / 1000.0
        fut.add_callback(self._ok, captured)
        fut.add_errback(self._failed)
        return fut

    def _ok(self, captured: float, _meta) -> None:
        if self.recording:
            self.acked += 1
            self.latencies.append(time.time() - captured)

    def _failed(self, _exc) -> None:
        self.errors += 1

    def start(self) -> None:
        self.latencies, self.acked, self.recording = [], 0, True

    def stop(self) -> None:
        self.recording = False

    def flush(self, timeout=None):
        return self.producer.flush(timeout=timeout)

    def close(self, timeout=None):
        return self.producer.close(timeout=timeout)


# -- sections ------------------------------------------------------------------------------------


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        from pipeline.assets import footage
        from pipeline.config import VigilConfig, load_config

        self.args = args
        base = load_config(args.config) if args.config else VigilConfig()
        self.base = base
        det = base.detector.model_dump()
        det.update(imgsz=args.imgsz)
        if args.weights:
            det["weights"] = args.weights
        if args.device:
            det["device"] = args.device
        self.det_dict = det
        self.files = [footage(name) for name in CAMERA_FILES]
        for f in self.files:
            if not f.is_file():
                raise FileNotFoundError(
                    f"{f} missing: set VIGIL_ASSETS to the shared assets folder"
                )
        self.result: dict[str, Any] = {
            "command": "vigil bench " + " ".join(sys.argv[2:] if len(sys.argv) > 2 else []),
            "machine": machine(),
            "settings": {
                "weights": det["weights"],
                "imgsz": args.imgsz,
                "conf": det["conf"],
                "iou": det["iou"],
                "classes": det["classes"],
                "camera_fps": args.camera_fps,
                "duration_s": args.duration,
                "warmup_s": args.warmup,
            },
        }
        self.tag = uuid.uuid4().hex[:6]
        self._pools: dict[int, list[np.ndarray]] = {}
        from detectors import host_threads

        self._stock_threads = host_threads.current()  # what the naive baseline runs with

    # -- helpers --
    def detector(self, backend: str, **over):
        from detectors.engine import Detector
        from pipeline.config import DetectorConfig

        d = dict(self.det_dict, backend=backend)
        if backend == "openvino-bf16":  # cpu_precision: bf16 (not the default)
            d.update(backend="openvino", cpu_precision="bf16")
        d.update(over)
        return Detector(DetectorConfig.model_validate(d))

    def threads_for(self, det=None) -> None:
        """Host thread pools as a worker running ``det`` sets them; stock ones for None (the
        naive baseline: ultralytics' defaults, untouched)."""
        from detectors import host_threads

        host_threads.restore(self._stock_threads)
        if det is not None:
            host_threads.apply(
                self.det_dict.get("host_threads", "auto"), det.backend_name, det.device
            )

    def emit(self, text: str = "") -> None:
        print(text, flush=True)

    def backends(self) -> list[str]:
        from detectors.backends import available_backends
        from detectors.loading import select_device

        have = available_backends(select_device(self.det_dict["device"]))
        if "openvino" in have and _cpu_has_bf16():
            have.insert(have.index("openvino") + 1, "openvino-bf16")  # shown, never auto-chosen
        if self.args.backends:
            want = [b.strip() for b in self.args.backends.split(",") if b.strip()]
            return [b for b in want if b in have or b == "ultralytics"]
        return have

    # -- accuracy --
    def accuracy(self) -> None:
        from detectors.loading import load_model, select_device
        from detectors.types import Detection

        device = select_device(self.det_dict["device"])
        frames = [
            f for path in self.files[:7] for f in sample_frames(path, self.args.accuracy_frames)
        ]
        ref_model = load_model(self.det_dict["weights"], device)
        ref_det = self.detector("torch", tracker="none")  # for names and class ids
        ref = []
        for frame in frames:
            r = ref_model.predict(
                frame,
                imgsz=self.args.imgsz,
                conf=self.det_dict["conf"],
                iou=self.det_dict["iou"],
                classes=ref_det.classes,
                device=device,
                verbose=False,
            )[0]
            b = r.boxes
            ref.append(
                [
                    Detection(int(c), "", float(p), tuple(float(v) for v in xy))
                    for xy, p, c in zip(
                        b.xyxyn.cpu().numpy(),
                        b.conf.cpu().numpy(),
                        b.cls.cpu().numpy(),
                        strict=True,
                    )
                ]
            )
        out = {}
        self.emit(f"\n## Accuracy vs ultralytics predict (PyTorch), {len(frames)} footage frames")
        self.emit(
            "| backend | reference boxes | matched | missing | extra | borderline | min IoU | max conf diff | ok |"
        )
        self.emit("|---|---|---|---|---|---|---|---|---|")
        for name in self.backends():
            det = self.detector(name, tracker="none")
            got: list = []
            for k in range(0, len(frames), 4):  # mixed cameras in one batch, like the worker
                got += det.detect(frames[k : k + 4])
            stats = merge_matches(
                [
                    match_detections(r, g, self.det_dict["conf"])
                    for r, g in zip(ref, got, strict=True)
                ]
            )
            out[name] = stats
            self.emit(
                f"| {name} | {stats['ref']} | {stats['matched']} | {stats['missing']} | "
                f"{stats['extra']} | {stats['borderline']} | {stats['min_iou']} | "
                f"{stats['max_conf_diff']} | {'yes' if stats['ok'] else 'NO'} |"
            )
        self.result["accuracy"] = out

    # -- detector only --
    def pool(self, n: int) -> list[np.ndarray]:
        """Frames of the first ``n`` camera files, interleaved (a batch mixes the cameras)."""
        key = min(n, len(self.files))
        if key not in self._pools:
            per = [sample_frames(p, 8) for p in self.files[:key]]
            self._pools[key] = [per[i % key][i // key % 8] for i in range(8 * key)]
        return self._pools[key]

    @staticmethod
    def time_detector(det, pool: list[np.ndarray], bs: int, seconds: float) -> dict[str, Any]:
        """Detector-only throughput: batches of ``bs`` frames of ``pool`` for ``seconds``."""
        batches = [pool[(k * bs + j) % len(pool)] for k in range(len(pool)) for j in range(bs)]
        batches = [batches[k : k + bs] for k in range(0, len(batches), bs)]
        for b in batches[:2]:
            det.detect(b)
        # the detector at its best: with a background backend the next batch runs while NMS
        # of the previous one does (submit/collect, as the worker does)
        overlap = getattr(det, "batched", False) and bs <= det.config.max_batch
        pending = None
        n = calls = 0
        share = CpuShare()
        c0, t0 = time.process_time(), time.perf_counter()
        while True:
            b = batches[calls % len(batches)]
            if overlap:
                job = det.submit(b)
                if pending is not None:
                    det.collect(pending)
                pending = job
            else:
                det.detect(b)
            n += len(b)
            calls += 1
            dt = time.perf_counter() - t0
            if dt >= seconds and calls >= 3:
                break
        if pending is not None:
            det.collect(pending)
            dt = time.perf_counter() - t0
        cpu = time.process_time() - c0
        return {
            "batch": bs,
            "fps": round(n / dt, 2),
            "ms_per_batch": round(1000 * dt / calls, 1),
            "cpu_ms_per_frame": round(1000 * cpu / n, 1),
            "cores_used": share.stop(),
        }

    @staticmethod
    def time_model(det, pool: list[np.ndarray], bs: int, seconds: float) -> float | None:
        """The ceiling: the backend's forward pass alone on an already prepared batch (no
        letterbox, no upload, no NMS), frames/s; None for the ultralytics backend."""
        import torch

        if det.backend is None:
            return None
        boxer = det._boxers[0]
        canvas, _ = boxer.letterbox(pool[:bs] if len(pool) >= bs else (pool * bs)[:bs])
        x = det.backend.prepare(canvas, boxer)
        if isinstance(x, np.ndarray):
            x = x.copy()  # the letterboxer's buffer is reused by the next detect()
        cuda = det.device.startswith("cuda")
        for _ in range(3):
            det.backend.run(x)
        if cuda:
            torch.cuda.synchronize()
        n = 0
        t0 = time.perf_counter()
        while True:
            det.backend.run(x)
            n += 1
            if n % 5 == 0:
                if cuda:
                    torch.cuda.synchronize()
                if time.perf_counter() - t0 >= seconds:
                    break
        return round(n * bs / (time.perf_counter() - t0), 2)

    def detector_only(self) -> None:
        pool = self.pool(4)
        rows = []
        self.emit("\n## Detector only (frames in memory; letterbox + inference + NMS)")
        self.emit(
            "| backend | batch | frames/s | ms/batch | CPU ms/frame | "
            "model-only frames/s (ceiling) | fraction of ceiling |"
        )
        self.emit("|---|---|---|---|---|---|---|")
        for name in self.backends():
            det = self.detector(name, tracker="none", max_batch=max(self.args.batch_sizes))
            self.threads_for(det)
            for bs in self.args.batch_sizes:
                row = {
                    "backend": name,
                    **self.time_detector(det, pool, bs, self.args.detector_seconds),
                }
                ceiling = self.time_model(det, pool, bs, self.args.detector_seconds)
                if ceiling:
                    row["model_only_fps"] = ceiling
                    row["fraction_of_ceiling"] = round(row["fps"] / ceiling, 3)
                rows.append(row)
                self.emit(
                    f"| {name} | {bs} | {row['fps']} | {row['ms_per_batch']} | "
                    f"{row['cpu_ms_per_frame']} | {row.get('model_only_fps', '-')} | "
                    f"{row.get('fraction_of_ceiling', '-')} |"
                )
            del det
            gc.collect()
        self.result["detector"] = rows

    # -- pipeline and naive --
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
        from pipeline.config import parse_config

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
        return parse_config(data, "bench")

    def pipeline_run(self, det, n: int, gating: bool, seconds: float) -> dict[str, Any]:
        from pipeline.camera import CameraSpec
        from pipeline.camera_sim import CameraSim
        from pipeline.frame_store import FrameStore
        from pipeline.kafka_io import ensure_topics, make_producer
        from pipeline.worker import IngestWorker

        cfg = self._config(gating)
        ensure_topics(cfg.kafka)
        sources = self._sources(n)
        self.threads_for(det)  # as IngestWorker.start() would
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
                r0 = {cid: _reader_counts(r) for cid, r in worker._readers.items()}
                p0 = dict(worker._processed)
                calls0, stale0 = worker.detector_frames, worker.stale_frames
                from pipeline import metrics

                b0 = _hist_state(metrics.BATCH_SIZE)
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
                b1 = _hist_state(metrics.BATCH_SIZE)
                r1 = {cid: _reader_counts(r) for cid, r in worker._readers.items()}
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
            "latency_p50_ms": _ms(percentile(lat, 50)),
            "latency_p99_ms": _ms(percentile(lat, 99)),
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
        import cv2

        from detectors.loading import load_model, select_device
        from pipeline.camera_sim import CameraSim
        from pipeline.kafka_io import ensure_topics, make_producer

        cfg = self._config(False)
        ensure_topics(cfg.kafka)
        self.threads_for(None)
        device = select_device(self.det_dict["device"])
        from detectors.engine import resolve_classes

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
            "latency_p50_ms": _ms(percentile(timer.latencies, 50)),
            "latency_p99_ms": _ms(percentile(timer.latencies, 99)),
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
                f"{r.get('mean_batch', '-')} | {cpu} | {mem} | {_cores(r)} |"
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

    # -- alert latency under load --
    def alert_latency(self) -> None:
        """Capture-to-Redis latency of alert events while the detector runs at
        ``--alert-load`` (default 80 %) of its capacity: the whole chain, snapshots included."""
        from alerts.config import parse_alerts_config
        from alerts.service import AlertService
        from alerts.store import AlertStore
        from pipeline.camera import CameraSpec
        from pipeline.camera_sim import CameraSim
        from pipeline.frame_store import FrameStore
        from pipeline.kafka_io import ensure_topics, make_producer
        from pipeline.worker import IngestWorker

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
            "latency_p50_ms": _round(percentile(latencies, 50)),
            "latency_p99_ms": _round(percentile(latencies, 99)),
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

    # -- gating --
    def gating(self) -> None:
        from pipeline.assets import footage

        cfg = self.base
        camera = self.args.gating_camera
        spec = next((c for c in cfg.cameras if c.id == camera), None)
        fps = self.args.gating_fps or (spec.fps if spec and spec.fps else cfg.ingest.default_fps)
        mcfg = cfg.ingest.motion
        if spec is not None and spec.motion is not None:
            mcfg = spec.motion.apply(mcfg)
        mcfg = mcfg.model_copy(update={"enabled": True})
        det = self.detector(self.args.pipeline_backend)
        path = footage(self.args.gating_file)
        frames = replay_frames(path, fps)
        runs = gating_replay(det, frames, cfg.alerts or {}, camera, fps, mcfg)
        diff = compare_alerts(
            runs["off"]["alerts"], runs["on"]["alerts"], self.args.alert_tolerance
        )
        out = {
            "file": path.name,
            "camera": camera,
            "fps": fps,
            "frames": len(frames),
            "motion": mcfg.model_dump(),
            "detector_calls_off": runs["off"]["detector_calls"],
            "detector_calls_on": runs["on"]["detector_calls"],
            "call_reduction": round(
                runs["off"]["detector_calls"] / max(runs["on"]["detector_calls"], 1), 2
            ),
            "alerts_off": runs["off"]["alerts"],
            "alerts_on": runs["on"]["alerts"],
            **diff,
        }
        self.result["gating"] = out
        self.emit(
            f"\n## Motion gating, offline replay of {path.name} at {fps:g} fps ({len(frames)} frames, rules of {self.args.config or 'the default config'})"
        )
        self.emit(
            f"detector calls: off {out['detector_calls_off']}, on {out['detector_calls_on']} "
            f"({out['call_reduction']}x fewer); alerts started: off {diff['started_off']}, on {diff['started_on']}, "
            f"matched {diff['matched']}, missed {len(diff['missed'])}, extra {len(diff['extra'])}, "
            f"largest start shift {diff['max_start_shift_s']} s; end shifts (on - off) "
            f"{diff['end_shifts_s']} s, ended in one run only {diff['ended_in_one_run_only']}"
        )

    # -- all --
    def run(self) -> dict[str, Any]:
        sections = [
            s
            for s in ("accuracy", "detector", "pipeline", "gating", "alerts")
            if s not in self.args.skip
        ]
        for s in sections:
            t0 = time.monotonic()
            {
                "accuracy": self.accuracy,
                "detector": self.detector_only,
                "pipeline": self.pipeline,
                "gating": self.gating,
                "alerts": self.alert_latency,
            }[s]()
            log.info("bench section %s took %.0f s", s, time.monotonic() - t0)
            gc.collect()
        self.result["ratios"] = ratios(self.result)
        self.result["machine"]["loadavg_end"] = list(os.getloadavg())
        if self.result["ratios"]:
            self.emit("\n## Ratios (same run)")
            for k, v in self.result["ratios"].items():
                self.emit(f"- {k}: {v}")
        return self.result


def gating_replay(
    det, frames: list[tuple[float, np.ndarray]], rules: dict, camera: str, fps: float, motion
) -> dict[str, dict[str, Any]]:
    """Replay ``frames`` (from :func:`replay_frames`) through tracking and the alert rules, with
    motion gating off and on (``motion``: a MotionConfig): detector calls and alerts of each.

    The detector runs once per frame (its untracked output is the same in both runs); each run
    has its own trackers and rule engine and, with gating, re-feeds the last detector output to
    the tracker for skipped frames exactly as the ingest worker does.
    """
    from alerts.engine import RuleEngine
    from detectors.tracking import StreamTrackers
    from pipeline.capture import Frame
    from pipeline.messages import detection_message
    from pipeline.motion import MotionDetector

    raw: list[np.ndarray] = []
    for k in range(0, len(frames), 4):
        raw += det.infer([f for _, f in frames[k : k + 4]])
    epoch = 1_700_000_000_000
    runs: dict[str, Any] = {}
    for mode in ("off", "on"):
        engine = RuleEngine(rules)
        trackers = (
            StreamTrackers(det.config.tracker, det.config.track_buffer_s) if det.trackers else None
        )
        gate = MotionDetector(motion) if mode == "on" else None
        last = np.zeros((0, 6), np.float32)  # untracked boxes of the last detector run
        calls = 0
        alerts = []
        messages = []
        for i, ((t, image), boxes) in enumerate(zip(frames, raw, strict=True)):
            ts = epoch / 1000 + t
            decision = None
            if gate is not None:
                h, w = image.shape[:2]
                objects = (last[:, :4] / np.array([w, h, w, h], np.float32)).tolist()
                decision = gate.check(image, ts, [tuple(b) for b in objects])
            if decision is None or decision.detect:
                calls += 1
                last = boxes
            # skipped frames re-feed the last boxes to the tracker, as the worker does
            dets = det.finish(image, last, camera if trackers else None, fps, trackers)
            frame = Frame(camera, i, epoch, ts, image)
            msg = detection_message(frame, dets, det.name, det.version, "bench", 0.0)
            if decision is not None:
                msg["motion"] = decision.motion
                msg["carried_over"] = not decision.detect
            messages.append(msg)
            alerts += engine.process(msg)
        runs[mode] = {
            "detector_calls": calls,
            "alerts": [_alert_row(a, epoch) for a in alerts],
            "messages": messages,
        }
    return runs


def _cores(r: dict[str, Any]) -> str:
    """Where the cores went during a run (see pipeline.cpu_share)."""
    c = r.get("cores_used")
    if not c:
        return "-"
    parts = [str(c.get(k, "-")) for k in ("worker", "cameras", "kafka", "others", "idle")]
    if r.get("decode_cores") is not None:
        parts[0] += f" (decode {r['decode_cores']:.2f})"
    text = "/".join(parts)
    runs = (r.get("detector_only_adjacent") or {}).get("runs") or []
    if runs and all(x.get("cores_used") for x in runs):
        worker = statistics.mean(x["cores_used"]["worker"] for x in runs)
        idle = statistics.mean(x["cores_used"]["idle"] for x in runs)
        text += f" ({worker:.2f}/{idle:.2f})"
    return text


def _reader_counts(r) -> tuple[int, int, float]:
    return r.stats.frames_decoded, r.stats.frames_dropped, r.stats.decode_cpu_s


def _hist_state(hist) -> tuple[float, float]:
    """(sum, count) of an unlabelled prometheus Histogram."""
    total = count = 0.0
    for metric in hist.collect():
        for s in metric.samples:
            if s.name.endswith("_sum"):
                total = s.value
            elif s.name.endswith("_count"):
                count = s.value
    return total, count


def _ms(v: float | None) -> float | None:
    return None if v is None else round(v * 1000, 1)


def _alert_row(a, epoch: int) -> dict[str, Any]:
    base = epoch / 1000
    return {
        "rule": a.rule_id,
        "status": a.status,
        "track_id": a.track_id,
        "started_s": round(a.started_at - base, 2),
        "ended_s": None if a.ended_at is None else round(a.ended_at - base, 2),
    }


def compare_alerts(off: list[dict], on: list[dict], tolerance_s: float) -> dict[str, Any]:
    """Match the 'started' alerts of two runs by rule and start time (within ``tolerance_s``)."""
    a = [x for x in off if x["status"] == "started"]
    b = [x for x in on if x["status"] == "started"]
    used: set[int] = set()
    missed, shifts, pairs = [], [], []
    for x in a:
        best, gap = -1, tolerance_s + 1e-9
        for j, y in enumerate(b):
            if j in used or y["rule"] != x["rule"]:
                continue
            d = abs(y["started_s"] - x["started_s"])
            if d <= gap:
                best, gap = j, d
        if best < 0:
            missed.append(x)
        else:
            used.add(best)
            shifts.append(gap)
            pairs.append((x, b[best]))
    extra = [y for j, y in enumerate(b) if j not in used]
    # how long each matched alert lasted in both runs (an 'ended' carries its start time)
    ends_a = {(x["rule"], x["started_s"]): x["ended_s"] for x in off if x["status"] == "ended"}
    ends_b = {(y["rule"], y["started_s"]): y["ended_s"] for y in on if y["status"] == "ended"}
    end_shifts, end_missing = [], 0
    for x in a:
        pair = next((y for y in pairs if y[0] is x), None)
        if pair is None:
            continue
        ea, eb = (
            ends_a.get((x["rule"], x["started_s"])),
            ends_b.get((pair[1]["rule"], pair[1]["started_s"])),
        )
        if ea is None and eb is None:
            continue
        if ea is None or eb is None:
            end_missing += 1
        else:
            end_shifts.append(eb - ea)
    return {
        "started_off": len(a),
        "started_on": len(b),
        "matched": len(shifts),
        "missed": missed,
        "extra": extra,
        "max_start_shift_s": round(max(shifts), 2) if shifts else 0.0,
        "end_shifts_s": [round(v, 2) for v in end_shifts],
        "ended_in_one_run_only": end_missing,
    }


def _median_rows(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """One row per key; repeated runs (``--pairs``) become the median of their figures."""
    if len(rows) == 1:
        return rows[0]
    out = dict(rows[len(rows) // 2])
    for key in ("fps", "cpu_ms_per_frame"):
        if all(r.get(key) is not None for r in rows):
            out[key] = statistics.median(r[key] for r in rows)
    if all(r.get("detector_only_adjacent") for r in rows):
        out["detector_only_adjacent"] = {
            key: statistics.median(r["detector_only_adjacent"][key] for r in rows)
            for key in ("fps", "cpu_ms_per_frame")
        }
    return out


def ratios(res: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    grouped: dict[tuple, list] = {}
    for r in res.get("pipeline", []):
        grouped.setdefault((r["cameras"], r["gating"]), []).append(r)
    pipe = {k: _median_rows(v) for k, v in grouped.items()}
    ngrouped: dict[tuple[int, str], list] = {}
    for r in res.get("naive", []):
        ngrouped.setdefault((r["cameras"], r.get("allocator", "stock")), []).append(r)
    for n in sorted({n for n, _ in ngrouped}):
        p = pipe.get((n, False))
        if not p:
            continue
        kinds = {a: _median_rows(v) for (m, a), v in ngrouped.items() if m == n}
        for allocator, nr in kinds.items():
            if nr["fps"]:
                out[f"pipeline_vs_naive_{n}cams_{allocator}_malloc"] = round(
                    p["fps"] / nr["fps"], 2
                )
        # the target is judged against the faster naive variant
        allocator, nr = max(kinds.items(), key=lambda kv: kv[1]["fps"])
        if nr["fps"]:
            out[f"pipeline_vs_naive_{n}cams"] = round(p["fps"] / nr["fps"], 2)
            out[f"pipeline_vs_naive_{n}cams_baseline"] = f"naive, {allocator} malloc"
            if len(ngrouped[(n, allocator)]) > 1:
                out[f"pipeline_vs_naive_{n}cams_each_pair"] = [
                    round(a["fps"] / b["fps"], 2)
                    for a, b in zip(grouped[(n, False)], ngrouped[(n, allocator)], strict=False)
                ]
        if p.get("cpu_ms_per_frame") and nr.get("cpu_ms_per_frame"):
            out[f"naive_vs_pipeline_cpu_per_frame_{n}cams"] = round(
                nr["cpu_ms_per_frame"] / p["cpu_ms_per_frame"], 2
            )
    backend = res.get("pipeline_backend")
    det = [r for r in res.get("detector", []) if r["backend"] == backend]
    if det:
        best = max(det, key=lambda r: r["fps"])
        for (n, gating), p in pipe.items():
            if gating:
                continue
            same = next(
                (r for r in det if r["batch"] == min(n, max(d["batch"] for d in det))), best
            )
            out[f"pipeline_vs_detector_only_{n}cams"] = round(p["fps"] / same["fps"], 3)
            out[f"pipeline_vs_best_detector_only_{n}cams"] = round(p["fps"] / best["fps"], 3)
    for (n, gating), p in pipe.items():
        adj = p.get("detector_only_adjacent")
        if gating or not adj:
            continue
        # only meaningful when the cameras offer more frames than the pipeline processes
        p_sat = p.get("offered_fps", 0) > 1.1 * p["fps"]
        out[f"pipeline_saturated_{n}cams"] = p_sat
        out[f"pipeline_vs_detector_only_adjacent_{n}cams"] = round(p["fps"] / adj["fps"], 3)
        out[f"detector_only_vs_pipeline_cpu_per_frame_{n}cams"] = round(
            adj["cpu_ms_per_frame"] / p["cpu_ms_per_frame"], 3
        )
    g = res.get("gating")
    if g:
        out["gating_call_reduction"] = g["call_reduction"]
        out["gating_missed_alerts"] = len(g["missed"])
    soak = res.get("soak")
    if soak:
        rss = soak["rss_mb"]
        out["soak_rss_growth_pct"] = round(100 * (rss["end"] - rss["start"]) / rss["start"], 1)
    return out


# -- CLI -----------------------------------------------------------------------------------------


def _allocators(text: str) -> list[str]:
    kinds = [a.strip() for a in text.split(",") if a.strip()]
    bad = [a for a in kinds if a not in ("stock", "tuned")]
    if bad or not kinds:
        raise argparse.ArgumentTypeError(f"{text!r}: expected stock, tuned or stock,tuned")
    return kinds


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench",
        help="measure detector, pipeline and naive baseline side by side (BENCHMARKS.md)",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    p.add_argument(
        "-c",
        "--config",
        default=None,
        help="take detector settings, motion settings and alert rules from this config (default examples/demo.yaml when present)",
    )
    p.add_argument("--out", default=None, help="write the figures as JSON here")
    p.add_argument("--weights", default=None)
    p.add_argument("--imgsz", type=int, default=640)
    p.add_argument("--device", default=None, help="auto, cpu, cuda... (default: the config's)")
    p.add_argument("--bootstrap", default=None, help="Kafka bootstrap servers")
    p.add_argument("--backends", default=None, help="comma list (default: all available here)")
    p.add_argument("--pipeline-backend", default="auto", help="backend of the pipeline runs")
    p.add_argument("--batch-sizes", type=_ints, default=[1, 2, 4, 8])
    p.add_argument("--cameras", type=_ints, default=[1, 2, 4, 8], help="pipeline camera counts")
    p.add_argument(
        "--naive-cameras", type=_ints, default=[4], help="camera counts with a naive run"
    )
    p.add_argument(
        "--naive-allocators",
        type=_allocators,
        default=["stock", "tuned"],
        help="naive runs with glibc malloc as it is (stock) and with its mmap/trim thresholds "
        "raised (tuned); the target ratio uses the faster",
    )
    p.add_argument(
        "--pairs", type=int, default=1, help="pipeline/naive runs alternated this many times"
    )
    p.add_argument(
        "--gating-cameras", type=_ints, default=[4], help="camera counts also run with gating"
    )
    p.add_argument("--camera-fps", type=float, default=30.0)
    p.add_argument("--duration", type=float, default=20.0, help="seconds measured per pipeline run")
    p.add_argument("--warmup", type=float, default=5.0)
    p.add_argument("--detector-seconds", type=float, default=4.0)
    p.add_argument(
        "--adjacent-seconds",
        type=float,
        default=3.0,
        help="detector-only run right before and after each pipeline run (same detector)",
    )
    p.add_argument("--accuracy-frames", type=int, default=6, help="frames per footage file")
    p.add_argument("--soak", type=float, default=0.0, help="also run 4 cameras this long (RSS)")
    p.add_argument("--rss-interval", type=float, default=1.0)
    p.add_argument("--frame-store", action="store_true", help="store JPEG frames in Redis too")
    p.add_argument("--gating-file", default="one-by-one-person-detection.mp4")
    p.add_argument("--gating-camera", default="office", help="camera id whose rules apply")
    p.add_argument("--gating-fps", type=float, default=None, help="default: the camera's fps")
    p.add_argument("--alert-tolerance", type=float, default=1.0, help="seconds")
    p.add_argument("--alert-cameras", type=int, default=4, help="cameras of the alerts section")
    p.add_argument(
        "--alert-load", type=float, default=0.8, help="detector load of the alerts section"
    )
    p.add_argument("--alert-seconds", type=float, default=60.0)
    p.add_argument(
        "--skip", default="", help="comma list of accuracy,detector,pipeline,gating,alerts"
    )
    p.set_defaults(func=cmd_bench)


NAIVE_RESULT = "naive-result: "
# imported, not run as __main__: the child then shows the same warnings as the bench itself
NAIVE_CHILD = "import sys; from pipeline.bench import naive_child; sys.exit(naive_child())"
# glibc malloc keeps freed memory up to these sizes instead of unmapping it (32 MiB is glibc's
# largest mmap threshold on 64-bit)
MALLOC_TUNED = {"MALLOC_MMAP_THRESHOLD_": str(32 << 20), "MALLOC_TRIM_THRESHOLD_": str(256 << 20)}


def naive_child() -> int:
    """One naive run in a child process (:data:`NAIVE_CHILD`), the job as JSON on stdin."""
    job = json.loads(sys.stdin.read())
    args = argparse.Namespace(**job["args"])
    args.skip = set(args.skip)
    logging.basicConfig(level=logging.WARNING)
    bench = Bench(args)
    bench.tag = job["tag"]  # the parent's topics
    result = bench.naive_loop(job["cameras"], job["seconds"])
    print(NAIVE_RESULT + json.dumps(result, default=str), flush=True)
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from pipeline.assets import REPO_ROOT

    if args.config is None:
        demo = REPO_ROOT / "examples" / "demo.yaml"
        args.config = str(demo) if demo.is_file() else None
    args.skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    for noisy in (
        "ultralytics",
        "kafka",
        "pipeline.capture",
        "pipeline.camera_sim",
        "pipeline.worker",
    ):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    bench = Bench(args)
    result = bench.run()
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1, default=str) + "\n")
        print(f"\nwrote {args.out}")
    return 0
