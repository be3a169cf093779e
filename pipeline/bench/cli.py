"""``vigil bench`` on the command line, and the naive baseline's child process."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import pipeline.bench
from pipeline.common.assets import REPO_ROOT

# The sections (detectors, Kafka, Redis, the alert service) are imported by the handlers, so
# ``vigil --help`` and ``register`` stay light and a run loads only the sections it measures.


def _allocators(text: str) -> list[str]:
    kinds = [a.strip() for a in text.split(",") if a.strip()]
    bad = [a for a in kinds if a not in ("stock", "tuned")]
    if bad or not kinds:
        raise argparse.ArgumentTypeError(f"{text!r}: expected stock, tuned or stock,tuned")
    return kinds


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def _names(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def package_doc() -> str:
    """What ``vigil bench`` measures: the package's docstring."""

    return pipeline.bench.__doc__ or ""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench",
        help="measure detector, pipeline and naive baseline side by side (BENCHMARKS.md)",
        description=package_doc().split("\n\n")[0],
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
    p.add_argument(
        "--precisions",
        type=_names,
        default=[],
        help="OpenVINO precisions side by side, e.g. f32,bf16,int8 (detector-only and a "
        "pipeline run each, with the accuracy gate's mAP figures)",
    )
    p.add_argument(
        "--precision-cameras", type=int, default=4, help="cameras of those runs (0: detector-only)"
    )
    p.add_argument(
        "--int8-images", type=int, default=300, help="calibration images when quantizing"
    )
    p.add_argument("--gate-frames", type=int, default=60, help="held-out frames of the gate")
    p.add_argument(
        "--capacity",
        action="store_true",
        help="the sizing table: cameras at --capacity-fps one worker carries per model and "
        "precision (add --skip accuracy,detector,pipeline,gating,alerts to run only it)",
    )
    p.add_argument(
        "--capacity-models",
        type=_names,
        default=["teacher@640", "teacher@320", "student@320"],
        help="teacher@SIZE (the config's weights) or student@SIZE (--student)",
    )
    p.add_argument("--student", default=None, help="student weights for student@SIZE")
    p.add_argument("--capacity-precisions", type=_names, default=["f32", "int8"])
    p.add_argument("--capacity-fps", type=float, default=5.0)
    p.add_argument(
        "--capacity-gating",
        action="store_true",
        help="the sizing table's runs with motion gating on (the config's ingest.motion)",
    )
    p.add_argument("--capacity-start", type=int, default=2)
    p.add_argument("--capacity-step", type=int, default=2)
    p.add_argument("--capacity-max", type=int, default=40)
    p.set_defaults(func=cmd_bench)


def naive_child() -> int:
    """One naive run in a child process (:data:`NAIVE_CHILD`), the job as JSON on stdin."""
    from pipeline.bench.pipeline_runs import NAIVE_RESULT  # noqa: PLC0415 (Kafka/Redis clients: loaded by the sections that use them)
    from pipeline.bench.runner import Bench  # noqa: PLC0415 (Kafka/Redis clients: loaded by the sections that use them)

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
    from pipeline.bench.runner import Bench  # noqa: PLC0415 (Kafka/Redis clients: loaded by the sections that use them)

    if args.config is None:
        demo = REPO_ROOT / "examples" / "demo.yaml"
        args.config = str(demo) if demo.is_file() else None
    args.skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    for noisy in (
        "ultralytics",
        "kafka",
        "pipeline.ingest.capture",
        "pipeline.camera_sim",
        "pipeline.ingest.worker",
    ):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    bench = Bench(args)
    result = bench.run()
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1, default=str) + "\n")
        print(f"\nwrote {args.out}")
    return 0
