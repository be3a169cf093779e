"""``vigil console`` (the web console) and ``vigil users add | list | remove | token | tokens |
revoke-token``."""

from __future__ import annotations

import argparse
import getpass
import sys
import threading
from datetime import UTC, datetime

from pipeline.cli.support import audit, config_args, config_from_args, fail
from pipeline.common.errors import UserError
from pipeline.common.lifecycle import install_signal_handlers
from pipeline.config import VigilConfig
from pipeline.console.auth import ROLES, AuthError, UserStore
from pipeline.console.server import ConsoleServer


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "console",
        help="the web console and its HTTP API (docs/console.md)",
        description="Serve the Vigil Console (OpenAPI at /docs). Binds to 127.0.0.1 unless told "
        "otherwise; create a user first with `vigil users add NAME --role admin`.",
    )
    config_args(p, required=False)  # its own /metrics: no --metrics-port
    p.add_argument("--host", default=None, help="bind address (default console.host)")
    p.add_argument("--port", type=int, default=None, help="port (default console.port)")
    p.set_defaults(func=cmd_console)

    users = sub.add_parser("users", help="console users and API tokens").add_subparsers(
        dest="users_command", required=True, metavar="ACTION"
    )
    p = users.add_parser("add", help="add a user, or set a user's password and role")
    config_args(p, required=False)
    p.add_argument("name")
    p.add_argument("--role", required=True, choices=ROLES)
    p.add_argument(
        "--password-stdin", action="store_true", help="read the password from stdin (first line)"
    )
    p.set_defaults(func=cmd_users_add)
    p = users.add_parser("list", help="users and their roles")
    config_args(p, required=False)
    p.set_defaults(func=cmd_users_list)
    p = users.add_parser("remove", help="remove a user (their sessions and tokens stop working)")
    config_args(p, required=False)
    p.add_argument("name")
    p.set_defaults(func=cmd_users_remove)
    p = users.add_parser("token", help="make an API token for a user (printed once)")
    config_args(p, required=False)
    p.add_argument("name")
    p.add_argument("--label", default="script", help="what the token is for")
    p.set_defaults(func=cmd_users_token)
    p = users.add_parser("tokens", help="a user's API tokens: id, created, expires, last used")
    config_args(p, required=False)
    p.add_argument("name")
    p.set_defaults(func=cmd_users_tokens)
    p = users.add_parser("revoke-token", help="revoke one of a user's API tokens by its id")
    config_args(p, required=False)
    p.add_argument("name")
    p.add_argument("token_id", metavar="ID", help="the id `vigil users tokens NAME` lists")
    p.set_defaults(func=cmd_users_revoke_token)


def start_console(cfg: VigilConfig, host: str | None = None, port: int | None = None):
    try:
        return ConsoleServer(cfg, host, port).start()
    except (OSError, RuntimeError) as e:
        raise UserError(f"console: {e}") from None


def cmd_console(args: argparse.Namespace) -> int:
    cfg = config_from_args(args, "console")
    stop = threading.Event()
    install_signal_handlers(stop)
    server = start_console(cfg, args.host, args.port)
    print(f"console: {server.url} (API docs at {server.url}docs)", flush=True)
    server.run_until_stopped(stop)
    return 0


def _password(args: argparse.Namespace) -> str:
    if args.password_stdin or not sys.stdin.isatty():
        line = sys.stdin.readline().rstrip("\n")
        if not line:
            raise AuthError("no password on stdin")
        return line
    first = getpass.getpass(f"password for {args.name}: ")
    if first != getpass.getpass("again: "):
        raise AuthError("the two passwords differ")
    return first


def cmd_users_add(args: argparse.Namespace) -> int:
    cfg = config_from_args(args, "console")
    try:
        UserStore(cfg.redis).add(args.name, _password(args), args.role)
    except AuthError as e:
        return fail(e)
    print(f"user {args.name}: role {args.role} (earlier sessions and tokens no longer work)")
    audit(cfg, "user.add", args.name, {"role": args.role})
    return 0


def cmd_users_list(args: argparse.Namespace) -> int:
    users = UserStore(config_from_args(args, "console").redis).list()
    if not users:
        print("no users (vigil users add NAME --role admin)")
    for u in users:
        print(f"{u['user']:<24} {u['role']}")
    return 0


def cmd_users_remove(args: argparse.Namespace) -> int:
    cfg = config_from_args(args, "console")
    try:
        removed = UserStore(cfg.redis).remove(args.name)
    except AuthError as e:
        return fail(e)
    if not removed:
        return fail(f"no user {args.name!r}")
    print(f"removed user {args.name}: its sessions and tokens no longer work")
    audit(cfg, "user.remove", args.name)
    return 0


def cmd_users_token(args: argparse.Namespace) -> int:
    cfg = config_from_args(args, "console")
    try:
        token, info = UserStore(cfg.redis).new_token(args.name, args.label, cfg.console.token_ttl_s)
    except AuthError as e:
        return fail(e)
    print(token)  # alone on stdout, for scripts; shown this once
    print(
        f"token {info['id']} of {args.name}: expires {_when(info['expires_at'])}", file=sys.stderr
    )
    audit(cfg, "token.create", args.name, {"name": args.label, "id": info["id"]})
    return 0


def _when(ts: object) -> str:
    if not isinstance(ts, float | int):
        return "never"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def cmd_users_tokens(args: argparse.Namespace) -> int:
    try:
        tokens = UserStore(config_from_args(args, "console").redis).tokens(args.name)
    except AuthError as e:
        return fail(e)
    if not tokens:
        print(f"no API tokens for {args.name} (vigil users token {args.name})")
        return 0
    print(f"{'ID':<14} {'NAME':<20} {'CREATED':<21} {'EXPIRES':<21} LAST USED")
    for t in tokens:
        print(
            f"{t['id']!s:<14} {t['name']!s:<20} {_when(t['created_at']):<21} "
            f"{_when(t['expires_at']):<21} {_when(t['last_used_at'])}"
        )
    return 0


def cmd_users_revoke_token(args: argparse.Namespace) -> int:
    cfg = config_from_args(args, "console")
    try:
        found = UserStore(cfg.redis).revoke_token(args.name, args.token_id)
    except AuthError as e:
        return fail(e)
    if not found:
        return fail(f"user {args.name!r} has no token {args.token_id!r} (vigil users tokens)")
    print(f"revoked token {args.token_id} of {args.name}")
    audit(cfg, "token.revoke", args.name, {"id": args.token_id})
    return 0
