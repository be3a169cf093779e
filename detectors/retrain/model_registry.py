"""Model registry: versions with metadata in Redis, files in a folder or any fsspec location.

Keys (``<prefix>`` is ``redis.key_prefix``, ``<name>`` is ``models.name``)::

    <prefix>models:<name>:versions    hash  version -> JSON metadata
    <prefix>models:<name>:seq         counter for version numbers (v1, v2, ...)
    <prefix>models:<name>:production  string: the production version
    <prefix>models:<name>:history     list (newest first) of promotions and rollbacks
    <prefix>models:<name>:decisions   list (newest first) of retrain promotion decisions
    <prefix>models:<name>:workers     hash  worker id -> JSON {version, status, error, at}
    <prefix>models:<name>:drift       hash  camera -> JSON live drift profile
    <prefix>models:<name>:events      pub/sub channel: {"event": "promote", "version": ...}

A version is the first 12 hex digits of the weights file's sha256: the same string the detector
stamps on every detection message (``model.version``), so a message names the exact file.
Files live at ``<models.store>/<name>/<version>/model.pt`` (plus the model card); a worker copies
the file into its cache and checks the sha256 before loading it.

Anyone who can write to Redis can write these keys, so what is read back is not trusted: a
version must match :data:`VERSION_PATTERN` (it becomes part of file names), the file is always
looked up in the configured store (an entry's ``uri`` is never followed) and must have the
entry's sha256, and a worker loads only an entry whose ``signature`` (:mod:`.signing`, made by
:meth:`ModelRegistry.promote`) matches its key. Nothing read from Redis is ``${VAR}``-expanded.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from pathlib import Path
from typing import Any

import redis

from detectors.loading import cache_dir, file_sha256, load_model, safe_loading
from detectors.retrain import signing
from detectors.retrain.config import ModelsConfig
from detectors.retrain.model_store import is_url, join_uri, local_path, store_get, store_put
from detectors.retrain.model_version import (
    SHA256,
    VERSION_PATTERN,
    ModelRefused,
    ModelVersion,
    RegistryError,
    check_version,
    precision_summary,
    shown,
)
from pipeline.common.redis import RedisConfig, RedisKeys, redis_client

# The entry and the file store are in their own modules; their names are imported from here too.
__all__ = [
    "VERSION_PATTERN",
    "ModelRefused",
    "ModelRegistry",
    "ModelVersion",
    "RegistryError",
    "check_version",
    "format_versions",
    "precision_summary",
    "shown",
    "store_get",
    "store_put",
]

log = logging.getLogger(__name__)


def _refused(e: redis.RedisError) -> RegistryError:
    """Redis's ACL said no: not an outage, so say who may (docs/redis.md, ACL users)."""
    return RegistryError(
        f"model registry: refused by Redis ({e}); only the retraining CLI's Redis user "
        "(redis.users.models) writes the registry"
    )


# --------------------------------------------------------------------------------------------


class ModelRegistry:
    def __init__(
        self, redis_cfg: RedisConfig, models_cfg: ModelsConfig | None = None, client=None
    ) -> None:
        self.cfg = models_cfg or ModelsConfig()
        self.client = client or redis_client(redis_cfg)
        self.base = RedisKeys(redis_cfg.key_prefix).models(self.cfg.name)
        self.store = self.cfg.store

    # -- keys ------------------------------------------------------------------------------
    def key(self, what: str) -> str:
        return self.base + what

    def file_uri(self, version: str, filename: str = "model.pt") -> str:
        """Where a version's file lives in this registry's store (never an entry's ``uri``)."""
        uri = join_uri(self.store, self.cfg.name, check_version(version), filename)
        if not is_url(self.store):
            root = local_path(self.store).resolve()
            if not local_path(uri).resolve().is_relative_to(root):  # a symlink leading out
                raise ModelRefused(
                    "outside_store", f"model {version}: its file resolves outside the store {root}"
                )
        return uri

    # -- signatures ------------------------------------------------------------------------
    def signing_key(self, *, create: bool = False) -> bytes:
        """The key of ``models.signing_key_file`` (:class:`signing.SigningKeyError` if unusable)."""
        return signing.load_key(self.cfg.signing_key_file, create=create)

    def verify(self, mv: ModelVersion, key: bytes | None = None) -> ModelVersion:
        """``mv`` if a promotion signed it with this registry's key, else :class:`ModelRefused`."""
        if key is None:
            try:
                key = self.signing_key()
            except signing.SigningKeyError as e:
                raise ModelRefused("no_key", str(e)) from None
        if not mv.signature:
            raise ModelRefused(
                "unsigned",
                f"model {mv.label} is not signed: promote it with `vigil models promote "
                f"{mv.version}` (or as admin in the console)",
            )
        if not signing.verify(key, self.cfg.name, mv.version, mv.sha256, mv.signature):
            raise ModelRefused(
                "bad_signature",
                f"model {mv.label}: signature does not match models.signing_key_file "
                "(tampered entry, or another key); promote it again",
            )
        return mv

    def production_signed(self) -> ModelVersion | None:
        """The production entry, checked (:meth:`verify`); None when there is none."""
        mv = self.production()
        return self.verify(mv) if mv is not None else None

    @property
    def channel(self) -> str:
        return self.key("events")

    def _call(self, fn, *args):
        try:
            return fn(*args)
        except redis.exceptions.NoPermissionError as e:
            raise _refused(e) from None
        except redis.RedisError as e:
            raise RegistryError(f"model registry (Redis) unavailable: {e}") from None

    # -- versions --------------------------------------------------------------------------
    def register(
        self,
        weights: str | Path,
        *,
        metrics: dict[str, Any] | None = None,
        profile: dict[str, Any] | None = None,
        train: dict[str, Any] | None = None,
        card: str | Path | None = None,
        notes: str = "",
        verify: bool = True,
    ) -> ModelVersion:
        """Copy ``weights`` into the store and record a version (existing file: same version).

        With ``verify`` the file must load as a detection model first (:class:`WeightsError`).
        """
        path = Path(weights).expanduser()
        if not path.is_file():
            raise RegistryError(f"weights file {path} not found")
        classes: dict[str, str] = {}
        if verify:
            with safe_loading():  # weights from outside: tensors and known layers only
                model = load_model(str(path), device="cpu")
            classes = {str(k): str(v) for k, v in dict(model.names).items()}
        sha = file_sha256(path)
        version = sha[:12]
        existing = self.get(version)
        if existing is not None:
            changed = False
            for attr, value in (("metrics", metrics), ("profile", profile), ("train", train)):
                if value:
                    setattr(existing, attr, value)
                    changed = True
            if changed:
                self._call(self.client.hset, self.key("versions"), version, existing.to_json())
            return existing
        uri = self.file_uri(version)
        store_put(path, uri)
        card_uri = None
        if card is not None and Path(card).is_file():
            card_uri = self.file_uri(version, "MODEL_CARD.md")
            store_put(Path(card), card_uri)
        number = int(self._call(self.client.incr, self.key("seq")))
        mv = ModelVersion(
            version=version,
            number=number,
            name=self.cfg.name,
            uri=uri,
            sha256=sha,
            created_at=time.time(),
            source=str(path),
            classes=classes,
            metrics=metrics or {},
            profile=profile or {},
            card_uri=card_uri,
            train=train or {},
            notes=notes,
        )
        self._call(self.client.hset, self.key("versions"), version, mv.to_json())
        return mv

    def attach_card(self, version: str, card: str | Path) -> None:
        """Store a model card next to the version's weights."""
        mv = self.require(version)
        mv.card_uri = self.file_uri(mv.version, "MODEL_CARD.md")
        store_put(Path(card), mv.card_uri)
        self._call(self.client.hset, self.key("versions"), mv.version, mv.to_json())

    def record_precision_gate(self, gate: dict[str, Any]) -> ModelVersion | None:
        """Keep a precision gate's figures on the version of the weights it judged.

        ``gate`` is a gate record (``detectors.quantize.GateRecord.to_dict()``); the version is
        found by the weights' sha256. None when those weights are not a registered version.
        """
        sha = str(gate.get("weights_sha256") or "")
        mv = self.get(sha[:12]) if sha else None
        if mv is None or mv.sha256 != sha:
            return None
        mv.precision[f"{gate.get('imgsz')}@{gate.get('machine')}"] = gate
        self._call(self.client.hset, self.key("versions"), mv.version, mv.to_json())
        return mv

    def get(self, ref: str | None) -> ModelVersion | None:
        """A version by id, unique id prefix, or ``vN``; None when unknown.

        :class:`ModelRefused` when the entry under ``ref`` is malformed (bad version string...).
        """
        if not ref:
            return None
        raw = self._call(self.client.hget, self.key("versions"), ref)
        if raw is not None:
            return ModelVersion.from_json(raw)
        matches = [
            v
            for v in self.list()
            if v.version.startswith(ref) or (ref.startswith("v") and ref[1:] == str(v.number))
        ]
        return matches[0] if len(matches) == 1 else None

    def require(self, ref: str) -> ModelVersion:
        mv = self.get(ref)
        if mv is None:
            raise RegistryError(
                f"no model version {ref!r} in the registry; `vigil models list` shows them"
            )
        return mv

    def list(self) -> list[ModelVersion]:
        """Well-formed versions by number; malformed entries are left out and logged once."""
        raw = self._call(self.client.hgetall, self.key("versions")) or {}
        out = []
        for k, v in raw.items():
            try:
                mv = ModelVersion.from_json(v)
            except ModelRefused as e:
                _warn_once(f"{self.key('versions')} {shown(k)}", str(e))
                continue
            out.append(mv)
        return sorted(out, key=lambda m: m.number)

    # -- production ------------------------------------------------------------------------
    def production_version(self) -> str | None:
        raw = self._call(self.client.get, self.key("production"))
        return raw.decode(errors="replace") if isinstance(raw, bytes) else raw

    def production(self) -> ModelVersion | None:
        """The production entry (exact version, no prefix matching); None when there is none."""
        ref = self.production_version()
        if ref is None:
            return None
        check_version(ref)
        raw = self._call(self.client.hget, self.key("versions"), ref)
        if raw is None:
            return None
        mv = ModelVersion.from_json(raw)
        if mv.version != ref:
            raise ModelRefused(
                "bad_entry", f"registry entry {shown(ref)} names another version {mv.version}"
            )
        return mv

    def history(self, limit: int = 50) -> list[dict[str, Any]]:
        raw = self._call(self.client.lrange, self.key("history"), 0, limit - 1)
        return [json.loads(x) for x in raw]

    def _sign(self, mv: ModelVersion) -> ModelVersion:
        """Sign ``mv`` with the key (created on first use) and store the signature."""
        if not self.cfg.signing_key_file:
            raise RegistryError(
                "models.signing_key_file is not set: set it (workers need the same file) "
                "to promote models"
            )
        if mv.name != self.cfg.name:
            raise RegistryError(f"model {mv.label} belongs to registry {shown(mv.name)}")
        try:
            key = self.signing_key(create=True)
        except signing.SigningKeyError as e:
            raise RegistryError(str(e)) from None
        mv.signature = signing.sign(key, self.cfg.name, mv.version, mv.sha256)
        self._call(self.client.hset, self.key("versions"), mv.version, mv.to_json())
        return mv

    def _set_production(self, mv: ModelVersion, entry: dict[str, Any]) -> None:
        self._sign(mv)
        key = self.key("production")
        with self.client.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(key)
                    prev = pipe.get(key)
                    prev = prev.decode() if isinstance(prev, bytes) else prev
                    entry["previous"] = prev
                    pipe.multi()
                    pipe.set(key, mv.version)
                    pipe.lpush(self.key("history"), json.dumps(entry))
                    pipe.ltrim(self.key("history"), 0, 999)
                    pipe.execute()
                    return
                except redis.WatchError:
                    continue
                except redis.exceptions.NoPermissionError as e:
                    raise _refused(e) from None
                except redis.RedisError as e:
                    raise RegistryError(f"model registry (Redis) unavailable: {e}") from None

    def promote(
        self, ref: str, *, reason: str = "", decision: dict[str, Any] | None = None
    ) -> ModelVersion:
        """Make ``ref`` the production model (signed with the key) and notify the workers.

        Callers own the key: the CLI, the console's admin action and ``vigil retrain``. The file
        must be in the store with the entry's sha256 (:meth:`fetch`), or nothing is signed.
        """
        mv = self.require(ref)
        self.fetch(mv)  # sign only what is in the store with the recorded sha256
        entry = {
            "kind": "promote",
            "version": mv.version,
            "number": mv.number,
            "at": time.time(),
            "by": f"{socket.gethostname()}:{os.getpid()}",
            "reason": reason,
        }
        if decision is not None:
            entry["decision"] = decision
        self._set_production(mv, entry)
        self.publish({"event": "promote", "version": mv.version, "number": mv.number})
        return mv

    def rollback(self, *, reason: str = "") -> ModelVersion:
        """Back to the model that was production before the current one was promoted."""
        current = self.production_version()
        if current is None:
            raise RegistryError("no production model: nothing to roll back")
        target = None
        for entry in self.history(1000):
            if entry.get("kind") == "promote" and entry.get("version") == current:
                target = entry.get("previous")
                break
        if not target:
            raise RegistryError(
                f"production {current} has no earlier model to roll back to "
                "(use `vigil models promote VERSION`)"
            )
        mv = self.require(target)
        self.fetch(mv)
        self._set_production(
            mv,
            {
                "kind": "rollback",
                "version": mv.version,
                "number": mv.number,
                "at": time.time(),
                "by": f"{socket.gethostname()}:{os.getpid()}",
                "reason": reason or f"rollback from {current}",
                "from": current,
            },
        )
        self.publish({"event": "promote", "version": mv.version, "number": mv.number})
        return mv

    def record_decision(self, decision: dict[str, Any]) -> None:
        self._call(self.client.lpush, self.key("decisions"), json.dumps(decision, default=str))
        self._call(self.client.ltrim, self.key("decisions"), 0, 999)

    def decisions(self, limit: int = 20) -> list[dict[str, Any]]:
        return [
            json.loads(x)
            for x in self._call(self.client.lrange, self.key("decisions"), 0, limit - 1)
        ]

    # -- notification ----------------------------------------------------------------------
    def publish(self, event: dict[str, Any]) -> int:
        """Tell running workers (Redis pub/sub); they also poll, so a lost notice only delays."""
        try:
            return int(self.client.publish(self.channel, json.dumps(event)))
        except redis.RedisError as e:
            log.warning("registry: promotion notice not published (%s); workers will poll", e)
            return 0

    # -- files -----------------------------------------------------------------------------
    def fetch(self, mv: ModelVersion, dest_dir: Path | None = None) -> Path:
        """A local, sha256-checked copy of a version's weights (cached).

        The file is read from this registry's store at the version's own place, whatever the
        entry's ``uri`` says; a different sha256 is :class:`ModelRefused` (``sha256_mismatch``).
        """
        check_version(mv.version)
        if not isinstance(mv.sha256, str) or not SHA256.match(mv.sha256):
            raise ModelRefused("bad_entry", f"model {mv.version}: malformed sha256")
        uri = self.file_uri(mv.version)
        dest_dir = dest_dir or cache_dir().parent / "registry" / self.cfg.name
        dest = dest_dir / f"{mv.version}.pt"
        if dest.is_file() and file_sha256(dest) == mv.sha256:
            return dest
        store_get(uri, dest)
        got = file_sha256(dest)
        if got != mv.sha256:
            dest.unlink(missing_ok=True)
            raise ModelRefused(
                "sha256_mismatch",
                f"model {mv.label}: the stored file {uri} does not match the registry "
                f"(sha256 {got[:12]}, expected {mv.sha256[:12]}); re-register it",
            )
        return dest

    # -- worker status and drift -----------------------------------------------------------
    def report_worker(
        self, worker_id: str, version: str | None, status: str, error: str | None = None
    ) -> None:
        entry = {"version": version, "status": status, "error": error, "at": time.time()}
        self._call(self.client.hset, self.key("workers"), worker_id, json.dumps(entry))

    def workers(self) -> dict[str, dict[str, Any]]:
        raw = self._call(self.client.hgetall, self.key("workers")) or {}
        return {(k.decode() if isinstance(k, bytes) else k): json.loads(v) for k, v in raw.items()}

    def put_drift(self, rows: dict[str, dict[str, Any]]) -> None:
        if rows:
            self.client.hset(self.key("drift"), mapping={k: json.dumps(v) for k, v in rows.items()})

    def get_drift(self) -> dict[str, dict[str, Any]]:
        raw = self._call(self.client.hgetall, self.key("drift")) or {}
        return {(k.decode() if isinstance(k, bytes) else k): json.loads(v) for k, v in raw.items()}

    def close(self) -> None:
        self.client.close()


_warned: set[str] = set()


def _warn_once(where: str, why: str) -> None:
    if where not in _warned:
        _warned.add(where)
        log.warning("model registry: ignoring entry %s (%s)", where, why)


def format_versions(reg: ModelRegistry) -> str:
    versions = reg.list()
    if not versions:
        return "no models registered (vigil retrain or vigil models promote FILE adds one)"
    prod = reg.production_version()
    lines = [
        f"{'':2}{'#':>4} {'version':<13} {'created':<17} {'mAP50':>6} {'classes':<24} "
        f"{'source':<20} precision gate"
    ]
    for v in versions:
        created = time.strftime("%Y-%m-%d %H:%M", time.localtime(v.created_at))
        m = v.metrics.get("map50")
        classes = ",".join(list(v.classes.values())[:4]) + ("..." if len(v.classes) > 4 else "")
        lines.append(
            f"{'*' if v.version == prod else ' ':2}{v.number:>4} {v.version:<13} {created:<17} "
            f"{(f'{m:.3f}' if isinstance(m, (int, float)) else '-'):>6} {classes:<24} "
            f"{Path(v.source).name:<20} {precision_summary(v) or '-'}"
        )
    workers = reg.workers()
    if workers:
        lines.append("workers:")
        for wid, w in sorted(workers.items()):
            err = f" ({w['error']})" if w.get("error") else ""
            lines.append(f"  {wid}: {w.get('status')} {w.get('version')}{err}")
    return "\n".join(lines)
