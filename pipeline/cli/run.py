"""``vigil run``, ``vigil ingest``, ``vigil cameras ...`` and ``vigil camera-sim``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml
from pydantic import ValidationError

from pipeline.cli.support import config_from_args as _load
from pipeline.cli.support import fail as _fail
from pipeline.common.config import ConfigError, expand_env
from pipeline.ingest.camera import CameraSpec


def register(sub: argparse._SubParsersAction) -> None:
    from pipeline import camera_sim, demo

    p = sub.add_parser("run", help="registry sync + ingest + detection (+ alerts) in one process")
    _config_args(p)
    p.add_argument("--max-seconds", type=float, default=None, help="stop after this long")
    p.add_argument("--no-alerts", action="store_true", help="do not run the alert service here")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("ingest", help="one ingest worker (joins the worker group)")
    _config_args(p)
    p.add_argument("--max-seconds", type=float, default=None)
    p.add_argument("--worker-id", default=None)
    p.set_defaults(func=cmd_ingest)

    cams = sub.add_parser("cameras", help="connect / disconnect cameras live").add_subparsers(
        dest="cameras_command", required=True, metavar="ACTION"
    )
    p = cams.add_parser("add", help="add or update a camera")
    _config_args(p, required=False)
    p.add_argument("id")
    p.add_argument("url")
    p.add_argument("--fps", type=float, default=None, help="detection rate (frames/s)")
    p.set_defaults(func=cmd_cameras_add)
    p = cams.add_parser("remove", help="disconnect cameras")
    _config_args(p, required=False)
    p.add_argument("ids", nargs="+")
    p.set_defaults(func=cmd_cameras_remove)
    p = cams.add_parser("list", help="cameras in the registry")
    _config_args(p, required=False)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_cameras_list)
    p = cams.add_parser("apply", help="add/update every camera of a YAML file (cameras: [...])")
    _config_args(p, required=False)
    p.add_argument("-f", "--file", required=True)
    p.add_argument("--prune", action="store_true", help="also remove cameras not in the file")
    p.set_defaults(func=cmd_cameras_apply)

    camera_sim.register(sub)

    from pipeline import bench

    bench.register(sub)
    demo.register(sub)


def _config_args(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument("-c", "--config", required=required, help="vigil.yaml")
    p.add_argument(
        "--bootstrap", default=None, help="Kafka bootstrap servers (overrides the config)"
    )
    if required:
        p.add_argument("--metrics-port", type=int, default=None, help="Prometheus /metrics port")


def cmd_run(args: argparse.Namespace) -> int:
    from pipeline.app import run_ingest

    cfg = _load(args)
    services = []
    if not args.no_alerts:
        try:
            from alerts.service import alert_service_runner
        except ImportError:
            alert_service_runner = None
        if alert_service_runner is not None and cfg.alerts:
            services.append(alert_service_runner(cfg))
    return run_ingest(
        cfg,
        max_seconds=args.max_seconds,
        metrics_port=args.metrics_port,
        sync_cameras=True,
        extra_services=services,
    )


def cmd_ingest(args: argparse.Namespace) -> int:
    from pipeline.app import run_ingest

    cfg = _load(args)
    if args.worker_id:
        cfg.ingest.worker_id = args.worker_id
    return run_ingest(cfg, max_seconds=args.max_seconds, metrics_port=args.metrics_port)


def _spec(**kw) -> CameraSpec:
    try:
        return CameraSpec(**kw)
    except ValidationError as e:
        raise ConfigError(
            "; ".join(f"{'.'.join(map(str, x['loc']))}: {x['msg']}" for x in e.errors())
        ) from None


def cmd_cameras_add(args: argparse.Namespace) -> int:
    from pipeline.common.kafka import ensure_topics
    from pipeline.ingest.registry import put_cameras

    cfg = _load(args)
    spec = _spec(id=args.id, url=args.url, fps=args.fps)
    ensure_topics(cfg.kafka)
    put_cameras(cfg.kafka, [spec])
    print(f"added {spec}")
    return 0


def cmd_cameras_remove(args: argparse.Namespace) -> int:
    from pipeline.ingest.registry import read_registry, remove_cameras

    cfg = _load(args)
    try:
        known = read_registry(cfg.kafka)
        unknown = [cid for cid in args.ids if cid not in known]
        if unknown:
            return _fail(f"no such camera: {', '.join(unknown)} (see `vigil cameras list`)")
        remove_cameras(cfg.kafka, args.ids)
    except ValueError as e:
        return _fail(str(e))
    for cid in args.ids:
        print(f"removed camera {cid}")
    return 0


def cmd_cameras_list(args: argparse.Namespace) -> int:
    from pipeline.ingest.registry import read_registry

    cfg = _load(args)
    cams = read_registry(cfg.kafka)
    if args.json:
        for spec in cams.values():
            print(
                json.dumps(
                    {"id": spec.id, "url": spec.safe_url, "fps": spec.fps, "enabled": spec.enabled}
                )
            )
        return 0
    if not cams:
        print("no cameras")
    for spec in sorted(cams.values(), key=lambda s: s.id):
        fps = f"{spec.fps:g} fps" if spec.fps else "default fps"
        print(
            f"{spec.id:<24} {fps:<12} {'enabled' if spec.enabled else 'disabled':<9} {spec.safe_url}"
        )
    return 0


def load_camera_file(path: str) -> list[CameraSpec]:
    try:
        data = yaml.safe_load(expand_env(Path(path).read_text()))
    except FileNotFoundError:
        raise ConfigError(f"camera file {path} not found") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"malformed YAML in {path}: {e}") from None
    items = data.get("cameras") if isinstance(data, dict) else data
    if not isinstance(items, list):
        raise ConfigError(f"{path}: expected a list of cameras or a mapping with a 'cameras' list")
    specs = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise ConfigError(f"{path}: cameras.{i}: expected a mapping with id and url")
        try:
            specs.append(CameraSpec(**item))
        except ValidationError as e:
            errs = "; ".join(f"{'.'.join(map(str, x['loc']))}: {x['msg']}" for x in e.errors())
            raise ConfigError(f"{path}: cameras.{i} ({item.get('id', '?')}): {errs}") from None
    return specs


def cmd_cameras_apply(args: argparse.Namespace) -> int:
    from pipeline.common.kafka import ensure_topics
    from pipeline.ingest.registry import put_cameras, read_registry, remove_cameras

    cfg = _load(args)
    specs = load_camera_file(args.file)
    ensure_topics(cfg.kafka)
    put_cameras(cfg.kafka, specs)
    for s in specs:
        print(f"applied {s}")
    if args.prune:
        keep = {s.id for s in specs}
        gone = [cid for cid in read_registry(cfg.kafka) if cid not in keep]
        if gone:
            remove_cameras(cfg.kafka, gone)
            for cid in gone:
                print(f"removed camera {cid}")
    return 0
