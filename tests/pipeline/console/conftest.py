"""Fixtures of the console's tests (each module has its own ``stack``: tests/support/console.py)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.support.console import ConsoleStack, console_stack


@pytest.fixture(scope="module")
def recorded_stack(kafka_bootstrap, camera_recording, tmp_path_factory) -> Iterator[ConsoleStack]:
    """The module's console (a viewer user) whose recordings are a copy of the shared
    recording (``camera_recording``), indexed under the console's keys."""
    from pipeline.record.index import SegmentIndex
    from tests.support.recordings import copy_recording

    root = tmp_path_factory.mktemp("recordings")
    with console_stack(
        kafka_bootstrap,
        tmp_path_factory.mktemp("console"),
        roles=("viewer",),
        recordings={"dir": str(root)},
    ) as s:
        copy_recording(camera_recording, root, SegmentIndex.from_config(s.cfg.redis))
        yield s


@pytest.fixture(scope="module")
def viewer(stack) -> Iterator[httpx.Client]:
    """An httpx client of the module's console (its ``stack``), logged in as the viewer (it
    sends the session's CSRF token)."""
    c = stack.login("viewer")
    try:
        yield c
    finally:
        c.close()
