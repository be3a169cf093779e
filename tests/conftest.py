"""Shared fixtures. Integration tests talk to the real local services on 127.0.0.1 that
``make test`` starts (deploy/local/services.sh); they fail, not skip, when those are missing."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterator

import pytest

from pipeline.cli import main
from pipeline.common.assets import footage
from pipeline.config import VigilConfig, parse_config

KAFKA = os.environ.get("VIGIL_TEST_KAFKA", "127.0.0.1:9092")
REDIS_URL = os.environ.get("VIGIL_TEST_REDIS", "redis://127.0.0.1:6379/15")


def _port_open(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1.0)
        return s.connect_ex((host, port)) == 0


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    host, port = KAFKA.rsplit(":", 1)
    if not _port_open(host, int(port)):
        pytest.fail(
            f"Kafka is not reachable at {KAFKA}: run `make infra-up` (or `make test`, which starts it)"
        )
    return KAFKA


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def model_test_env(cache_dir, threads: int = 2, **env: str) -> Iterator[None]:
    """A private model/export cache and a modest PyTorch thread count (the CPU is shared) for a
    test module; extra environment variables in ``env``. Restores everything afterwards."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("VIGIL_CACHE", str(cache_dir))
            for key, value in env.items():
                mp.setenv(key, value)
            yield
    finally:
        torch.set_num_threads(before)


def run_detector_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    """``vigil <detector command> ...`` in-process, as ``vigil`` runs it (a user error is one
    line and exit code 2): (exit code, stdout, stderr)."""
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def footage_path(name: str) -> str:
    p = footage(name)
    if not p.exists():
        pytest.fail(f"footage {p} missing: set VIGIL_ASSETS to the shared assets folder")
    return str(p)


def make_config(bootstrap: str, **overrides) -> VigilConfig:
    """A config whose topics and groups belong to one test only, so tests never see each other."""
    return parse_config(make_config_dict(bootstrap, **overrides), "test")


def make_config_dict(bootstrap: str, **overrides) -> dict:
    tag = uuid.uuid4().hex[:8]
    data = {
        "kafka": {
            "bootstrap_servers": bootstrap,
            "topics": {
                "cameras": f"t{tag}.cameras",
                "detections": f"t{tag}.detections",
                "alerts": f"t{tag}.alerts",
                "detections_dlq": f"t{tag}.detections.dlq",
                "control": f"t{tag}.control",
                "rules": f"t{tag}.rules",
                "notify_dlq": f"t{tag}.notify.dlq",
            },
            "cameras_partitions": 8,
            "detections_partitions": 2,
        },
        "redis": {"url": REDIS_URL, "key_prefix": f"t{tag}:"},
        "detector": {"imgsz": 640, "max_batch": 4},
        "ingest": {
            "group_id": f"t{tag}-ingest",
            "default_fps": 4,
            "open_timeout_s": 5,
            "read_timeout_s": 5,
            "reconnect": {"initial_s": 0.5, "max_s": 2.0},
            "session_timeout_ms": 6000,
        },
    }
    for key, value in overrides.items():
        if isinstance(value, dict):
            data.setdefault(key, {}).update(value)
        else:
            data[key] = value
    return data


@pytest.fixture
def vigil_cfg(kafka_bootstrap) -> VigilConfig:
    from pipeline.common.kafka import ensure_topics

    cfg = make_config(kafka_bootstrap)
    ensure_topics(cfg.kafka)
    return cfg


@pytest.fixture(scope="session")
def detector():
    """One loaded model for the whole session (loading is the slow part)."""
    from detectors.engine import Detector

    return Detector(make_config(KAFKA).detector)


@pytest.fixture
def camera_sim() -> Iterator[Callable[..., object]]:
    """Factory: camera_sim(files...) -> a running CameraSim on a free port; stopped at teardown."""
    from pipeline.camera_sim import CameraSim

    sims = []

    def start(*names: str):
        sim = CameraSim([footage_path(n) for n in names], port=free_port())
        sim.start()
        sims.append(sim)
        return sim

    yield start
    for sim in sims:
        sim.stop()


class TopicReader:
    """Reads a topic from the beginning, across calls, decoding JSON values."""

    def __init__(self, cfg: VigilConfig, topic: str) -> None:
        from pipeline.common.kafka import make_consumer

        self.consumer = make_consumer(
            cfg.kafka,
            "test-reader",
            group_id=None,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        from kafka import TopicPartition

        deadline = time.monotonic() + 15
        parts = None
        while not parts and time.monotonic() < deadline:
            parts = self.consumer.partitions_for_topic(topic)
            if not parts:
                time.sleep(0.2)
        assert parts, f"topic {topic} does not exist"
        tps = [TopicPartition(topic, p) for p in parts]
        self.consumer.assign(tps)
        self.consumer.seek_to_beginning(*tps)
        self.records = []

    def poll(self, timeout_s: float = 1.0) -> list[dict]:
        new = []
        for recs in self.consumer.poll(timeout_ms=int(timeout_s * 1000)).values():
            for r in recs:
                value = json.loads(r.value) if r.value is not None else None
                new.append(
                    {
                        "key": r.key.decode() if r.key else None,
                        "value": value,
                        "raw": r.value,
                        "partition": r.partition,
                        "offset": r.offset,
                    }
                )
        self.records.extend(new)
        return new

    def until(self, pred: Callable[[list[dict]], bool], timeout_s: float) -> list[dict]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.poll(0.5)
            if pred(self.records):
                return self.records
        return self.records

    def close(self) -> None:
        self.consumer.close()


@pytest.fixture
def topic_reader():
    readers = []

    def open_reader(cfg: VigilConfig, topic: str) -> TopicReader:
        r = TopicReader(cfg, topic)
        readers.append(r)
        return r

    yield open_reader
    for r in readers:
        r.close()


def wait_for(pred: Callable[[], object], timeout: float, step: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(step)
    return pred()
