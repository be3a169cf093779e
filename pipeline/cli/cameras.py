"""``vigil cameras add | remove | list | apply``: connect and disconnect cameras live."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Collection
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import yaml
from pydantic import ValidationError

from pipeline.cameras.registry import put_cameras, read_registry, remove_cameras
from pipeline.cameras.spec import CameraSpec, mask_url
from pipeline.cli.support import audit, config_args, config_from_args, fail, validation_errors
from pipeline.common.config import ConfigError, expand_env_values
from pipeline.common.endpoints import Endpoint, service_endpoints
from pipeline.common.kafka import ensure_topics
from pipeline.ingest.capture import CameraUnavailable, probe_camera


def register(sub: argparse._SubParsersAction) -> None:
    cams = sub.add_parser("cameras", help="connect / disconnect cameras live").add_subparsers(
        dest="cameras_command", required=True, metavar="ACTION"
    )
    p = cams.add_parser(
        "add",
        help="add or update a camera",
        description="Add or update a camera. A password on the command line is visible to other "
        "users (ps) and stays in the shell history: give the URL as '-' (read from stdin) or "
        "with --url-env, or the password alone with --password-env / --password-stdin.",
    )
    config_args(p, required=False)
    p.add_argument("id")
    p.add_argument("url", nargs="?", help="stream URL; '-': read it from stdin")
    p.add_argument("--url-env", metavar="VAR", help="take the URL from environment variable VAR")
    p.add_argument(
        "--password-env",
        metavar="VAR",
        help="put the password of environment variable VAR in the URL",
    )
    p.add_argument(
        "--password-stdin", action="store_true", help="read the password from stdin (first line)"
    )
    p.add_argument("--fps", type=float, default=None, help="detection rate (frames/s)")
    p.add_argument(
        "--record-url",
        metavar="URL",
        default=None,
        help="the main stream to record (docs/recordings.md); default: the recording is of the url",
    )
    p.add_argument(
        "--record", action="store_true", help="record this camera (record.enabled: true)"
    )
    p.add_argument(
        "--check",
        action="store_true",
        help="open the stream once first: print its resolution and fps, or the error (not added)",
    )
    p.add_argument("--check-timeout", type=float, default=10.0, help="seconds (default 10)")
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


def _spec(forbidden: Collection[Endpoint], **kw) -> CameraSpec:
    """A camera from the command line: local files allowed (footage replay), never one of
    Vigil's own services as its host."""
    try:
        return CameraSpec.checked(kw, forbidden=forbidden)
    except ValidationError as e:
        raise ConfigError(validation_errors(e)) from None


def _stdin_line(what: str) -> str:
    line = sys.stdin.readline().strip()
    if not line:
        raise ConfigError(f"no {what} on stdin")
    return line


def camera_url(args: argparse.Namespace) -> str:
    """The URL from the argument, stdin or the environment, with the password put in when it
    comes separately. Warns (stderr) when a password was typed on the command line."""
    sources = [s for s in (args.url is not None, bool(args.url_env)) if s]
    if len(sources) != 1:
        raise ConfigError("give the camera URL once: as an argument, '-' (stdin) or --url-env VAR")
    if args.url_env:
        url = os.environ.get(args.url_env)
        if not url:
            raise ConfigError(f"--url-env: environment variable {args.url_env} is not set")
    elif args.url == "-":
        url = _stdin_line("camera URL")
    else:
        url = args.url
        if _password_of(url) is not None:
            print(
                "vigil: warning: the camera password is on the command line (visible in ps and "
                "the shell history); use '-' or --url-env, or --password-env/--password-stdin",
                file=sys.stderr,
            )
    password = None
    if args.password_env:
        password = os.environ.get(args.password_env)
        if password is None:
            raise ConfigError(
                f"--password-env: environment variable {args.password_env} is not set"
            )
    elif args.password_stdin:
        password = _stdin_line("password")
    if password is not None:
        url = with_password(url, password)
    return url


def _password_of(url: str) -> str | None:
    try:
        return urlsplit(url).password
    except ValueError:
        return None


def with_password(url: str, password: str) -> str:
    """``url`` with ``password`` for its user (the URL must name the user: rtsp://admin@cam/...)."""
    parts = urlsplit(url)
    if not parts.username:
        raise ConfigError(
            f"{mask_url(url)}: a password needs a user in the URL (rtsp://USER@host/...)"
        )
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    if parts.port:
        host = f"{host}:{parts.port}"
    netloc = f"{parts.username}:{quote(password, safe='')}@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def cmd_add(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    if args.record_url is not None and _password_of(args.record_url) is not None:
        print(
            "vigil: warning: the record_url password is on the command line (visible in ps and "
            "the shell history); `vigil cameras apply -f FILE` keeps it off the command line",
            file=sys.stderr,
        )
    spec = _spec(
        service_endpoints(cfg),
        id=args.id,
        url=camera_url(args),
        fps=args.fps,
        record_url=args.record_url,
        record={"enabled": args.record},
    )
    if args.check:
        try:
            width, height, fps = probe_camera(spec.url, args.check_timeout, args.check_timeout)
        except CameraUnavailable as e:
            return fail(f"camera {spec.id}: {e}; not added")
        rate = f"{fps:g} fps" if fps else "fps not reported"
        print(f"checked {spec}: {width}x{height}, {rate}")
    ensure_topics(cfg.kafka)
    put_cameras(cfg.kafka, [spec])
    print(f"added {spec}")
    audit(cfg, "camera.add", spec.id, spec.model_dump(mode="json"))
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
        audit(cfg, "camera.delete", cid)
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


def load_camera_file(path: str, forbidden: Collection[Endpoint] = ()) -> list[CameraSpec]:
    try:
        data = expand_env_values(yaml.safe_load(Path(path).read_text()))
    except FileNotFoundError:
        raise ConfigError(f"camera file {path} not found") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"malformed YAML in {path}: {e}") from None
    except ConfigError as e:
        raise ConfigError(f"camera file {path}: {e}") from None
    items = data.get("cameras") if isinstance(data, dict) else data
    if not isinstance(items, list):
        raise ConfigError(f"{path}: expected a list of cameras or a mapping with a 'cameras' list")
    specs = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise ConfigError(f"{path}: cameras.{i}: expected a mapping with id and url")
        try:
            specs.append(CameraSpec.checked(item, forbidden=forbidden))
        except ValidationError as e:
            errs = validation_errors(e)
            raise ConfigError(f"{path}: cameras.{i} ({item.get('id', '?')}): {errs}") from None
    return specs


def cmd_apply(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    specs = load_camera_file(args.file, service_endpoints(cfg))
    ensure_topics(cfg.kafka)
    put_cameras(cfg.kafka, specs)
    for s in specs:
        print(f"applied {s}")
        audit(cfg, "camera.add", s.id, {**s.model_dump(mode="json"), "file": args.file})
    if args.prune:
        keep = {s.id for s in specs}
        gone = [cid for cid in read_registry(cfg.kafka) if cid not in keep]
        if gone:
            remove_cameras(cfg.kafka, gone)
            for cid in gone:
                print(f"removed camera {cid}")
                audit(cfg, "camera.delete", cid, {"pruned_by": args.file})
    return 0
