"""``vigil recordings reindex | export | prune``: the segment index, cuts from the recordings and
a retention pass (docs/recordings.md)."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from pathlib import Path

import redis

from pipeline.cli.support import config_args, config_from_args
from pipeline.common.contracts import validate_camera_id
from pipeline.common.errors import InputNotFound, UsageError, UserError
from pipeline.config import VigilConfig
from pipeline.record.camera_settings import CameraSettings
from pipeline.record.export import export, iso
from pipeline.record.index import SegmentIndex, rebuild
from pipeline.record.retention import Retention, mb

TIME_HELP = "ISO 8601 (2026-12-07T16:00:00Z; UTC unless it names an offset) or seconds since 1970"


def register(sub: argparse._SubParsersAction) -> None:
    rec = sub.add_parser(
        "recordings", help="the recordings: rebuild their index, export a time range, prune"
    ).add_subparsers(dest="recordings_command", required=True, metavar="ACTION")
    p = rec.add_parser(
        "reindex",
        help="rebuild the segment index in Redis from the files",
        description="Read every segment under recordings.dir (start from its name, duration "
        "from its packets) and replace the index in Redis with what was found. Unplayable files "
        "are skipped, one line each.",
    )
    config_args(p, required=False)
    p.set_defaults(func=cmd_reindex)
    p = rec.add_parser(
        "export",
        help="cut a camera's recording into one MP4 (no re-encoding)",
        description="Copy [--from, --to] of a camera's recording into one MP4, starting at the "
        "keyframe at or before --from. Gaps in the recording are listed.",
    )
    config_args(p, required=False)
    p.add_argument("camera", help="camera id")
    p.add_argument("--from", dest="start", required=True, metavar="T", help=TIME_HELP)
    p.add_argument("--to", dest="end", required=True, metavar="T", help=TIME_HELP)
    p.add_argument("-o", "--out", required=True, help="the MP4 file to write")
    p.set_defaults(func=cmd_export)
    p = rec.add_parser(
        "prune",
        help="run one retention pass: delete what is past its days or over the disk budget",
        description="Delete, oldest first, the segments past their camera's "
        "retain.continuous_days (unless an alert's clip holds them), then the oldest while the "
        "recordings exceed recordings.max_disk_gb or free space is below "
        "recordings.min_free_gb; prints each segment that goes and why.",
    )
    config_args(p, required=False)
    p.add_argument("--dry-run", action="store_true", help="print what would go; delete nothing")
    p.set_defaults(func=cmd_prune)


def parse_time(text: str, option: str) -> float:
    """Seconds since 1970 from ``text`` (ISO 8601, naive = UTC, or epoch seconds)."""
    try:
        return float(text)
    except ValueError:
        pass
    try:
        t = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise UsageError(f"{option} {text!r}: not a time ({TIME_HELP})") from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return t.timestamp()


def _index(args: argparse.Namespace) -> tuple[SegmentIndex, VigilConfig]:
    cfg = config_from_args(args, "recorder")  # its Redis ACL user: the index's writer
    return SegmentIndex.from_config(cfg.redis), cfg


def _redis_error(e: redis.RedisError) -> UserError:
    # the URL and password are never quoted: redis-py's texts name host and port at most
    return UserError(f"Redis error ({type(e).__name__}): {e}")


def cmd_reindex(args: argparse.Namespace) -> int:
    index, cfg = _index(args)
    root = cfg.recordings.dir
    if not Path(root).is_dir():
        raise InputNotFound(f"recordings.dir {root}: no such folder")
    try:
        report = rebuild(Path(root), index)
    except redis.RedisError as e:
        raise _redis_error(e) from None
    for camera, n in report.indexed.items():
        print(f"{camera}: {n} segments")
    print(f"indexed {report.total} segments; skipped {len(report.skipped)} files")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    try:
        camera = validate_camera_id(args.camera)
    except ValueError as e:
        raise UsageError(f"camera: {e}") from None
    t0 = parse_time(args.start, "--from")
    t1 = parse_time(args.end, "--to")
    index, cfg = _index(args)
    try:
        result = export(index, Path(cfg.recordings.dir), camera, t0, t1, Path(args.out))
    except redis.RedisError as e:
        raise _redis_error(e) from None
    print(
        f"{result.path}: {camera} from {iso(result.start)} to {iso(result.end)} "
        f"({result.duration:.1f} s, {result.frames} frames, {result.segments} segments)"
    )
    for a, b in result.gaps:
        print(f"gap: {iso(a)} to {iso(b)} ({b - a:.1f} s not recorded)")
    return 0


def cmd_prune(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    root = cfg.recordings.dir
    if not Path(root).is_dir():
        raise InputNotFound(f"recordings.dir {root}: no such folder")
    retention = Retention.from_config(
        cfg.recordings, cfg.redis, CameraSettings.from_kafka(cfg.kafka)
    )
    try:
        report = retention.run_once(dry_run=args.dry_run)
    except redis.RedisError as e:
        raise _redis_error(e) from None
    verb = "would delete" if args.dry_run else "deleted"
    for d in report.deleted:
        s = d.segment
        held = ", held by an alert" if s.held else ""
        print(f"{verb} {s.rel} ({mb(s.bytes)}, {iso(s.start)}): {d.reason}{held}")
    for rel, why in report.failed:
        print(f"kept {rel}: {why}")
    print(report.summary())
    return 1 if report.failed else 0
