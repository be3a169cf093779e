"""The steps of deploy/gpu/bench_gpu.sh: each writes its figures as one JSON line as soon as it
has them, so a run cut short still leaves what it measured.

    python deploy/gpu/bench_gpu.py --device cuda --out $OUT/bench-gpu.jsonl

Steps (each with a time budget; one that would not fit in what is left is skipped, recorded as
such; one that fails is recorded with its error and the next one runs):

* ``env``: the machine, torch/CUDA, ONNX Runtime's providers.
* ``accuracy``: the torch backend (fp16 on CUDA) against ultralytics ``predict`` (fp32), frame
  by frame, with the tolerances of tests/detectors/test_backends.py (IoU >= 0.9, same class,
  confidence within 0.05).
* ``torch``: detector-only frames/s per batch size (letterbox on the CPU, uint8 upload from
  pinned memory, colour/scale/inference/NMS on the GPU), the forward pass alone on an uploaded
  batch (the ceiling) and the fraction of it the detector reaches.
* ``cuda_graphs``: the same with the network replayed as CUDA graphs
  (:class:`detectors.backends.torch_backend.CudaGraphs`), its accuracy against the reference.
* ``onnxruntime``: the ONNX export in ONNX Runtime with its CUDA provider where the installed
  build has one (else the CPU provider on --device cpu; skipped on CUDA), accuracy included.
* ``decode``: how many frames/s the CPU decodes with one process per core (the footage, H.264),
  and the cameras at --camera-fps that one GPU could carry, decode- or detector-bound. An
  estimate from the two measurements: the pipeline run itself (``vigil bench --capacity``)
  needs Kafka and the camera simulator, which the bare machine lacks.
"""

from __future__ import annotations

import argparse
import gc
import json
import multiprocessing
import os
import platform
import sys
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


class Skip(Exception):
    """A step that cannot run here (the reason is recorded)."""


class Run:
    """Writes one JSON line per record and keeps the clock of the whole run."""

    def __init__(self, out: Path, budget_s: float) -> None:
        self.out = out
        self.t0 = time.monotonic()
        self.budget_s = budget_s
        out.parent.mkdir(parents=True, exist_ok=True)
        self.f = out.open("a")

    def left(self) -> float:
        return self.budget_s - (time.monotonic() - self.t0)

    def write(self, step: str, **fields: Any) -> None:
        rec = {"step": step, "t_s": round(time.monotonic() - self.t0, 1), **fields}
        line = json.dumps(rec, default=str)
        self.f.write(line + "\n")
        self.f.flush()
        os.fsync(self.f.fileno())
        print(line, flush=True)

    def step(self, name: str, needs_s: float, fn: Callable[[], None]) -> None:
        if self.left() < needs_s:
            self.write(name, skipped=f"{self.left():.0f} s left, the step needs ~{needs_s:.0f} s")
            return
        t = time.monotonic()
        try:
            fn()
            self.write(name, done=True, took_s=round(time.monotonic() - t, 1))
        except Skip as e:
            self.write(name, skipped=str(e))
        except Exception as e:
            self.write(
                name,
                error=f"{type(e).__name__}: {e}"[:500],
                where=traceback.format_exc().strip().splitlines()[-3:],
                took_s=round(time.monotonic() - t, 1),
            )
        gc.collect()


def make_bench(a: argparse.Namespace):
    """A :class:`pipeline.bench.runner.Bench` with the defaults of ``vigil bench``."""
    from pipeline.bench.runner import Bench
    from pipeline.cli import build_parser

    argv = ["bench", "--device", a.device, "--imgsz", str(a.imgsz), "--backends", "torch"]
    argv += ["--accuracy-frames", str(a.accuracy_frames)]
    args = build_parser(argv).parse_args(argv)
    demo = ROOT / "examples" / "demo.yaml"
    args.config = str(demo) if demo.is_file() else None
    args.skip = set()
    return Bench(args)


def timed_rows(run: Run, step: str, bench, det, batches: list[int], seconds: float, **tag) -> None:
    pool = bench.pool(4)
    for bs in batches:
        row = {**tag, **bench.time_detector(det, pool, bs, seconds)}
        ceiling = bench.time_model(det, pool, bs, seconds)
        if ceiling:
            row["model_only_fps"] = ceiling
            row["fraction_of_ceiling"] = round(row["fps"] / ceiling, 3)
        run.write(step, **row)


def per_measure(a: argparse.Namespace, run: Run, share: float, variants: int = 1) -> float:
    """Seconds per measurement: --seconds, less when the step's share of what is left is short
    (each batch size is timed twice: the detector and the ceiling)."""
    fit = run.left() * share / max(1, 2 * len(a.batches) * variants) * 0.8
    return max(0.2, min(a.seconds, fit))


def step_env(a, run: Run, state: dict) -> None:
    import cv2
    import torch

    info: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "cv2": cv2.__version__,
        "cores": os.cpu_count(),
    }
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        info.update(gpu=p.name, gpu_memory_gib=round(p.total_memory / 2**30, 1))
    try:
        import onnxruntime as ort

        info.update(onnxruntime=ort.__version__, ort_providers=ort.get_available_providers())
    except ImportError as e:
        info["onnxruntime"] = f"absent ({e})"
    import ultralytics

    info["ultralytics"] = ultralytics.__version__
    bench = make_bench(a)
    state["bench"] = bench
    info["settings"] = bench.result["settings"]
    run.write("env", **info)


def step_accuracy(a, run: Run, state: dict) -> None:
    bench = state["bench"]
    frames = bench.accuracy_frames()
    ref = bench.reference(frames)
    state["frames"], state["ref"] = frames, ref
    det = bench.detector("torch", tracker="none")
    run.write("accuracy", backend="torch", half=det.half, **bench.score(det, frames, ref))


def step_torch(a, run: Run, state: dict) -> None:
    bench = state["bench"]
    det = bench.detector("torch", tracker="none", max_batch=max(a.batches))
    bench.threads_for(det)
    state["torch_det"] = det
    secs = per_measure(a, run, 0.3)
    timed_rows(run, "torch", bench, det, a.batches, secs, backend="torch", half=det.half)


def step_cuda_graphs(a, run: Run, state: dict) -> None:
    import torch

    from detectors.backends.base import as_output
    from detectors.backends.torch_backend import CudaGraphs

    if not a.device.startswith("cuda"):
        raise Skip("needs CUDA")
    bench = state["bench"]
    det = bench.detector("torch", tracker="none", max_batch=max(a.batches))
    bench.threads_for(det)
    eager = det.backend.net
    graphs = CudaGraphs(eager)
    det.backend.net = graphs
    t = time.monotonic()
    pool = bench.pool(4)
    for bs in a.batches:  # capture every shape the timing will see first (as time_detector
        for k in range(len(pool)):  # makes its batches), so no capture lands in a timing
            det.detect([pool[(k * bs + j) % len(pool)] for j in range(bs)])
    torch.cuda.synchronize()
    run.write("cuda_graphs", captured=len(graphs.graphs), capture_s=round(time.monotonic() - t, 1))
    secs = per_measure(a, run, 0.45)
    timed_rows(run, "cuda_graphs", bench, det, a.batches, secs, backend="torch+cuda_graphs")
    if "ref" in state:  # after every capture: a graph must still read the right tensors
        stats = bench.score(det, state["frames"], state["ref"])
        run.write("cuda_graphs", accuracy=stats)
        x = det.backend.prepare(*_canvas(det, pool[:4]))
        with torch.inference_mode():
            diff = (graphs(x).float() - as_output(eager(x)).float()).abs().max().item()
        run.write("cuda_graphs", max_abs_diff_vs_eager=diff)


def _canvas(det, frames):
    boxer = det._boxers[0]
    canvas, _ = boxer.letterbox(frames)
    return canvas, boxer


def step_onnxruntime(a, run: Run, state: dict) -> None:
    import onnxruntime as ort

    have = ort.get_available_providers()
    cuda = a.device.startswith("cuda")
    provider = "CUDAExecutionProvider" if cuda else "CPUExecutionProvider"
    if provider not in have:
        raise Skip(f"{provider} is not in this onnxruntime build ({', '.join(have)})")
    bench = state["bench"]
    t = time.monotonic()
    # exported on the CPU (cached under $VIGIL_CACHE), NMS on the CPU like the CPU backend
    det = bench.detector("onnxruntime", device="cpu", tracker="none", max_batch=max(a.batches))
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    det.backend.session = ort.InferenceSession(
        det.backend.source,
        so,
        providers=list(dict.fromkeys([provider, "CPUExecutionProvider"])),
    )
    got = det.backend.session.get_providers()
    run.write("onnxruntime", providers=got, export_and_load_s=round(time.monotonic() - t, 1))
    if got[0] != provider:  # ONNX Runtime falls back to the CPU when CUDA cannot load
        raise Skip(f"{provider} did not load (session providers {got})")
    if "ref" in state:
        run.write("onnxruntime", accuracy=bench.score(det, state["frames"], state["ref"]))
    bench.threads_for(det)
    secs = per_measure(a, run, 0.5)
    timed_rows(run, "onnxruntime", bench, det, a.batches, secs, backend=f"onnxruntime:{provider}")


def _decode(path: str, seconds: float) -> tuple[int, float]:
    import cv2

    cv2.setNumThreads(1)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        cap = cv2.VideoCapture(path)
        while time.perf_counter() - t0 < seconds:
            ok, _ = cap.read()
            if not ok:
                break
            n += 1
        cap.release()
    return n, time.perf_counter() - t0


def step_decode(a, run: Run, state: dict) -> None:
    bench = state["bench"]
    files = [str(f) for f in bench.files]
    workers = a.decode_workers or os.cpu_count() or 1
    secs = max(0.5, min(a.seconds, run.left() * 0.5))
    # spawned, not forked: this process holds a CUDA context and threads
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as ex:
        parts = list(
            ex.map(_decode, [files[i % len(files)] for i in range(workers)], [secs] * workers)
        )
    fps = sum(n / dt for n, dt in parts)
    rows = [
        json.loads(line)
        for line in run.out.read_text().splitlines()
        if '"fps"' in line and '"batch"' in line
    ]
    best = max(rows, key=lambda r: r["fps"], default=None)
    est: dict[str, Any] = {"decode_fps": round(fps, 1), "decode_processes": workers}
    if best:
        est.update(
            detector_fps=best["fps"],
            detector=f"{best.get('backend')} batch {best.get('batch')}",
            cameras_at_fps=a.camera_fps,
            cameras_estimate=int(min(fps, best["fps"]) // a.camera_fps),
            bound="decode" if fps < best["fps"] else "detector",
            note="estimate from two measurements, not a pipeline run (that needs Kafka)",
        )
    run.write("decode", **est)


STEPS = {
    "env": (step_env, 20),
    "accuracy": (step_accuracy, 20),
    "torch": (step_torch, 30),
    "cuda_graphs": (step_cuda_graphs, 40),
    "onnxruntime": (step_onnxruntime, 40),
    "decode": (step_decode, 10),
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--out", default=os.path.join(os.environ.get("OUT", "."), "bench-gpu.jsonl"))
    ap.add_argument("--imgsz", type=int, default=640)
    ap.add_argument(
        "--batches", type=lambda s: [int(x) for x in s.split(",")], default=[1, 4, 8, 16, 32]
    )
    ap.add_argument("--seconds", type=float, default=4.0, help="per measurement, at most")
    ap.add_argument("--budget-s", type=float, default=480.0, help="the whole run")
    ap.add_argument("--accuracy-frames", type=int, default=4, help="frames per footage file")
    ap.add_argument("--camera-fps", type=float, default=5.0)
    ap.add_argument("--decode-workers", type=int, default=0, help="default: one per core")
    ap.add_argument("--steps", default=",".join(STEPS), help="comma list of " + ", ".join(STEPS))
    a = ap.parse_args(argv)
    run = Run(Path(a.out), a.budget_s)
    state: dict[str, Any] = {}
    wanted = [s.strip() for s in a.steps.split(",") if s.strip()]
    for name in ("env", *[s for s in wanted if s != "env"]):
        fn, needs = STEPS[name]
        run.step(name, needs, lambda fn=fn: fn(a, run, state))
        if name == "env" and "bench" not in state:
            return 1  # nothing else can run
    run.write("end", total_s=round(time.monotonic() - run.t0, 1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
