"""``vigil notify serve | test``: alert events to webhooks and MQTT (docs/notify.md)."""

from __future__ import annotations

import argparse
import sys
import threading
from collections.abc import Callable

from alerts.notify.service import NotifyService, known_pairs, notify_runner, send_test
from pipeline.cli.support import config_args, config_from_args, fail
from pipeline.common.lifecycle import install_signal_handlers
from pipeline.config import VigilConfig
from pipeline.ingest import metrics


def register(sub: argparse._SubParsersAction) -> None:
    notify = sub.add_parser("notify", help="deliver alerts to webhooks and MQTT (Home Assistant)")
    nsub = notify.add_subparsers(dest="notify_command", required=True, metavar="ACTION")

    p = nsub.add_parser("serve", help="run the notifier (joins its consumer group)")
    config_args(p)
    p.add_argument("--instance-id", default=None, help="static group member id (fast restarts)")
    p.add_argument("--max-seconds", type=float, default=None, help="stop after this long")
    p.set_defaults(func=cmd_serve)

    p = nsub.add_parser("test", help="send a synthetic alert to one sink, print what came back")
    p.add_argument("sink", help="the sink's id in notify.sinks")
    p.add_argument("-c", "--config", required=True, help="vigil.yaml")
    p.add_argument("--bootstrap", default=None, help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_test)


def _wiring(cfg: VigilConfig) -> dict:
    """What the notifier takes from other sections: where the console serves snapshots, and
    the (camera, rule) pairs Home Assistant hears about before their first alert."""
    return {
        "snapshot_base_url": cfg.console.links_base,
        "public_url": cfg.console.public_url,
        "known": known_pairs([c.id for c in cfg.cameras], cfg.alerts.rules),
    }


def notifier_runner(cfg: VigilConfig) -> Callable[[threading.Event], None]:
    """For ``vigil run`` (with ``notify.sinks`` set)."""
    return notify_runner(cfg, **_wiring(cfg))


def cmd_serve(args: argparse.Namespace) -> int:
    cfg = config_from_args(args, "notifier")
    if not cfg.notify.active_sinks:
        return fail(f"no sink configured (notify.sinks in {args.config}): nothing to deliver to")
    if args.instance_id:
        cfg.notify.instance_id = args.instance_id
    service = NotifyService(cfg, **_wiring(cfg))
    stop = threading.Event()
    install_signal_handlers(stop)
    metrics.serve(args.metrics_port)
    service.run(stop, max_seconds=args.max_seconds)
    return 0


def cmd_test(args: argparse.Namespace) -> int:
    cfg = config_from_args(args, "notifier")
    sink = cfg.notify.sink(args.sink)
    if sink is None:
        known = ", ".join(s.id for s in cfg.notify.sinks) or "none configured"
        return fail(f"no sink {args.sink!r} in notify.sinks ({known})")
    ok, text = send_test(cfg, args.sink, cfg.console.links_base)
    print(f"{sink.type} sink {args.sink!r}: {'delivered' if ok else 'FAILED'}: {text}")
    if not ok:
        print("vigil: the test alert was not delivered", file=sys.stderr)
    return 0 if ok else 1
