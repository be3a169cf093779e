"""``vigil run`` and ``vigil ingest``: the pipeline processes."""

from __future__ import annotations

import argparse

from alerts.service import alert_service_runner
from pipeline.cli.console import start_console
from pipeline.cli.notify import notifier_runner
from pipeline.cli.record import recorder_runner
from pipeline.cli.support import config_args, config_from_args


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run", help="registry sync + ingest + detection (+ alerts, recording) in one process"
    )
    config_args(p)
    p.add_argument("--max-seconds", type=float, default=None, help="stop after this long")
    p.add_argument("--no-alerts", action="store_true", help="do not run the alert service here")
    p.add_argument(
        "--no-record",
        action="store_true",
        help="do not run a recorder here (recordings.in_run: false in the config does the same)",
    )
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("ingest", help="one ingest worker (joins the worker group)")
    config_args(p)
    p.add_argument("--max-seconds", type=float, default=None)
    p.add_argument("--worker-id", default=None)
    p.set_defaults(func=cmd_ingest)


def cmd_run(args: argparse.Namespace) -> int:
    from pipeline.app import run_ingest  # noqa: PLC0415 (imports torch)

    cfg = config_from_args(args)
    services = []
    # each service with its own Redis ACL user (redis.users), as if it ran on its own
    if not args.no_alerts and cfg.alerts.configured:
        services.append(alert_service_runner(cfg.for_component("alerts")))
    if cfg.console.enabled:
        # started before the worker: a port in use is one clear error, not a thread's traceback
        services.append(start_console(cfg.for_component("console")).run_until_stopped)
    if cfg.notify.active_sinks:  # webhooks / MQTT: docs/notify.md
        services.append(notifier_runner(cfg.for_component("notifier")))
    if cfg.recordings.in_run and not args.no_record:
        # joins the recorders' group; records the cameras with record.enabled it is assigned,
        # and opens nothing (no stream, no folder) while there are none (docs/recordings.md)
        services.append(recorder_runner(cfg.for_component("recorder")))
    return run_ingest(
        cfg.for_component("ingest"),
        max_seconds=args.max_seconds,
        metrics_port=args.metrics_port,
        sync_cameras=True,
        extra_services=services,
    )


def cmd_ingest(args: argparse.Namespace) -> int:
    from pipeline.app import run_ingest  # noqa: PLC0415 (imports torch)

    cfg = config_from_args(args, "ingest")
    if args.worker_id:
        cfg.ingest.worker_id = args.worker_id
    return run_ingest(cfg, max_seconds=args.max_seconds, metrics_port=args.metrics_port)
