"""One webhook sink's delivery without Kafka (alerts/notify/delivery.py, docs/notify.md
"Delivery"): which answers are tried again (408, 425, 429, 5xx) and which are permanent (any
other 4xx), a Retry-After beyond the retry budget, and the probe of a sink that is down, with
the ``vigil_notify_*`` metrics each of them moves.

A real HTTP server on 127.0.0.1 answers. The runner's waits go through a fake clock (its halt
event and the module's ``time``), so backoffs, budgets and probe intervals play out at once and
in order: no test sleeps a backoff or depends on the machine's speed."""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import Any

import pytest
from prometheus_client import REGISTRY

from alerts.notify import delivery
from alerts.notify.delivery import SinkRunner
from alerts.notify.sinks import Delivery, SinkContext, build_sink, idempotency_key
from alerts.notify.sinks.webhook import WebhookSinkConfig
from tests.support.fake_clock import ClockedEvent, FakeClock
from tests.support.notify import Receiver, alert, webhook


@dataclass
class Outcomes:
    """What the runner did with each delivery: ``("delivered", key)`` when it settled it after
    a success, ``("dead", key, attempts, error)`` when it gave it to the dead-letter topic."""

    topic: str = "test.notify.dlq"
    items: list[tuple[Any, ...]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._cond = threading.Condition()

    def _add(self, item: tuple[Any, ...]) -> None:
        with self._cond:
            self.items.append(item)
            self._cond.notify_all()

    def settle(self, d: Delivery) -> None:
        self._add(("delivered", d.key))

    # the runner's DeadLetters: queued for Kafka there; here the dead letter is the outcome
    def put(self, d: Delivery, *, sink: Any, error: str, attempts: int, **_kw: Any) -> None:
        self._add(("dead", d.key, attempts, error))

    def wait(self, n: int, timeout: float = 20.0) -> list[tuple[Any, ...]]:
        """The first ``n`` outcomes (a liveness deadline, not a speed bound)."""
        with self._cond:
            assert self._cond.wait_for(lambda: len(self.items) >= n, timeout), self.items
            return list(self.items)


@dataclass
class Rig:
    runner: SinkRunner
    rx: Receiver
    clock: FakeClock
    halt: ClockedEvent
    out: Outcomes
    sink_id: str

    def send(self, n: int) -> str:
        """Offer alert ``n`` (one camera: one worker, in order); its Idempotency-Key."""
        a = alert(n)
        self.runner.offer(Delivery(a, json.dumps(a).encode(), idempotency_key(a)), 0)
        return idempotency_key(a)

    def metric(self, name: str, **labels: str) -> float:
        value = REGISTRY.get_sample_value(name, {"sink": self.sink_id, **labels})
        return 0.0 if value is None else value


@contextlib.contextmanager
def rig(monkeypatch, rx: Receiver, **sink: Any) -> Iterator[Rig]:
    clock = FakeClock()
    monkeypatch.setattr(delivery, "time", clock)
    halt = ClockedEvent(clock)
    out = Outcomes()
    sink_id = f"d{uuid.uuid4().hex[:10]}"  # its own metric labels
    cfg = WebhookSinkConfig.model_validate(webhook(rx.url, id=sink_id, concurrency=1, **sink))
    runner = SinkRunner(build_sink(cfg, SinkContext()), out, out.settle, halt)
    runner.start()
    try:
        yield Rig(runner, rx, clock, halt, out, sink_id)
    finally:
        halt.set()
        runner.join(10)
        runner.close()


RETRY = {"attempts": 5, "initial_s": 0.1, "max_s": 1.0, "budget_s": 20.0}


@pytest.mark.parametrize("status", [408, 425, 429, 500, 503])
def test_retried_answers_are_tried_again_until_delivered(monkeypatch, status):
    with Receiver(fail_first=2, fail_status=status) as rx, rig(monkeypatch, rx, retry=RETRY) as r:
        key = r.send(0)
        assert r.out.wait(1) == [("delivered", key)]
        reqs = rx.snapshot()
    assert [q.headers["idempotency-key"] for q in reqs] == [key] * 3
    # two backoffs between the three attempts: 0.1 s doubling, each drawn in [d/2, d]
    assert len(r.halt.waits) == 2, r.halt.waits
    assert 0.05 <= r.halt.waits[0] <= 0.1 and 0.1 <= r.halt.waits[1] <= 0.2, r.halt.waits
    assert r.metric("vigil_notify_failed_attempts_total") == 2
    assert r.metric("vigil_notify_deliveries_total", outcome="delivered") == 1
    assert r.metric("vigil_notify_deliveries_total", outcome="dead_letter") == 0


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 410, 422])
def test_other_4xx_answers_are_permanent(monkeypatch, status):
    with Receiver(fail_first=10, fail_status=status) as rx, rig(monkeypatch, rx, retry=RETRY) as r:
        key = r.send(0)
        ((what, got_key, attempts, error),) = r.out.wait(1)
        assert len(rx.keys()) == 1  # one attempt, no retry
    assert (what, got_key, attempts) == ("dead", key, 1)
    assert error.startswith(f"permanent failure: HTTP {status}"), error
    assert r.halt.waits == []
    assert r.metric("vigil_notify_deliveries_total", outcome="dead_letter") == 1


@pytest.mark.parametrize("form", ["seconds", "http-date"])
def test_retry_after_beyond_the_budget_dead_letters_at_once(monkeypatch, form):
    # budget 60 s; the receiver asks for an hour: waiting would break the budget, so the
    # delivery goes to the dead-letter topic at once instead of sleeping (docs/notify.md)
    import time

    ra = "3600" if form == "seconds" else formatdate(time.time() + 3600, usegmt=True)
    retry = {"attempts": 8, "initial_s": 0.1, "max_s": 1.0, "budget_s": 60.0}
    with (
        Receiver(fail_first=10, fail_status=503, retry_after=ra) as rx,
        rig(monkeypatch, rx, retry=retry) as r,
    ):
        key = r.send(0)
        ((what, got_key, attempts, error),) = r.out.wait(1)
        assert len(rx.keys()) == 1
    assert (what, got_key, attempts) == ("dead", key, 1)
    assert "HTTP 503" in error, error
    assert r.halt.waits == [], f"slept {r.halt.waits} before giving up"


def test_retry_after_within_the_budget_is_waited_for(monkeypatch):
    # the same policy, a Retry-After that fits: waited for exactly (longer than any backoff)
    retry = {"attempts": 8, "initial_s": 0.1, "max_s": 1.0, "budget_s": 60.0}
    with (
        Receiver(fail_first=1, fail_status=429, retry_after="30") as rx,
        rig(monkeypatch, rx, retry=retry) as r,
    ):
        key = r.send(0)
        assert r.out.wait(1) == [("delivered", key)]
        assert len(rx.keys()) == 2
    assert r.halt.waits == [30.0]


def test_down_sink_dead_letters_at_once_and_is_probed_every_max_s(monkeypatch, caplog):
    """A sink that spent its budget is down: deliveries go to the dead-letter topic without an
    attempt, one of them is tried every retry.max_s as a probe, and the first probe that
    succeeds brings it back (docs/notify.md, "A slow or dead sink...")."""
    caplog.set_level(logging.INFO, logger="alerts.notify.delivery")
    retry = {"attempts": 2, "initial_s": 1.0, "max_s": 10.0, "budget_s": 100.0}
    with Receiver(fail_first=10**6, fail_status=503) as rx, rig(monkeypatch, rx, retry=retry) as r:

        def step(n: int, count: int) -> tuple[Any, ...]:
            key = r.send(n)
            got = r.out.wait(count)[count - 1]
            assert got[1] == key
            return got

        # 1: two attempts fail: attempts spent, dead-lettered, the sink is down
        assert step(1, 1)[0::2] == ("dead", 2)
        assert len(rx.keys()) == 2 and len(r.halt.waits) == 1
        assert r.metric("vigil_notify_sink_up") == 0
        # 2, 3: straight to the dead-letter topic, not attempted, nothing sent
        for n, count in ((2, 2), (3, 3)):
            what, _key, attempts, error = step(n, count)
            assert (what, attempts) == ("dead", 0) and error.startswith("not attempted: sink down")
        assert len(rx.keys()) == 2
        # retry.max_s later one delivery is a probe: tried once (no backoff), still down
        r.clock.advance(10.0)
        what, _key, attempts, error = step(4, 4)
        assert (what, attempts) == ("dead", 1) and error.startswith("sink still down"), error
        assert len(rx.keys()) == 3
        # the next one is not: one probe per retry.max_s
        assert step(5, 5)[0::2] == ("dead", 0)
        # the receiver answers again; before the next probe is due nothing is tried
        rx.fail_first = 0
        r.clock.advance(9.0)
        assert step(6, 6)[0::2] == ("dead", 0)
        assert len(rx.keys()) == 3
        # the probe that succeeds brings the sink back: delivered, and so are the next ones
        r.clock.advance(1.0)
        assert step(7, 7)[0] == "delivered"
        assert step(8, 8)[0] == "delivered"
        assert len(rx.keys()) == 5
        assert r.metric("vigil_notify_sink_up") == 1
    assert len(r.halt.waits) == 1  # the probes and the dead letters waited for nothing
    assert r.metric("vigil_notify_deliveries_total", outcome="delivered") == 2
    assert r.metric("vigil_notify_deliveries_total", outcome="dead_letter") == 6
    assert r.metric("vigil_notify_failed_attempts_total") == 3
    # one line when the budget was spent, one when it answered again
    lines = [rec.getMessage() for rec in caplog.records]
    assert sum("retry budget spent" in line for line in lines) == 1, lines
    assert sum(" back after " in line for line in lines) == 1, lines
