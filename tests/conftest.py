"""Shared fixtures. Integration tests talk to the real local services on 127.0.0.1 that
``make test`` starts (deploy/local/services.sh); they fail, not skip, when those are missing.

Fixtures only: the helpers tests share are in tests/support/, one module per concern."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from pipeline.config import VigilConfig
from tests.support.assets import footage_path
from tests.support.config import KAFKA, make_config
from tests.support.kafka import TopicReader
from tests.support.net import free_port, port_open


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    host, port = KAFKA.rsplit(":", 1)
    if not port_open(host, int(port)):
        pytest.fail(
            f"Kafka is not reachable at {KAFKA}: run `make infra-up` (or `make test`, which starts it)"
        )
    return KAFKA


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


@pytest.fixture(scope="session")
def camera_recording(tmp_path_factory):
    """~25 s of a ``vigil camera-sim`` stream recorded once into 10 s segments and indexed in
    Redis under keys of its own (tests/support/recordings.py); tests only read it."""
    from tests.support.recordings import record_camera

    yield from record_camera(tmp_path_factory.mktemp("recordings"))


@pytest.fixture(scope="module")
def browser():
    """One headless Chromium for the module (tests/support/browser.py)."""
    from tests.support.browser import launch

    with launch() as b:
        yield b


@pytest.fixture
def new_page(browser):
    """new_page(**context_options) -> a page in a fresh browser context (its own cookies;
    ``timeout_ms``: its default timeout, 30 s), or new_page(context) -> another page of that
    context; closed at teardown, which fails on any uncaught JavaScript error of the console's
    pages."""
    from tests.support.browser import pages

    with pages(browser) as make:
        yield make
