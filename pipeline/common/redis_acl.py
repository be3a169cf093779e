"""Redis 7 ACL users, one per component, derived from :class:`RedisKeys` (docs/redis.md).

Each component logs in as its own user (``redis.users.<component>``) and may touch only the key
patterns of what it owns or reads, with only the commands its code calls: no ``@admin``, no
``@dangerous`` (FLUSH*, CONFIG, KEYS, DEBUG, MODULE, ...). The patterns are built by calling the
same :class:`RedisKeys` methods the components use, with ``*`` for the variable parts, so a key
renamed there is renamed here. ``default`` is switched off.

| user | writes | reads |
|---|---|---|
| ingest | frames, live views, camera status, its model-registry worker status and drift | model registry (+ subscribes to its events) |
| alerts | alert hashes and streams, snapshots, source frames, checkpoints | frames |
| console | console keys (users, sessions, tokens, login counters, previews), alert hashes (reviews), the audit trail (also for the CLI) | alerts, snapshots, source frames, frames, live views, camera status, model registry |
| notifier | - (its state is in Kafka and memory) | alerts, snapshots, camera status |
| models | model registry (+ publishes its events) | - |
| recorder | the segment index, the recording holds, an alert's clip fields | - |

The console reads the segment index and the holds too.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from pipeline.common.redis import COMPONENTS, RedisKeys

ANY = "*"  # the variable part of a key (camera id, alert id, model name...)

# Every user: stay alive, pick the database (redis-py's CLIENT SETINFO on connect may be refused:
# it ignores the error).
_CONNECTION = ("ping", "select")
# redis-py's Script objects: EVALSHA, and SCRIPT EXISTS / LOAD when the server lacks the script.
# Commands a script calls are checked against the same user, so a script widens nothing.
_SCRIPTS = ("evalsha", "script|load", "script|exists")
_TRANSACTIONS = ("multi", "exec", "discard")


@dataclass(frozen=True, slots=True)
class AclUser:
    """What one component may do: read-write (``~``) and read-only (``%R~``) key patterns,
    pub/sub channels, and the write commands it calls beyond ``@read``."""

    name: str
    read_write: tuple[str, ...]
    read_only: tuple[str, ...]
    channels: tuple[str, ...]
    writes: tuple[str, ...]

    def rule(self, password_sha256: str) -> str:
        """The ``user ...`` line of an ACL file (the password only as its SHA-256)."""
        parts = ["user", self.name, "reset", "on", f"#{password_sha256}"]
        parts += [f"~{p}" for p in self.read_write]
        parts += [f"%R~{p}" for p in self.read_only]
        parts += [f"&{c}" for c in self.channels]
        # @read less @dangerous (KEYS, SORT_RO); then only the named write commands
        parts += ["-@all", "+@read", "-@dangerous"]
        parts += [f"+{c}" for c in (*_CONNECTION, *self.writes)]
        return " ".join(parts)


def glob_escape(text: str) -> str:
    """``text`` matched literally by a Redis glob (a prefix may hold ``*``, ``?``, ``[``...)."""
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)


def acl_users(prefix: str = "vigil:") -> dict[str, AclUser]:
    """The ACL of every component for keys under ``prefix`` (``redis.key_prefix``)."""
    if not prefix or any(c.isspace() or c in "\"'" for c in prefix):
        # an empty prefix would give patterns like `*` that match every component's keys;
        # blanks and quotes would split or quote the ACL file's tokens
        raise ValueError(
            f"redis.key_prefix {prefix!r}: ACL users need a non-empty prefix "
            "without blanks or quotes"
        )
    k = RedisKeys(glob_escape(prefix))
    frames = k.frame(ANY, ANY, ANY)  # type: ignore[arg-type]  # a pattern: '*' for the numbers
    checkpoints = k.checkpoint(ANY, ANY, ANY)  # type: ignore[arg-type]
    live, status = k.live(ANY), k.camera_status(ANY)
    models = k.models(ANY) + ANY
    model_events = k.models(ANY) + "events"  # ModelRegistry.channel
    alert_keys = (k.alerts_stream(), k.alerts_stream(ANY), k.alert(ANY))
    snapshots = (k.snapshot(ANY), k.source_frame(ANY))
    recordings = (
        k.recordings(ANY),
        k.recording(ANY, ANY),  # type: ignore[arg-type]  # a pattern: '*' for the start
        k.recording_holds(ANY),
        k.recording_hold(ANY, ANY),
    )
    users = [
        AclUser(
            "ingest",
            read_write=(frames, live, status, k.models(ANY) + "workers", k.models(ANY) + "drift"),
            read_only=(models,),
            channels=(model_events,),
            # frame store SET EX; live view HSET/EXPIRE and EVAL (HGET + DEL of its own keys);
            # hot reload SUBSCRIBE, report_worker / drift HSET
            writes=("set", "hset", "expire", "del", "eval", "subscribe", "unsubscribe"),
        ),
        AclUser(
            "alerts",
            read_write=(*alert_keys, *snapshots, checkpoints),
            read_only=(frames,),
            channels=(),
            # AlertStore's write script (HSET, HSETNX, SET EX, EXPIRE, XADD, TIME), marks
            # (HSET), checkpoints (SET)
            writes=("hset", "hsetnx", "set", "expire", "xadd", "time", *_SCRIPTS),
        ),
        AclUser(
            "console",
            # reviews write the alert hash (a script: EXISTS + HSET); everything else is read
            read_write=(k.console(ANY), k.alert(ANY), k.audit()),
            read_only=(
                k.alerts_stream(),
                k.alerts_stream(ANY),
                *snapshots,
                frames,
                live,
                status,
                models,
                *recordings,  # the timeline and clips read them
            ),
            channels=(),
            # users (HSETNX generation), sessions (MULTI), tokens and their listing (HDEL),
            # login-attempt windows (a script: ZREMRANGEBYSCORE, ZCARD, ZADD, PEXPIRE; ZREM),
            # previews (SET EX), the audit trail (XADD; also for the CLI), and the name of its
            # bounded pools' connections (CLIENT SETNAME, console.state)
            writes=(
                "hset",
                "hsetnx",
                "hdel",
                "set",
                "del",
                "expire",
                "pexpire",
                "incrby",
                "zadd",
                "zrem",
                "zremrangebyscore",
                "xadd",
                "client|setname",
                *_SCRIPTS,
                *_TRANSACTIONS,
            ),
        ),
        AclUser(
            "notifier",
            read_write=(),
            read_only=(*alert_keys, k.snapshot(ANY), status),
            channels=(),
            writes=(),
        ),
        AclUser(
            "models",
            read_write=(models,),
            read_only=(),
            channels=(model_events,),
            # versions (HSET, INCR: redis-py sends INCRBY), production pointer (WATCH/MULTI SET + history LPUSH/LTRIM),
            # decisions, the promote event
            writes=("hset", "incrby", "set", "lpush", "ltrim", "publish", "watch", "unwatch")
            + _TRANSACTIONS,
        ),
        AclUser(
            "recorder",
            read_write=(*recordings, k.alert(ANY)),
            read_only=(),
            channels=(),
            # the segment index (HSET + ZADD per segment; a rebuild UNLINKs a camera's index),
            # holds (MULTI HSET + ZADD; their expiry UNLINK + ZREM), an alert's clip fields (a
            # script: EXISTS + HSET)
            writes=("hset", "zadd", "zrem", "unlink", "del", *_SCRIPTS, *_TRANSACTIONS),
        ),
    ]
    out = {u.name: u for u in users}
    if tuple(out) != COMPONENTS:  # a component added to redis.py needs its user here
        raise RuntimeError(f"ACL users {tuple(out)} != components {COMPONENTS}")
    return out


def acl_file(passwords: dict[str, str], prefix: str = "vigil:") -> str:
    """An ACL file (``redis-server --aclfile``) with every component's user and ``default``
    switched off. ``passwords``: user -> password; only their SHA-256 goes into the file."""
    lines = ["user default off resetkeys resetchannels -@all"]
    for name, user in acl_users(prefix).items():
        try:
            password = passwords[name]
        except KeyError:
            raise ValueError(f"no password for Redis user {name!r}") from None
        if not password:
            raise ValueError(f"empty password for Redis user {name!r}")
        lines.append(user.rule(hashlib.sha256(password.encode()).hexdigest()))
    return "\n".join(lines) + "\n"
