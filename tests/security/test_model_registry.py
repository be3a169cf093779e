"""Attacks on the model registry and hot reload, replayed against a worker's reloader.

Whoever can write to Redis used to choose what every ingest worker loads: a pickled ``.pt``
registered with raw Redis writes ran its code in each worker, a version string became a file path
(``../``) and went through ``${VAR}`` expansion (a secret on the Models page). Each test plays one
attack with the attacker's own Redis commands against a reloader that already runs a properly
promoted model, and checks what a user would notice: no code ran, no file escaped, no secret is
shown, the running model is unchanged, and the refusal is counted
(``vigil_model_reload_refused_total{reason}``). The last test is the good path: a model promoted
with ``vigil models promote`` still hot-reloads.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import shlex
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml
from prometheus_client import REGISTRY

from detectors.errors import WeightsError
from detectors.loading import cache_dir, file_sha256
from detectors.retrain.hot_reload import HotReloader
from detectors.retrain.model_registry import ModelRegistry, ModelVersion
from detectors.retrain.promotion import promote_checked
from pipeline.common.assets import model
from pipeline.console.routes.models import list_models
from tests.support.cli import model_test_env, run_detector_cli
from tests.support.config import KAFKA, make_config, make_config_dict

pytestmark = pytest.mark.integration
YOLOV5N = model("yolov5n.pt")
DETECTOR = {"imgsz": 320, "max_batch": 1, "backend": "torch", "tracker": "none"}


class Evil:
    """A 'model' whose unpickling runs a shell command (it touches ``marker``)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {shlex.quote(str(self.marker))}",))


def evil_pt(path: Path, marker: Path) -> Path:
    torch.save({"model": Evil(marker), "train_args": {}}, path)
    return path


def foreign_signature(version: str, sha256: str) -> str:
    """An HMAC-SHA256 over the entry made with a key that is not the registry's."""
    msg = json.dumps(["detector", version, sha256]).encode()
    return hmac.new(b"not-the-key" * 4, msg, hashlib.sha256).hexdigest()


def refused(reason: str) -> float:
    return REGISTRY.get_sample_value("vigil_model_reload_refused_total", {"reason": reason}) or 0.0


@dataclass
class World:
    cfg: object
    reg: ModelRegistry
    reloader: HotReloader
    swapped: list
    v1: ModelVersion
    tmp: Path

    def store_file(self, version: str) -> Path:
        """Where the store keeps a version's weights (docs/retraining.md)."""
        return Path(self.cfg.models.store) / self.cfg.models.name / version / "model.pt"

    def attacker_writes(self, version: str, entry: dict) -> None:
        """The attack's three Redis commands: the version hash, the production pointer, the event."""
        base = {"number": 99, "name": self.cfg.models.name, "created_at": time.time()}
        self.reg.client.hset(self.reg.key("versions"), version, json.dumps({**base, **entry}))
        self.reg.client.set(self.reg.key("production"), version)
        self.reg.client.publish(
            self.reg.channel, json.dumps({"event": "promote", "version": version})
        )

    def assert_still_running_v1(self) -> None:
        assert self.reloader.current == self.v1.version
        assert len(self.swapped) == 1, "a refused model was swapped in"
        assert self.swapped[0].version == self.v1.version


@pytest.fixture(scope="module")
def model_cache(tmp_path_factory):
    with model_test_env(tmp_path_factory.mktemp("cache")):
        yield


@pytest.fixture
def world(model_cache, tmp_path, monkeypatch) -> World:
    """A registry whose production (yolov5n, promoted the proper way) a reloader runs; the
    signing key is the default ``${VIGIL_STATE}/model-signing.key``."""
    monkeypatch.setenv("VIGIL_STATE", str(tmp_path / "state"))
    cfg = make_config(
        KAFKA, detector=DETECTOR, models={"registry": True, "store": str(tmp_path / "store")}
    )
    reg = ModelRegistry(cfg.redis, cfg.models)
    v1 = promote_checked(reg, str(YOLOV5N), reason="initial")
    swapped: list = []
    reloader = HotReloader(reg, cfg.detector, f"w-{uuid.uuid4().hex[:6]}", swapped.append, 1.0)
    assert reloader.check() is True and reloader.current == v1.version
    try:
        yield World(cfg, reg, reloader, swapped, v1, tmp_path)
    finally:
        for key in reg.client.scan_iter(match=f"{cfg.redis.key_prefix}*", count=1000):
            reg.client.delete(key)
        reg.close()


def test_pickle_rce_via_raw_redis_writes_runs_nothing(world, caplog):
    marker = world.tmp / "pwned"
    evil = evil_pt(world.tmp / "evil.pt", marker)
    sha = file_sha256(evil)
    before = refused("unsigned")
    with caplog.at_level(logging.ERROR, logger="detectors.retrain.hot_reload"):
        world.attacker_writes(sha[:12], {"version": sha[:12], "sha256": sha, "uri": str(evil)})
        assert world.reloader.check() is False
        world.reloader.check()  # polled again: refused once, not once per poll
    assert not marker.exists(), "the pickle's code ran in the worker"
    world.assert_still_running_v1()
    assert refused("unsigned") == before + 1
    lines = [r.getMessage() for r in caplog.records if "refused model" in r.getMessage()]
    assert len(lines) == 1 and "\n" not in lines[0] and "not signed" in lines[0], lines


def test_pickle_in_the_store_with_a_forged_signature_runs_nothing(world):
    """Write access to Redis and to the store, but not to the key: still no code runs."""
    marker = world.tmp / "pwned"
    sha = file_sha256(evil_pt(world.tmp / "evil.pt", marker))
    dest = world.store_file(sha[:12])
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(world.tmp / "evil.pt", dest)
    forged = foreign_signature(sha[:12], sha)
    before = refused("bad_signature")
    entry = {"version": sha[:12], "sha256": sha, "uri": str(dest), "signature": forged}
    world.attacker_writes(sha[:12], entry)
    assert world.reloader.check() is False
    assert not marker.exists(), "the pickle's code ran in the worker"
    world.assert_still_running_v1()
    assert refused("bad_signature") == before + 1


def test_even_a_promoted_pickle_cannot_run_code(world):
    """Promotion loads weights with torch.load(weights_only=True): the admin gets an error."""
    marker = world.tmp / "pwned"
    evil = evil_pt(world.tmp / "evil.pt", marker)
    with pytest.raises(WeightsError, match="evil.pt"):
        promote_checked(world.reg, str(evil))
    assert not marker.exists(), "promoting the file ran its code"
    assert world.reg.production_version() == world.v1.version


def test_version_with_dotdot_is_refused_and_writes_nothing_outside(world):
    escaped = Path(os.environ["VIGIL_CACHE"]) / "escaped.pt"
    escaped.unlink(missing_ok=True)
    before = refused("bad_version")
    world.attacker_writes(
        "../../escaped",
        {"version": "../../escaped", "sha256": world.v1.sha256, "uri": world.v1.uri},
    )
    assert world.reloader.check() is False
    assert not escaped.exists(), "the version became a path outside the worker's cache"
    assert not list(cache_dir().parent.rglob("escaped*"))
    world.assert_still_running_v1()
    assert refused("bad_version") == before + 1


def test_version_with_env_reference_shows_no_secret(world, caplog, monkeypatch):
    secret = "kafka-" + uuid.uuid4().hex
    monkeypatch.setenv("KAFKA_PASSWORD", secret)
    version = "${KAFKA_PASSWORD}"
    before = refused("bad_version")
    with caplog.at_level(logging.DEBUG):
        world.attacker_writes(
            version, {"version": version, "sha256": world.v1.sha256, "uri": world.v1.uri}
        )
        assert world.reloader.check() is False
        page = json.dumps(list_models(None, SimpleNamespace(cfg=world.cfg)))  # GET /api/models
    assert secret not in page, "the Models page shows the secret"
    assert secret not in caplog.text, "the secret was logged"
    assert world.reg.workers()[world.reloader.worker_id]["status"] == "refused"
    world.assert_still_running_v1()
    assert refused("bad_version") == before + 1


def test_tampered_file_or_entry_is_refused(world):
    """A promoted version whose store file is swapped for a pickle and whose entry's sha256 is
    edited to match (signature mismatch), then the entry put back (sha256 mismatch with the
    file): refused both times, no code runs, the running model stays."""
    marker = world.tmp / "pwned"
    other = world.tmp / "other.pt"
    other.write_bytes(b"\x00" * 1024)
    v2 = world.reg.register(other, verify=False)
    world.reg.promote(v2.version, reason="signed by the admin")
    signed = world.reg.client.hget(world.reg.key("versions"), v2.version)
    evil = evil_pt(world.tmp / "evil.pt", marker)
    shutil.copyfile(evil, world.store_file(v2.version))  # store write access
    shutil.rmtree(cache_dir().parent / "registry", ignore_errors=True)

    sha = file_sha256(evil)  # the entry edited to match the new file
    edited = json.dumps({**json.loads(signed), "sha256": sha})
    world.reg.client.hset(world.reg.key("versions"), v2.version, edited)
    before = refused("bad_signature")
    assert world.reloader.check() is False
    assert not marker.exists(), "the pickle's code ran in the worker"
    world.assert_still_running_v1()
    assert refused("bad_signature") == before + 1

    world.reg.client.hset(world.reg.key("versions"), v2.version, signed)  # file alone swapped
    before = refused("sha256_mismatch")
    assert world.reloader.check() is False
    assert not marker.exists()
    world.assert_still_running_v1()
    assert refused("sha256_mismatch") == before + 1


def test_unsigned_or_wrongly_signed_model_is_refused(world):
    """A real model in the store, registered by raw Redis writes: not loaded without the key."""
    converted = next(cache_dir().glob("*.pt"))  # yolov5n converted: a working, different file
    sha = file_sha256(converted)
    dest = world.store_file(sha[:12])
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(converted, dest)
    entry = {"version": sha[:12], "sha256": sha, "uri": str(dest)}
    before = refused("unsigned")
    world.attacker_writes(sha[:12], entry)
    assert world.reloader.check() is False
    world.assert_still_running_v1()
    assert refused("unsigned") == before + 1

    wrong = foreign_signature(sha[:12], sha)
    before = refused("bad_signature")
    world.attacker_writes(sha[:12], {**entry, "signature": wrong})
    assert world.reloader.check() is False
    world.assert_still_running_v1()
    assert refused("bad_signature") == before + 1


def test_without_a_signing_key_hot_reload_is_refused_with_one_log_line(world, caplog):
    """A worker whose key file is missing keeps its model, says once which file it expects,
    and loads the (properly promoted) production model once the file is there."""
    converted = next(cache_dir().glob("*.pt"))
    v2 = promote_checked(world.reg, str(converted), reason="signed on the promoting host")
    with_key = world.reg.cfg
    world.reg.cfg = with_key.model_copy(update={"signing_key_file": str(world.tmp / "missing.key")})
    before = refused("no_key")
    with caplog.at_level(logging.ERROR, logger="detectors.retrain.hot_reload"):
        assert world.reloader.check() is False
        assert world.reloader.check() is False
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "missing.key" in lines[0] and "signing_key_file" in lines[0], lines
    assert refused("no_key") == before + 1
    assert world.reg.workers()[world.reloader.worker_id]["status"] == "refused"
    world.assert_still_running_v1()

    world.reg.cfg = with_key  # the key file installed on the worker
    assert world.reloader.check() is True
    assert world.reloader.current == v2.version


def test_model_promoted_with_the_cli_still_hot_reloads(world, tmp_path, capsys):
    converted = next(cache_dir().glob("*.pt"))
    data = make_config_dict(KAFKA, detector=DETECTOR, models=world.cfg.models.model_dump())
    data["redis"]["key_prefix"] = world.cfg.redis.key_prefix
    config = tmp_path / "vigil.yaml"
    config.write_text(yaml.safe_dump(data))
    code, out, err = run_detector_cli(
        ["models", "promote", str(converted), "-c", str(config)], capsys
    )
    assert code == 0, err
    v2 = world.reg.production()
    assert v2 is not None and v2.version != world.v1.version and v2.signature
    assert world.reloader.check() is True
    assert world.reloader.current == v2.version
    assert [d.version for d in world.swapped] == [world.v1.version, v2.version]
