"""``vigil cameras add | remove | list | apply``: connect and disconnect cameras live."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml
from pydantic import ValidationError

from pipeline.cli.support import config_args, config_from_args, fail, validation_errors
from pipeline.common.config import ConfigError, expand_env
from pipeline.common.kafka import ensure_topics
from pipeline.ingest.camera import CameraSpec
from pipeline.ingest.registry import put_cameras, read_registry, remove_cameras


def register(sub: argparse._SubParsersAction) -> None:
    cams = sub.add_parser("cameras", help="connect / disconnect cameras live").add_subparsers(
        dest="cameras_command", required=True, metavar="ACTION"
    )
    p = cams.add_parser("add", help="add or update a camera")
    config_args(p, required=False)
    p.add_argument("id")
    p.add_argument("url")
    p.add_argument("--fps", type=float, default=None, help="detection rate (frames/s)")
    p.set_defaults(func=cmd_add)
    p = cams.add_parser("remove", help="disconnect cameras")
    config_args(p, required=False)
    p.add_argument("ids", nargs="+")
    p.set_defaults(func=cmd_remove)
    p = cams.add_parser("list", help="cameras in the registry")
    config_args(p, required=False)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_list)
    p = cams.add_parser("apply", help="add/update every camera of a YAML file (cameras: [...])")
    config_args(p, required=False)
    p.add_argument("-f", "--file", required=True)
    p.add_argument("--prune", action="store_true", help="also remove cameras not in the file")
    p.set_defaults(func=cmd_apply)


def _spec(**kw) -> CameraSpec:
    try:
        return CameraSpec(**kw)
    except ValidationError as e:
        raise ConfigError(validation_errors(e)) from None


def cmd_add(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    spec = _spec(id=args.id, url=args.url, fps=args.fps)
    ensure_topics(cfg.kafka)
    put_cameras(cfg.kafka, [spec])
    print(f"added {spec}")
    return 0


def cmd_remove(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    try:
        known = read_registry(cfg.kafka)
        unknown = [cid for cid in args.ids if cid not in known]
        if unknown:
            return fail(f"no such camera: {', '.join(unknown)} (see `vigil cameras list`)")
        remove_cameras(cfg.kafka, args.ids)
    except ValueError as e:
        return fail(str(e))
    for cid in args.ids:
        print(f"removed camera {cid}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
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
            errs = validation_errors(e)
            raise ConfigError(f"{path}: cameras.{i} ({item.get('id', '?')}): {errs}") from None
    return specs


def cmd_apply(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
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
