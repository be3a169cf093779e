"""``vigil alerts serve | tail | list | show | snapshot | bench | bench-preview``.

The two benches are the bench's own modules (:data:`BENCHES`), loaded by name like the groups of
``pipeline/cli/__init__.py``: no production module imports ``pipeline.bench`` (an import
contract in pyproject.toml); the CLI is the one place that reaches the bench.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import redis

from alerts.config import RulesError, parse_alerts_config
from alerts.service import AlertService
from alerts.store import AlertStore
from alerts.subscribe import SubscribeError, subscribe
from pipeline.cli.support import config_from_args, fail
from pipeline.common.config import ConfigError
from pipeline.common.lifecycle import install_signal_handlers
from pipeline.config import VigilConfig
from pipeline.ingest import metrics

# The modules registering ``vigil alerts bench`` and ``vigil alerts bench-preview``.
BENCHES = ("pipeline.bench.alert_service", "pipeline.bench.rule_preview")


def register(sub: argparse._SubParsersAction) -> None:
    alerts = sub.add_parser("alerts", help="the alert service and alert subscribers")
    asub = alerts.add_subparsers(dest="alerts_command", required=True, metavar="ACTION")
    for name in BENCHES:
        importlib.import_module(name).register(asub)

    p = asub.add_parser("serve", help="run the alert service (joins its consumer group)")
    _common(p, required=True)
    p.add_argument("--metrics-port", type=int, default=None, help="Prometheus /metrics port")
    p.add_argument("--instance-id", default=None, help="static group member id (fast restarts)")
    p.add_argument("--max-seconds", type=float, default=None, help="stop after this long")
    p.set_defaults(func=cmd_serve)

    p = asub.add_parser("tail", help="print alerts as they arrive")
    _common(p)
    p.add_argument("--camera", default=None, help="only this camera's alerts")
    p.add_argument("--rule", default=None, help="only this rule's alerts")
    p.add_argument("--from-beginning", action="store_true", help="start at the oldest alert kept")
    p.add_argument("--max", type=int, default=None, metavar="N", help="exit after N alerts")
    p.add_argument(
        "--timeout", type=float, default=None, metavar="S", help="exit after S s without an alert"
    )
    p.add_argument("--json", action="store_true", help="one alert.v1 JSON object per line")
    p.add_argument(
        "--backend", choices=["kafka", "redis"], default="kafka", help="alert source (kafka)"
    )
    p.set_defaults(func=cmd_tail)

    p = asub.add_parser("list", help="latest alerts stored in Redis")
    _common(p)
    p.add_argument("--camera", default=None)
    p.add_argument("--max", type=int, default=20, metavar="N")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_list)

    p = asub.add_parser("show", help="one alert from Redis")
    _common(p)
    p.add_argument("id")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_show)

    p = asub.add_parser("snapshot", help="save an alert's snapshot (JPEG)")
    _common(p)
    p.add_argument("id")
    p.add_argument("-o", "--output", default=None, help="file to write (default <id>.jpg)")
    p.set_defaults(func=cmd_snapshot)


def _common(p: argparse.ArgumentParser, required: bool = False) -> None:
    p.add_argument("-c", "--config", required=required, help="vigil.yaml")
    p.add_argument("--bootstrap", default=None, help="Kafka bootstrap servers (overrides config)")


def cmd_serve(args: argparse.Namespace) -> int:
    cfg = config_from_args(args, "alerts")
    try:
        acfg = parse_alerts_config(cfg.alerts)
    except RulesError as e:
        raise ConfigError(f"invalid alerts config in {args.config}:\n{e}") from None
    if args.instance_id:
        acfg.service.instance_id = args.instance_id
    if not acfg.rules:
        print(
            "vigil: warning: no rules configured (alerts.rules); no alert will fire",
            file=sys.stderr,
        )
    stop = threading.Event()
    install_signal_handlers(stop)
    metrics.serve(args.metrics_port)
    AlertService(cfg, acfg).run(stop, max_seconds=args.max_seconds)
    return 0


def _store(cfg: VigilConfig) -> AlertStore:
    return AlertStore(cfg.redis)


def _redis_guard(fn):
    """Turn Redis connection problems into a one-line error (exit 2); the URL is never shown."""

    def wrapped(args: argparse.Namespace) -> int:
        try:
            return fn(args)
        except redis.RedisError as e:
            return fail(f"Redis error ({type(e).__name__}): {_scrub(args, e)}")

    wrapped.__name__ = fn.__name__
    return wrapped


def _scrub(args: argparse.Namespace, e: Exception) -> str:
    text = str(e)
    try:
        pw = config_from_args(args, "notifier").redis.password_text()
    except Exception:
        pw = None
    return text.replace(pw, "***") if pw else text


def cmd_tail(args: argparse.Namespace) -> int:
    cfg = config_from_args(args, "notifier")  # reads alerts only: the notifier's Redis user
    t = cfg.kafka.topics
    source = (
        f"{t.alerts} (clips: {t.clips}, reviews: {t.reviews})"
        if args.backend == "kafka"
        else "Redis"
    )

    def ready() -> None:
        what = " ".join(
            x
            for x in (
                f"camera {args.camera}" if args.camera else "",
                f"rule {args.rule}" if args.rule else "",
            )
            if x
        )
        print(
            f"tailing alerts from {source}{' for ' + what if what else ''}",
            file=sys.stderr,
            flush=True,
        )

    n = 0
    try:
        for alert in subscribe(
            cfg,
            camera=args.camera,
            rule=args.rule,
            from_beginning=args.from_beginning,
            backend=args.backend,
            timeout_s=args.timeout,
            on_ready=ready,
        ):
            print(
                json.dumps(alert, ensure_ascii=False) if args.json else format_alert(alert),
                flush=True,
            )
            n += 1
            if args.max is not None and n >= args.max:
                break
    except SubscribeError as e:
        return fail(str(e))
    except BrokenPipeError:
        return 0
    if args.max is not None and n < args.max:
        return fail(
            f"timed out after {args.timeout:g} s without an alert ({n} of {args.max} received)"
        )
    return 0


def _ts(v: Any) -> str:
    if not isinstance(v, int | float):
        return "-"
    return datetime.fromtimestamp(v, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def format_alert(a: dict[str, Any]) -> str:
    """One line: time, status, severity, camera, rule, subject, id."""
    subject = a.get("label") or "-"
    if a.get("track_id") is not None:
        subject += f"#{a['track_id']}"
    if a.get("count") is not None:
        subject += f" n={a['count']}"
    when = (
        a.get("updated_at")
        if a.get("status") == "started"
        else a.get("ended_at") or a.get("updated_at")
    )
    return (
        f"{_ts(when)}  {str(a.get('status')):<7}  {str(a.get('severity')):<8}  "
        f"{a.get('camera_id')}  {a.get('rule_id')}  {subject}  {a.get('id')}"
    )


@_redis_guard
def cmd_list(args: argparse.Namespace) -> int:
    cfg = config_from_args(args, "notifier")
    items = _store(cfg).recent(args.camera, count=max(1, args.max))
    for a in reversed(items):
        print(json.dumps(a, ensure_ascii=False) if args.json else format_alert(a))
    if not items and not args.json:
        print("no alerts", file=sys.stderr)
    return 0


@_redis_guard
def cmd_show(args: argparse.Namespace) -> int:
    cfg = config_from_args(args, "notifier")
    alert = _store(cfg).get_alert(args.id)
    if alert is None:
        return fail(f"no alert with id {args.id!r} in Redis (prefix {cfg.redis.key_prefix!r})")
    if args.json:
        print(json.dumps(alert, ensure_ascii=False))
        return 0
    width = max(len(k) for k in alert)
    for k in sorted(alert):
        v = alert[k]
        if k in ("started_at", "ended_at", "updated_at", "written_started", "written_ended"):
            v = f"{v} ({_ts(v)})" if v is not None else "-"
        elif isinstance(v, list | dict):
            v = json.dumps(v)
        elif v is None:
            v = "-"
        print(f"{k:<{width}}  {v}")
    if alert.get("snapshot"):
        print(f"\nsnapshot: vigil alerts snapshot {args.id} -o {args.id}.jpg")
    return 0


@_redis_guard
def cmd_snapshot(args: argparse.Namespace) -> int:
    cfg = config_from_args(args, "notifier")
    store = _store(cfg)
    jpeg = store.get_snapshot(args.id)
    if jpeg is None:
        alert = store.get_alert(args.id)
        if alert is None:
            return fail(f"no alert with id {args.id!r} in Redis (prefix {cfg.redis.key_prefix!r})")
        if not alert.get("snapshot"):
            return fail(f"alert {args.id} has no snapshot (its frame had expired from Redis)")
        return fail(
            f"the snapshot of alert {args.id} has expired (kept {cfg.redis.snapshot_ttl_s} s)"
        )
    out = Path(args.output or f"{args.id}.jpg")
    try:
        out.write_bytes(jpeg)
    except OSError as e:
        return fail(f"cannot write {out}: {e}")
    print(f"wrote {out} ({len(jpeg)} bytes)")
    return 0
