"""``vigil detect``: run the detector on an image, a video or a stream.

``vigil detect`` is a user's first sanity check: does the model load, and does it see the people
in my footage? Errors print one line on stderr and exit with status 2 (no traceback).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
from pydantic import ValidationError

from detectors.config import DetectorConfig
from pipeline.cli.support import comma_list, config_from_args, validation_errors
from pipeline.common.errors import InputError, InputNotFound, UsageError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "detect",
        help="run the detector on an image or video and print the detections",
        description="Print detections per frame for an image, a video file or a stream URL.",
    )
    p.add_argument("path", help="image, video file or URL (rtsp://, http://...)")
    p.add_argument("-c", "--config", help="take detector settings from this Vigil config file")
    p.add_argument(
        "--weights", help="weights path or ultralytics name (default: config/yolov5n.pt)"
    )
    p.add_argument("--imgsz", type=int, help="inference size, a multiple of 32 (default 640)")
    p.add_argument("--conf", type=float, help="confidence threshold (default 0.25)")
    p.add_argument("--iou", type=float, help="NMS IoU threshold (default 0.45)")
    p.add_argument("--classes", help="comma-separated class names or ids, e.g. person,car")
    p.add_argument("--device", help="auto, cpu, cuda, cuda:N (default auto)")
    p.add_argument("--max-frames", type=int, default=0, help="stop after N frames (0: all)")
    p.add_argument("--json", action="store_true", help="one JSON object per frame")
    p.set_defaults(func=cmd_detect)


def _detector_config(args: argparse.Namespace) -> DetectorConfig:
    """DetectorConfig from the config file (if any) with command-line overrides applied."""
    data: dict[str, Any] = config_from_args(args).detector.model_dump()
    for key in ("weights", "imgsz", "conf", "iou", "device"):
        value = getattr(args, key)
        if value is not None:
            data[key] = value
    if args.classes is not None:
        data["classes"] = comma_list(args.classes) or None
    try:
        return DetectorConfig.model_validate(data)
    except ValidationError as e:
        raise UsageError(f"invalid detector options: {validation_errors(e, '--')}") from None


def _check_source(path: str) -> None:
    """Fail before loading the model when the input obviously does not exist."""
    if "://" not in path and not Path(path).exists():
        raise InputNotFound(f"{path} not found; give an image, a video file or a stream URL")


def _frames(path: str, limit: int) -> Iterator[Any]:
    """Frames of an image or a video/stream, up to ``limit`` (0: all)."""
    is_url = "://" in path
    if not is_url and Path(path).suffix.lower() in IMAGE_SUFFIXES:
        img = cv2.imread(path)
        if img is None:
            raise InputError(f"cannot read image {path} (unsupported or corrupt file)")
        yield img
        return
    cap = cv2.VideoCapture(path)
    try:
        if not cap.isOpened():
            raise InputError(
                f"cannot open {path} as a video or stream (unsupported, corrupt or unreachable)"
            )
        n = 0
        while not limit or n < limit:
            ok, frame = cap.read()
            if not ok:
                break
            n += 1
            yield frame
        if n == 0:
            raise InputError(f"no frames could be read from {path}")
    finally:
        cap.release()


def cmd_detect(args: argparse.Namespace) -> int:
    from detectors.engine import Detector  # noqa: PLC0415 (imports torch)

    if args.max_frames < 0:
        raise UsageError(f"--max-frames must be >= 0, got {args.max_frames}")
    _check_source(args.path)
    cfg = _detector_config(args)
    detector = Detector(cfg)
    count = total = 0
    elapsed = 0.0
    for i, frame in enumerate(_frames(args.path, args.max_frames)):
        t0 = time.perf_counter()
        dets = detector.detect([frame])[0]
        elapsed += time.perf_counter() - t0
        count, total = count + 1, total + len(dets)
        h, w = frame.shape[:2]
        if args.json:
            print(
                json.dumps(
                    {
                        "frame": i,
                        "source": args.path,
                        "width": w,
                        "height": h,
                        "model": detector.name,
                        "model_version": detector.version,
                        "detections": [d.to_dict() for d in dets],
                    }
                ),
                flush=True,
            )
            continue
        print(f"frame {i} ({w}x{h}): {len(dets)} detection(s)", flush=True)
        for d in dets:
            box = ", ".join(f"{v:.3f}" for v in d.box)
            print(f"  {d.label:<14} {d.confidence:.2f}  [{box}]")
    if not args.json:
        ms = 1000 * elapsed / max(count, 1)
        print(
            f"{count} frame(s), {total} detection(s); model {detector.name} "
            f"({detector.version}) on {detector.device}, {ms:.0f} ms/frame"
        )
    return 0
