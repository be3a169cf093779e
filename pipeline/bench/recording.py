"""Recording figures (issue 24, section 5), side by side in one run: ``python -m
pipeline.bench.recording`` (``make bench-recording``; ``make bench`` runs it too).

1. The footage (``--source``) made once into a 1080p main stream and a 640x360 substream (25 fps,
   a keyframe every 2 s, bitrates capped like a camera's; Debian's ffmpeg, cached), served by
   ``vigil camera-sim`` as two paths of one camera.
2. For ``--seconds``: the real Recorder on the main stream (segments indexed in Redis), the ingest
   worker's reader decoding the substream and, in another session, the main stream (every frame,
   one decoder thread, as a worker does), and alerts ending every few seconds, published on a
   Kafka topic of this run and followed by the real alert follower: CPU seconds of each thread
   per second of stream, bytes written, and alert end -> clip fields in the alert's hash.
3. A ``--clip-s`` clip cut from those segments ``--cut-rounds`` times (the console's path).
4. For ``--retention-seconds``: the Recorder again with ``recordings.max_disk_gb`` at
   ``--budget-mb`` MiB and a retention pass every ``--retention-interval`` s: bytes on disk.
5. The detector (the config's weights at ``--imgsz``, ``--backend``): CPU per frame on substream
   and main-stream frames, and motion gating replayed over the substream at ``--fps`` (activity:
   frames with motion, detector calls).
6. Derived: CPU per camera of (decode 640x360 + detect + record 1080p) against (decode 1080p +
   detect), with and without motion gating, and the cameras one core carries at each.

CPU is thread CPU time (``time.thread_time`` on the recorder's and readers' threads, process CPU
of the detector loop), not wall time: the figures hold on a shared machine. Everything uses Redis
keys and a Kafka topic of its own, deleted at the end.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from pipeline.bench.measure import machine
from pipeline.bench.recording_media import (
    MAIN,
    SUB,
    cores_per_camera,
    gated_per_core,
    make_stream,
    parse_sizing,
    probe,
)
from pipeline.bench.recording_runs import Rig, clip_cuts, retention_run, streams_run
from pipeline.common.assets import REPO_ROOT, footage
from pipeline.common.errors import UserError

log = logging.getLogger(__name__)
SECTIONS = ("streams", "clips", "retention", "detect")
# BENCHMARKS.md's sizing table (issue 16: cameras per worker core at 5 fps, motion gating off)
# with the detector-only CPU ms per frame measured in the same session at 320; the 640 row's is
# the 320 figure scaled by this run's 640/320 ratio
SIZING = (
    "teacher 640 f32=4.4@10.7*640/320,teacher 320 f32=12.4@10.7,teacher 320 int8=15.5@7.3,"
    "student 320 f32=10.7@12.9,student 320 int8=17.5@7.3"
)


def _cache() -> Path:
    return Path(os.environ.get("VIGIL_CACHE") or "~/.cache/vigil").expanduser() / "bench"


def _sizing(text: str):
    try:
        return parse_sizing(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m pipeline.bench.recording", description=__doc__.split("\n\n")[0]
    )
    demo = REPO_ROOT / "examples" / "demo.yaml"
    p.add_argument("-c", "--config", default=str(demo) if demo.is_file() else None)
    p.add_argument("--source", default="one-by-one-person-detection.mp4", help="footage file")
    p.add_argument("--camera", default="office", help="camera whose rules the gating replay uses")
    p.add_argument("--seconds", type=float, default=50.0, help="the streams run")
    p.add_argument("--segment-s", type=float, default=10.0)
    p.add_argument("--post-s", type=float, default=5.0)
    p.add_argument("--pre-s", type=float, default=5.0)
    p.add_argument("--clip-s", type=float, default=30.0)
    p.add_argument("--cut-rounds", type=int, default=5)
    p.add_argument("--retention-seconds", type=float, default=60.0)
    p.add_argument("--budget-mb", type=float, default=12.0, help="max_disk_gb of that run, MiB")
    p.add_argument("--retention-interval", type=float, default=5.0)
    p.add_argument("--fps", type=float, default=5.0, help="detection rate per camera")
    p.add_argument(
        "--imgsz",
        type=lambda t: [int(x) for x in t.split(",") if x.strip()],
        default=[320, 640],
        help="detector input sizes measured; the first is the cameras-per-core figures'",
    )
    p.add_argument("--backend", default="openvino", help="openvino is f32 here")
    p.add_argument("--detector-seconds", type=float, default=4.0, help="per resolution and round")
    p.add_argument(
        "--sizing",
        type=_sizing,
        default=parse_sizing(SIZING),
        help="sizing-table rows to estimate with motion gating: LABEL=PER_CORE@MS[*A/B],... "
        "(MS: the detector's CPU ms per frame; *A/B: scaled by this run's imgsz A/B ratio)",
    )
    p.add_argument("--skip", default="", help=f"comma list of {','.join(SECTIONS)}")
    p.add_argument("--out", default=None, help="write the figures as JSON here")
    args = p.parse_args(argv)
    args.skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    bad = args.skip - set(SECTIONS)
    if bad:
        p.error(f"--skip {','.join(sorted(bad))}: expected some of {','.join(SECTIONS)}")
    if "streams" in args.skip:
        args.skip.add("clips")
    return args


# -- config ------------------------------------------------------------------------------------


def _rig(args: argparse.Namespace, base) -> Rig:
    tag = uuid.uuid4().hex[:6]
    topics = base.kafka.topics.model_copy(
        update={"alerts": f"rb{tag}.vigil.alerts", "clips": f"rb{tag}.vigil.clips"}
    )
    return Rig(
        tag=tag,
        kafka=base.kafka.model_copy(update={"topics": topics}),
        redis=base.redis.model_copy(update={"key_prefix": f"rb{tag}:"}),
        segment_s=args.segment_s,
        pre_s=args.pre_s,
        post_s=args.post_s,
    )


# -- the detector ------------------------------------------------------------------------------


def _frames(path: Path, count: int = 8, every: int = 25) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    frames, i = [], 0
    while len(frames) < count:
        ok, frame = cap.read()
        if not ok:
            break
        if i % every == 0:
            frames.append(frame)
        i += 1
    cap.release()
    if not frames:
        raise RuntimeError(f"{path}: no frames decoded")
    return frames


def _detector(args: argparse.Namespace, imgsz: int):
    from detectors import host_threads  # noqa: PLC0415 (imports torch: loaded only when measured)
    from detectors.config import DetectorConfig  # noqa: PLC0415 (imports torch: loaded only when measured)
    from detectors.engine import Detector  # noqa: PLC0415 (imports torch: loaded only when measured)
    from pipeline.bench.runner import detector_settings  # noqa: PLC0415 (with the detector)

    d = detector_settings(args.config)
    d.update(imgsz=imgsz, backend=args.backend)
    if args.backend == "openvino":
        d.update(precision="f32")
    det = Detector(DetectorConfig.model_validate(d))
    host_threads.apply(d.get("host_threads", "auto"), det.backend_name, det.device)
    return det


def _cpu_ms_per_frame(det, frames: list[np.ndarray], seconds: float, bs: int = 4) -> float:
    det.detect(frames[:bs])
    n, c0, t0 = 0, time.process_time(), time.perf_counter()
    while time.perf_counter() - t0 < seconds or n < 3 * bs:
        k = (n // bs) % max(len(frames) // bs, 1)
        det.detect(frames[k * bs : k * bs + bs])
        n += bs
    return 1000 * (time.process_time() - c0) / n


def detect_section(args: argparse.Namespace, base, main: Path, sub: Path, emit=print) -> dict:
    """Detector CPU per frame on each stream's frames (alternated, two rounds), motion gating's
    cost per frame, and the footage's activity under the config's rules (gating replay)."""
    from pipeline.bench.footage import replay_frames  # noqa: PLC0415 (OpenCV: loaded when measured)
    from pipeline.bench.gating import gating_replay  # noqa: PLC0415 (the rules: loaded when measured)
    from pipeline.ingest.motion import MotionDetector  # noqa: PLC0415 (loaded when measured)

    pools = {"sub": _frames(sub), "main": _frames(main)}
    ms: dict[int, dict[str, list[float]]] = {}
    for imgsz in reversed(args.imgsz):  # the first size last: its detector runs the replay
        det = _detector(args, imgsz)
        ms[imgsz] = {"sub": [], "main": []}
        for _ in range(2):
            for name, frames in pools.items():
                ms[imgsz][name].append(_cpu_ms_per_frame(det, frames, args.detector_seconds))
    mcfg = base.ingest.motion
    spec = next((c for c in base.cameras if c.id == args.camera), None)
    if spec is not None and spec.motion is not None:
        mcfg = spec.motion.apply(mcfg)
    mcfg = mcfg.model_copy(update={"enabled": True})
    replay = replay_frames(sub, args.fps)
    motion_ms = {}
    for name, frames in (("sub", [f for _, f in replay]), ("main", pools["main"] * 20)):
        gate = MotionDetector(mcfg)
        c0 = time.thread_time()
        for i, f in enumerate(frames):
            gate.check(f, i / args.fps)
        motion_ms[name] = 1000 * (time.thread_time() - c0) / len(frames)
    runs = gating_replay(det, replay, base.alerts or {}, args.camera, args.fps, mcfg)
    on = runs["on"]
    frames_n = len(replay)
    motion_frames = sum(1 for m in on["messages"] if m.get("motion"))
    out = {
        "detector": {
            "weights": Path(det.config.weights).name,
            "imgsz": args.imgsz,
            "backend": det.backend_name,
            "batch": 4,
        },
        "cpu_ms_per_frame": {
            str(size): {k: [round(x, 2) for x in v] for k, v in per.items()}
            for size, per in sorted(ms.items())
        },
        "motion_cpu_ms_per_frame": {k: round(v, 3) for k, v in motion_ms.items()},
        "motion": mcfg.model_dump(),
        "replay": {
            "file": sub.name,
            "fps": args.fps,
            "frames": frames_n,
            "motion_fraction": round(motion_frames / frames_n, 3),
            "detector_calls_off": runs["off"]["detector_calls"],
            "detector_calls_on": on["detector_calls"],
            "detect_fraction": round(on["detector_calls"] / frames_n, 3),
            "alerts_started_off": sum(a["status"] == "started" for a in runs["off"]["alerts"]),
            "alerts_started_on": sum(a["status"] == "started" for a in on["alerts"]),
        },
    }
    emit(
        f"detector {out['detector']}: CPU ms/frame {out['cpu_ms_per_frame']}; motion check "
        f"{out['motion_cpu_ms_per_frame']} ms/frame; replay {out['replay']}"
    )
    return out


# -- derived -----------------------------------------------------------------------------------


def per_camera(res: dict[str, Any], fps: float, force_every_s: float, imgsz: int) -> dict[str, Any]:
    """CPU per camera of each way of running it, from the parts measured in this run (the
    detector at ``imgsz``)."""
    s, d = res["streams"], res["detect"]
    rec = s["recorder"]["cores"]
    dec = {k: v["cores"] for k, v in s["decode"].items()}
    det = {
        k: float(np.median(v)) * fps / 1000 for k, v in d["cpu_ms_per_frame"][str(imgsz)].items()
    }
    gate = {k: v * fps / 1000 for k, v in d["motion_cpu_ms_per_frame"].items()}
    active = d["replay"]["detect_fraction"]
    idle = 1 / (force_every_s * fps)  # no motion: only the forced detections
    rows: dict[str, Any] = {}
    for stream in ("sub", "main"):
        base = {f"decode {stream}": dec[stream]}
        variants = {
            "": (det[stream], {}),
            " gated (footage)": (det[stream] * active, {"motion": gate[stream]}),
            " gated (idle)": (det[stream] * idle, {"motion": gate[stream]}),
        }
        for suffix, (detect, extra) in variants.items():
            parts = {**base, **extra, "detect": detect}
            rows[f"detect {stream}{suffix}"] = cores_per_camera(parts)
            rows[f"detect {stream}{suffix} + record main"] = cores_per_camera(
                {**parts, "record main": rec}
            )
    return rows


def sizing_gated(res: dict[str, Any], args: argparse.Namespace, force_every_s: float) -> list:
    """The sizing table's rows with motion gating on: on the footage (its measured activity)
    and on an idle camera (only the forced detections), estimated with :func:`gated_per_core`."""
    d = res["detect"]
    sub = {int(k): float(np.median(v["sub"])) for k, v in d["cpu_ms_per_frame"].items()}
    motion = d["motion_cpu_ms_per_frame"]["sub"]
    cases = {"footage": d["replay"]["detect_fraction"], "idle": 1 / (force_every_s * args.fps)}
    rows = []
    for row in args.sizing:
        ms = row.det_ms
        if row.scale is not None:
            a, b = row.scale
            if a not in sub or b not in sub:
                continue  # that size was not measured in this run (--imgsz)
            ms = ms * sub[a] / sub[b]
        out = {"label": row.label, "per_core_off": row.per_core, "det_ms": round(ms, 2)}
        for case, fraction in cases.items():
            out[f"per_core_{case}"] = gated_per_core(row.per_core, ms, fraction, motion, args.fps)
        rows.append(out)
    return rows


# -- the run -----------------------------------------------------------------------------------


def run(args: argparse.Namespace, emit=print) -> dict[str, Any]:
    from pipeline.camera_sim import CameraSim  # noqa: PLC0415 (loaded when measured)
    from pipeline.config import load_config  # noqa: PLC0415 (Kafka/Redis/rules: loaded when measured)

    base = load_config(args.config) if args.config else None
    if base is None:
        from pipeline.config import VigilConfig  # noqa: PLC0415 (as above)

        base = VigilConfig()
    source = footage(args.source) if len(Path(args.source).parts) == 1 else Path(args.source)
    res: dict[str, Any] = {
        "command": "python -m pipeline.bench.recording " + " ".join(sys.argv[1:]),
        "machine": machine(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
    }
    t0 = time.monotonic()
    main, sub = make_stream(source, MAIN, _cache()), make_stream(source, SUB, _cache())
    res["prepare_s"] = round(time.monotonic() - t0, 1)
    res["source"] = {"file": source.name, **probe(source)}
    res["main"], res["sub"] = probe(main), probe(sub)
    emit(f"main {res['main']}\nsub {res['sub']}")
    rig = _rig(args, base)
    tmp = Path(tempfile.mkdtemp(prefix="vigil-bench-rec-"))
    try:
        if not {"streams", "retention"} <= args.skip:
            with CameraSim({"main": main, "sub": sub}, port=0) as sim:
                if "streams" not in args.skip:
                    (tmp / "a").mkdir()
                    s = streams_run(
                        rig,
                        sim.urls,
                        tmp / "a",
                        sim.pid,
                        args.seconds,
                        args.fps,
                        res["main"]["fps"],
                        emit=emit,
                    )
                    segments = s.pop("segments")
                    res["streams"] = s
                    if "clips" not in args.skip:
                        res["clips"] = clip_cuts(
                            rig, tmp / "a", segments, args.clip_s, args.cut_rounds, emit
                        )
                if "retention" not in args.skip:
                    (tmp / "b").mkdir()
                    res["retention"] = retention_run(
                        rig,
                        sim.urls["main"],
                        tmp / "b",
                        args.retention_seconds,
                        args.budget_mb,
                        args.retention_interval,
                        emit,
                    )
        if "detect" not in args.skip:
            res["detect"] = detect_section(args, base, main, sub, emit)
        if "detect" in res:
            force = res["detect"]["motion"]["force_every_s"]
            res["sizing_gated"] = sizing_gated(res, args, force)
            for row in res["sizing_gated"]:
                emit(f"sizing, gated: {row}")
        if "streams" in res and "detect" in res:
            res["per_camera"] = per_camera(res, args.fps, force, args.imgsz[0])
            for name, row in res["per_camera"].items():
                emit(
                    f"{name}: {row['percent_of_core']} % of a core, {row['cameras_per_core']} cameras per core"
                )
    finally:
        rig.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)
    res["machine"]["loadavg_end"] = list(os.getloadavg())
    res["seconds"] = round(time.monotonic() - t0, 1)
    return res


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    try:
        res = run(args)
    except UserError as e:  # missing footage or ffmpeg, Kafka or Redis away: said, no traceback
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=1, default=str) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
