"""``vigil clips export ALERT_ID -o clip.mp4``: the clip of an alert, as the console serves it
(docs/recordings.md, "Event clips")."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import redis

from alerts.store import AlertStore
from pipeline.cameras.registry import read_registry
from pipeline.cli.support import config_args, config_from_args
from pipeline.common.errors import InputNotFound, UsageError, UserError
from pipeline.console.clips import alert_clip_range
from pipeline.record.clips import UnusableAlert, validate_alert_id, write_clip
from pipeline.record.export import check_output, iso
from pipeline.record.index import SegmentIndex


def register(sub: argparse._SubParsersAction) -> None:
    clips = sub.add_parser(
        "clips", help="the clip of an alert: its camera's recording around it"
    ).add_subparsers(dest="clips_command", required=True, metavar="ACTION")
    p = clips.add_parser(
        "export",
        help="write an alert's clip into one MP4 (no re-encoding)",
        description="Copy the alert's camera's recording from pre_s before the alert started to "
        "post_s after it ended (or now, while it is active) into one MP4, starting at the "
        "keyframe at or before that. The same clip as GET /api/alerts/ID/clip.mp4. Gaps in the "
        "recording are listed.",
    )
    config_args(p, required=False)
    p.add_argument("alert_id", metavar="ALERT_ID", help="the alert's id")
    p.add_argument("-o", "--out", required=True, help="the MP4 file to write")
    p.set_defaults(func=cmd_export)


def cmd_export(args: argparse.Namespace) -> int:
    try:
        alert_id = validate_alert_id(args.alert_id)
    except UnusableAlert as e:
        raise UsageError(str(e)) from None
    out = check_output(Path(args.out))
    cfg = config_from_args(args)
    try:
        alert = AlertStore(cfg.redis).get_alert(alert_id)
        if alert is None:
            raise InputNotFound(f"no alert {alert_id} (unknown, or its record expired)")
        rng = alert_clip_range(read_registry(cfg.kafka), alert, alert_id, time.time())
        result = write_clip(
            SegmentIndex.from_config(cfg.redis),
            Path(cfg.recordings.dir),
            rng,
            out,
            cfg.recordings.gap_tolerance_s,
        )
    except redis.RedisError as e:
        # the URL and password are never quoted: redis-py's texts name host and port at most
        raise UserError(f"Redis error ({type(e).__name__}): {e}") from None
    print(
        f"{result.path}: alert {alert_id} on {rng.camera_id} from {iso(result.start)} to "
        f"{iso(result.end)} ({result.duration:.1f} s, {result.frames} frames"
        f"{', still active' if rng.active else ''})"
    )
    for a, b in result.gaps:
        print(f"gap: {iso(a)} to {iso(b)} ({b - a:.1f} s not recorded)")
    return 0
