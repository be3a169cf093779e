"""``vigil dataset collect | label | split | stats | validate | export-coco | import-coco``:
training datasets on the command line (see docs/retraining.md).

Errors print one line on stderr and exit with status 2, like the rest of the CLI.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from pydantic import ValidationError

from detectors.retrain import dataset as ds
from detectors.retrain.collector import collect_videos
from detectors.retrain.config import CollectionPolicy
from detectors.retrain.sampling import Collector
from pipeline.cli import dataset_recordings as recordings
from pipeline.cli.support import comma_list, config_from_args, progress, validation_errors
from pipeline.common.errors import InputError, UsageError
from pipeline.config import VigilConfig


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("dataset", help="collect, label, split and inspect training datasets")
    dsub = p.add_subparsers(dest="dataset_command", required=True, metavar="ACTION")

    c = dsub.add_parser(
        "collect",
        help="sample recorded footage into a dataset folder with the live collection policies",
        description="From video files (each one camera) or from the cameras' recordings "
        "(--recordings CAMERA[,CAMERA] --since 24h, the segments indexed in Redis; "
        "--around-alerts: only the alerts' clip ranges). Frames are analysed at --analyze-fps "
        "with the detector (for the 'uncertain' and 'motion without detection' policies) and kept "
        "when a policy fires; near-duplicates are skipped and quotas apply, as in the live "
        "collector.",
    )
    c.add_argument("videos", nargs="*", metavar="VIDEO")
    c.add_argument(
        "--recordings", metavar="CAMERA[,CAMERA]", help="sample these cameras' recordings"
    )
    c.add_argument(
        "--since", help="--recordings: the period up to now, e.g. 30m, 24h, 7d (default 24h)"
    )
    c.add_argument(
        "--around-alerts",
        action="store_true",
        help="--recordings: only the clip ranges of the cameras' alerts",
    )
    c.add_argument("-o", "--output", required=True, help="dataset folder (created or extended)")
    c.add_argument("-c", "--config", help="take collection policy and detector from this config")
    c.add_argument("--camera", action="append", help="camera id per video (default: file name)")
    c.add_argument("--weights", help="detector weights (default: config / yolov5n)")
    c.add_argument("--no-detect", action="store_true", help="no detector: periodic and motion only")
    c.add_argument("--imgsz", type=int, help="detector inference size")
    c.add_argument("--device", help="auto, cpu, cuda:N")
    c.add_argument("--analyze-fps", type=float, default=2.0, help="frames analysed per second")
    c.add_argument("--periodic", type=float, help="one frame every N s (0: off)")
    c.add_argument("--min-interval", type=float, help="at most one frame per camera every N s")
    c.add_argument("--uncertain", help="confidence band LOW,HIGH (e.g. 0.25,0.5)")
    c.add_argument("--no-uncertain", action="store_true")
    c.add_argument("--motion", type=float, help="changed-pixel fraction that counts as motion")
    c.add_argument("--no-motion", action="store_true")
    c.add_argument("--dedup", type=int, help="near-duplicate perceptual-hash distance (0: off)")
    c.add_argument("--dedup-delta", type=int, help="near-duplicate thumbnail grey-level delta")
    c.add_argument("--max-images", type=int, help="per-camera quota")
    c.add_argument("--disk-budget-mb", type=float, help="disk budget for the folder")
    c.add_argument("--start", type=float, help="capture time of the first frame (epoch seconds)")
    c.set_defaults(func=cmd_collect)

    lab = dsub.add_parser(
        "label",
        help="pseudo-label images with a teacher model (human labels are never replaced)",
    )
    lab.add_argument("dir")
    lab.add_argument("--teacher", required=True, help="teacher weights (e.g. yolov5n.pt)")
    lab.add_argument("--classes", help="dataset classes, comma-separated (default: the teacher's)")
    lab.add_argument("--conf", type=float, default=0.4, help="teacher confidence threshold")
    lab.add_argument("--iou", type=float, default=0.5)
    lab.add_argument("--imgsz", type=int, default=640)
    lab.add_argument("--device", default="auto")
    lab.add_argument("--overwrite", action="store_true", help="relabel teacher-labelled images")
    lab.set_defaults(func=cmd_label)

    sp = dsub.add_parser(
        "split",
        help="split into train/val/test by camera and time (no near-duplicates across splits)",
    )
    sp.add_argument("dir")
    sp.add_argument("--val", type=float, default=0.2)
    sp.add_argument("--test", type=float, default=0.0)
    sp.add_argument("--by", choices=("time", "camera"), default="time")
    sp.add_argument("--segment", type=float, default=30.0, help="time segment length (s)")
    sp.add_argument("--gap", type=float, help="guard band at split boundaries (s)")
    sp.add_argument("--holdout-cameras", help="--by camera: cameras to hold out, comma-separated")
    sp.add_argument("--dedup", type=int, default=6, help="near-duplicate hash distance (0: off)")
    sp.add_argument("--seed", type=int, default=0)
    sp.set_defaults(func=cmd_split)

    st = dsub.add_parser(
        "stats",
        help="counts per camera, split, reason, label source, class and reviewed examples",
    )
    st.add_argument("dir")
    st.add_argument("--json", action="store_true")
    st.set_defaults(func=cmd_stats)

    va = dsub.add_parser(
        "validate", help="check every image and label line; report problems with file and line"
    )
    va.add_argument("dir")
    va.set_defaults(func=cmd_validate)

    ex = dsub.add_parser("export-coco", help="write labels as COCO JSON for annotation tools")
    ex.add_argument("dir")
    ex.add_argument("-o", "--output", required=True, help="COCO JSON file to write")
    ex.add_argument("--split", choices=("train", "val", "test"), help="only this split")
    ex.set_defaults(func=cmd_export_coco)

    im = dsub.add_parser("import-coco", help="bring corrected labels back from COCO JSON")
    im.add_argument("dir")
    im.add_argument("file", help="COCO JSON file")
    im.add_argument("--add-classes", action="store_true", help="add unknown categories as classes")
    im.set_defaults(func=cmd_import_coco)


def _floats(text: str, n: int, name: str) -> list[float]:
    try:
        values = [float(x) for x in text.split(",")]
    except ValueError:
        raise UsageError(f"{name} expects {n} comma-separated numbers, got {text!r}") from None
    if len(values) != n:
        raise UsageError(f"{name} expects {n} comma-separated numbers, got {text!r}")
    return values


def _policy(args: argparse.Namespace, cfg: VigilConfig) -> CollectionPolicy:
    """The config's collection policy with the command-line overrides applied."""
    data: dict[str, Any] = cfg.collection.policy.model_dump()
    if args.periodic is not None:
        data["periodic_s"] = args.periodic or None
    if args.min_interval is not None:
        data["min_interval_s"] = args.min_interval
    if args.uncertain:
        low, high = _floats(args.uncertain, 2, "--uncertain")
        data["uncertain"].update(enabled=True, low=low, high=high)
    if args.no_uncertain:
        data["uncertain"]["enabled"] = False
    if args.motion is not None:
        data["motion"].update(enabled=True, threshold=args.motion)
    if args.no_motion:
        data["motion"]["enabled"] = False
    for arg, key in (
        ("dedup", "dedup_distance"),
        ("dedup_delta", "dedup_pixel_delta"),
        ("max_images", "max_images"),
    ):
        if getattr(args, arg) is not None:
            data[key] = getattr(args, arg)
    try:
        return CollectionPolicy.model_validate(data)
    except ValidationError as e:
        raise UsageError(f"invalid collection options: {validation_errors(e)}") from None


def cmd_collect(args: argparse.Namespace) -> int:
    recordings.check_args(args)
    cameras = since_s = None
    if args.recordings is not None:
        cameras = recordings.parse_cameras(args.recordings)
        since_s = recordings.parse_since(args.since or "24h")
    cfg = config_from_args(args)
    policy = _policy(args, cfg)
    detector = None
    if not args.no_detect:
        from detectors.engine import Detector  # noqa: PLC0415 (imports torch)

        dcfg = cfg.detector.model_copy(update={"tracker": "none"})
        updates = {
            k: v
            for k, v in (
                ("weights", args.weights),
                ("imgsz", args.imgsz),
                ("device", args.device),
            )
            if v is not None
        }
        detector = Detector(dcfg.model_copy(update=updates))
    if cameras is not None:
        return _collect_recordings(args, cfg, policy, detector, cameras, since_s)
    collector, reports = collect_videos(
        args.videos,
        args.output,
        policy,
        detector=detector,
        analyze_fps=args.analyze_fps,
        camera_ids=args.camera,
        start_ts=args.start,
        disk_budget_mb=args.disk_budget_mb or cfg.collection.disk_budget_mb,
        jpeg_quality=cfg.collection.jpeg_quality,
    )
    for r in reports:
        print(
            f"{r.camera}: {r.frames_read} frame(s) read, {r.frames_analyzed} analysed, "
            f"{r.saved} kept"
        )
    _summary(collector)
    return 0


def _collect_recordings(args, cfg, policy, detector, cameras, since_s) -> int:
    budget = args.disk_budget_mb or cfg.collection.disk_budget_mb
    try:
        collector = Collector(
            args.output,
            policy,
            disk_budget_mb=budget,
            jpeg_quality=cfg.collection.jpeg_quality,
            source="recordings",
        )
    except OSError as e:
        raise InputError(f"cannot create the dataset folder {args.output}: {e.strerror}") from None
    try:
        results = recordings.collect_recordings(
            cfg,
            collector,
            cameras,
            since_s,
            around_alerts=args.around_alerts,
            detector=detector,
            analyze_fps=args.analyze_fps,
        )
    finally:
        collector.close()
    for rep, stats in results:
        print(recordings.report_line(rep, stats, args.analyze_fps))
    _summary(collector)
    return 0


def _summary(collector: Collector) -> None:
    s = collector.stats
    reasons = ", ".join(f"{k} {v}" for k, v in sorted(s.by_reason.items())) or "none"
    print(
        f"{s.saved} frame(s) kept in {collector.root} ({reasons}); {s.duplicates} "
        f"near-duplicate(s) skipped, {s.evicted} dropped for quota/budget; "
        f"{collector.count()} image(s), {collector.bytes_used / 1e6:.1f} MB in the folder"
    )


def cmd_label(args: argparse.Namespace) -> int:
    classes = comma_list(args.classes) if args.classes else None
    r = ds.label(
        args.dir,
        args.teacher,
        classes=classes,
        conf=args.conf,
        iou=args.iou,
        imgsz=args.imgsz,
        device=args.device,
        overwrite=args.overwrite,
        progress=progress("labelling"),
    )
    for p in r.problems:
        print(f"skipped {p}", file=sys.stderr)
    print(
        f"labelled {r.labeled} image(s) with {r.boxes} box(es) "
        f"(classes: {', '.join(r.names.values())}); kept {r.skipped_human} human-labelled "
        f"and {r.skipped_existing} already labelled; {len(r.problems)} problem(s)"
    )
    return 0


def cmd_split(args: argparse.Namespace) -> int:
    r = ds.split(
        args.dir,
        val=args.val,
        test=args.test,
        by=args.by,
        segment_s=args.segment,
        gap_s=args.gap,
        holdout_cameras=[c.strip() for c in args.holdout_cameras.split(",")]
        if args.holdout_cameras
        else None,
        dedup_distance=args.dedup,
        seed=args.seed,
    )
    print(
        "split: "
        + ", ".join(f"{k} {v}" for k, v in r.counts.items())
        + f"; {r.excluded} excluded (split boundaries, near-duplicates of training frames)"
    )
    for cam, c in sorted(r.per_camera.items()):
        print(f"  {cam}: " + ", ".join(f"{k} {v}" for k, v in c.items()))
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    s = ds.stats(args.dir)
    print(json.dumps(s, indent=2, default=str) if args.json else ds.format_stats(s))
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    r = ds.validate(args.dir, require_labels=False)
    for p in r.problems:
        print(p)
    print(r.summary())
    return 1 if r.problems else 0


def cmd_export_coco(args: argparse.Namespace) -> int:
    r = ds.export_coco(args.dir, args.output, split_name=args.split)
    for p in r["problems"]:
        print(f"skipped {p}", file=sys.stderr)
    print(f"wrote {args.output}: {r['images']} image(s), {r['annotations']} annotation(s)")
    return 0


def cmd_import_coco(args: argparse.Namespace) -> int:
    r = ds.import_coco(args.dir, args.file, add_classes=args.add_classes)
    for p in r["problems"]:
        print(f"skipped {p}", file=sys.stderr)
    print(f"imported labels for {r['images']} image(s), {r['boxes']} box(es)")
    return 0
