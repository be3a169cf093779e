"""``vigil record``: a recorder process (joins the recorders' group on the cameras topic), and the
recorder that ``vigil run`` starts beside ingest (docs/recordings.md)."""

from __future__ import annotations

import argparse
import threading
from collections.abc import Callable

from pipeline.cli.support import config_args, config_from_args
from pipeline.common.endpoints import service_endpoints
from pipeline.common.lifecycle import install_signal_handlers
from pipeline.config import VigilConfig
from pipeline.ingest import metrics
from pipeline.record.alert_follower import AlertFollower
from pipeline.record.build import build_alert_follower, build_recorder_service
from pipeline.record.service import RecorderService


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "record",
        help="one recorder (joins the recorders' group: records the cameras with record.enabled)",
        description="Record the cameras Kafka assigns to this recorder (those with record.enabled: "
        "their record_url, else their url) into recordings.dir, and index the segments in Redis. "
        "Run several to share the cameras; SIGTERM/SIGINT finish the current segments.",
    )
    config_args(p)
    p.add_argument("--max-seconds", type=float, default=None, help="stop after this long")
    p.add_argument("--recorder-id", default=None, help="name in the logs (default host-pid)")
    p.set_defaults(func=cmd_record)


def build_recorder(cfg: VigilConfig, recorder_id: str | None = None) -> RecorderService:
    """A recorder service for ``cfg`` (give it ``cfg.for_component("recorder")``: the recorder's
    Redis ACL user)."""
    return build_recorder_service(
        cfg.kafka,
        cfg.recordings,
        cfg.redis,
        forbidden_endpoints=service_endpoints(cfg),
        recorder_id=recorder_id,
    )


def build_follower(cfg: VigilConfig) -> AlertFollower:
    """The recorder's alert follower: holds for the alerts of recorded cameras, in a group of
    its own on the alerts topic."""
    return build_alert_follower(cfg.kafka, cfg.recordings, cfg.redis)


def recorder_runner(cfg: VigilConfig) -> Callable[[threading.Event], None]:
    """``vigil run``'s recorder: runs until the event is set."""
    service = build_recorder(cfg)
    return lambda stop: service.run(stop)


def cmd_record(args: argparse.Namespace) -> int:
    cfg = config_from_args(args, "recorder")
    stop = threading.Event()
    install_signal_handlers(stop)
    metrics.serve(args.metrics_port)
    build_recorder(cfg, args.recorder_id).run(stop, args.max_seconds)
    return 0
