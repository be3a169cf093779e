"""pipeline.common.consumer_loop with a fake consumer (no Kafka): the order of the callback points,
rebalance events handed over in order after the poll that reported them, the records of
partitions taken by that poll dropped, connection retries with one log line per outage, a
failed step recovered with backoff, close in order (and harmless twice); and the retry helper
the loop and the alert service share."""

from __future__ import annotations

import logging
import threading
from types import SimpleNamespace

import pytest
from kafka import TopicPartition
from kafka.errors import KafkaConnectionError, KafkaError

import pipeline.common.consumer_loop as cl
from pipeline.common.consumer_loop import ConsumerHandler, ConsumerLoop, fmt_partitions, tp_order
from pipeline.common.kafka import KafkaConfig, KafkaUnavailable
from pipeline.common.retry import Retrier, Stopped, retry_with_backoff

T = "vigil.test"
P0, P1, P2 = (TopicPartition(T, i) for i in range(3))
LOG = logging.getLogger("tests.consumer_loop")


def rec(tp: TopicPartition, offset: int):
    return SimpleNamespace(topic=tp.topic, partition=tp.partition, offset=offset, value=b"{}")


class FakeConsumer:
    """Polls script entries: (rebalance events to report, records to return); or an exception
    to raise."""

    def __init__(self, script=(), connections: float | None = 1.0) -> None:
        self.script = list(script)
        self.listener = None
        self.topics: list[str] = []
        self.polls: list[tuple[int, int]] = []
        self.connections = connections
        self.closed: list[dict] = []
        self.known_after = 0  # partitions_for_topic answers None this many times

    def subscribe(self, topics, listener=None) -> None:
        self.topics, self.listener = list(topics), listener

    def partitions_for_topic(self, topic):
        if self.known_after > 0:
            self.known_after -= 1
            return None
        return {0, 1, 2}

    def poll(self, timeout_ms: int, max_records: int):
        self.polls.append((timeout_ms, max_records))
        if not self.script:
            return {}
        step = self.script.pop(0)
        if isinstance(step, BaseException):
            raise step
        events, records = step
        for kind, tps in events:  # kafka-python runs the listener inside poll
            if kind == "revoked":
                self.listener.on_partitions_revoked(tps)
            else:
                self.listener.on_partitions_assigned(tps)
        return records

    def metrics(self):
        if self.connections is None:
            return {}
        return {"consumer-metrics": {"connection-count": self.connections}}

    def close(self, **kw) -> None:
        self.closed.append(kw)


class FakeProducer:
    def __init__(self) -> None:
        self.closed: list[float] = []

    def close(self, timeout: float) -> None:
        self.closed.append(timeout)


class Recorder(ConsumerHandler):
    """Records every callback; ``fresh`` is what start_partitions answers."""

    def __init__(self, fresh=frozenset(), stop: threading.Event | None = None, steps=None):
        self.calls: list[tuple] = []
        self.fresh = set(fresh)
        self.stop = stop
        self.steps = steps  # stop the loop after this many handled batches
        self.loop: ConsumerLoop | None = None

    def on_started(self):
        self.calls.append(("on_started",))

    def before_poll(self):
        self.calls.append(("before_poll",))

    def poll_timeout_ms(self):
        self.calls.append(("poll_timeout_ms",))
        return 123

    def on_revoked(self, tps):
        self.calls.append(("on_revoked", set(tps)))

    def on_assigned(self, tps):
        self.calls.append(("on_assigned", set(tps)))

    def start_partitions(self, records):
        self.calls.append(("start_partitions", sorted(records, key=tp_order)))
        return set(self.fresh)

    def handle_batch(self, batch, fresh):
        self.calls.append(
            ("handle_batch", {tp: [r.offset for r in rs] for tp, rs in batch.items()})
        )
        self.calls.append(("fresh", set(fresh)))
        if self.steps is not None:
            self.steps -= 1
            if self.steps <= 0 and self.stop is not None:
                self.stop.set()
        return sum(len(rs) for rs in batch.values())

    def commit(self):
        self.calls.append(("commit",))

    def on_tick(self):
        self.calls.append(("on_tick",))

    def after_step(self):
        self.calls.append(("after_step",))

    def recover(self, error):
        self.calls.append(("recover", type(error).__name__))

    def on_close(self):
        self.calls.append(("on_close", self.loop.consumer is not None if self.loop else None))

    def after_close(self):
        self.calls.append(("after_close", self.loop.consumer is None if self.loop else None))

    def names(self):
        return [c[0] for c in self.calls]


@pytest.fixture
def clients(monkeypatch):
    """Patch the Kafka client factories of the loop; returns a namespace to script them."""
    ns = SimpleNamespace(
        consumer=FakeConsumer(), producer=FakeProducer(), failures=0, errors=[], consumer_kw=None
    )

    def ensure_topics(cfg):
        if ns.failures > 0:
            ns.failures -= 1
            raise KafkaUnavailable("cannot reach Kafka at nowhere:9092")

    def group_consumer(cfg, suffix, **kw):
        ns.consumer_kw = dict(kw, suffix=suffix)
        return ns.consumer

    def make_producer(cfg, suffix, **kw):
        ns.producer_kw = dict(kw, suffix=suffix)
        return ns.producer

    monkeypatch.setattr(cl, "ensure_topics", ensure_topics)
    monkeypatch.setattr(cl, "group_consumer", group_consumer)
    monkeypatch.setattr(cl, "make_producer", make_producer)
    return ns


def make_loop(handler: Recorder, topic: str | tuple[str, ...] = T, **kw) -> ConsumerLoop:
    args = dict(
        client="test-a",
        group_id="g",
        session_timeout_ms=10_000,
        max_records=7,
        logger=LOG,
        name="test service",
        backoff=(0.001, 0.004),
        consumer_kw={"auto_offset_reset": "earliest"},
        producer_close_s=3,
    )
    args.update(kw)
    loop = ConsumerLoop(handler, KafkaConfig(bootstrap_servers="nowhere:9092"), topic, **args)
    handler.loop = loop
    return loop


def test_a_step_calls_the_callback_points_in_order(clients):
    records = {P0: [rec(P0, 5), rec(P0, 6)], P1: [rec(P1, 0)], P2: []}
    events = [("revoked", [P0, P1]), ("assigned", [P0, P1, P2])]
    clients.consumer.script = [(events, records)]
    h = Recorder(fresh={P1})
    loop = make_loop(h)
    loop.connect()
    assert clients.consumer.topics == [T]
    assert clients.consumer_kw == {
        "group_id": "g",
        "session_timeout_ms": 10_000,
        "max_poll_records": 7,
        "auto_offset_reset": "earliest",
        "suffix": "test-a",
    }
    assert clients.producer_kw == {"max_block_ms": 10_000, "suffix": "test-a"}
    assert loop.step() == 2
    assert h.calls == [
        ("before_poll",),
        ("poll_timeout_ms",),
        ("on_revoked", {P0, P1}),  # in the order the consumer reported them
        ("on_assigned", {P0, P1, P2}),
        ("start_partitions", [P0, P1, P2]),
        # P1 was taken by this poll (its records predate the seek), P2 had none
        ("handle_batch", {P0: [5, 6]}),
        ("fresh", {P1}),
        ("commit",),
        ("on_tick",),
        ("after_step",),
    ]
    assert clients.consumer.polls == [(123, 7)]
    # an empty poll: no rebalance callbacks, the batch is empty, commit still runs; the broker
    # check (on_tick) runs at most once a second
    h.calls.clear()
    assert loop.step() == 0
    assert h.names() == [
        "before_poll",
        "poll_timeout_ms",
        "start_partitions",
        "handle_batch",
        "fresh",
        "commit",
        "after_step",
    ]


def test_connect_retries_with_one_line_per_outage(clients, caplog):
    clients.failures = 3
    h = Recorder()
    loop = make_loop(h)
    with caplog.at_level(logging.INFO, logger=LOG.name):
        loop.connect()
    lines = [r.getMessage() for r in caplog.records if r.name == LOG.name]
    assert len(lines) == 2, lines
    assert lines[0].startswith("Kafka at nowhere:9092 (test service) lost: cannot reach Kafka")
    assert lines[1].startswith("Kafka at nowhere:9092 (test service) back after")
    assert "(3 failed operations meanwhile)" in lines[1]
    assert loop.consumer is clients.consumer and loop.producer is clients.producer


def test_connect_reports_to_a_retrier_when_given_one(clients, caplog):
    clients.failures = 2
    retried: list[str] = []
    retrier = Retrier(0.001, 0.002, on_retry=retried.append)
    loop = make_loop(Recorder(), connect_retrier=retrier)
    with caplog.at_level(logging.INFO):
        loop.connect()
    assert retried == ["connect to Kafka", "connect to Kafka"]
    mine = [r.getMessage() for r in caplog.records if r.name == "pipeline.common.retry"]
    assert len(mine) == 2 and mine[0].startswith("connect to Kafka failed (KafkaUnavailable")
    assert mine[1].startswith("connect to Kafka recovered after")
    assert not [r for r in caplog.records if r.name == LOG.name]  # no lost/back lines


def test_connect_learns_the_partitions_first_when_asked(clients):
    clients.consumer.known_after = 2
    loop = make_loop(Recorder(), learn_partitions=True)
    loop.connect()
    assert clients.consumer.known_after == 0 and clients.consumer.topics == [T]


def test_a_loop_on_two_topics_learns_both_then_subscribes_to_both(clients):
    # the notifier: alerts and clips in one group; a partition-less topic would get no member
    unknown = {T: 0, "t.clips": 2}  # the clips topic's partitions known at the third look

    def partitions_for_topic(topic):
        if unknown[topic] > 0:
            unknown[topic] -= 1
            return None
        return {0, 1}

    clients.consumer.partitions_for_topic = partitions_for_topic
    loop = make_loop(Recorder(), (T, "t.clips"), learn_partitions=True)
    loop.connect()
    assert unknown["t.clips"] == 0 and clients.consumer.topics == [T, "t.clips"]
    assert loop.topic == T


def test_stop_during_connect_ends_the_run_and_closes(clients):
    clients.failures = 10**6
    stop = threading.Event()
    h = Recorder()
    loop = make_loop(h, backoff=(0.05, 0.05))
    t = threading.Thread(target=loop.run, args=(stop,))
    t.start()
    stop.set()
    t.join(5)
    assert not t.is_alive()
    assert h.names() == ["on_close", "after_close"]  # never started, closed all the same
    with pytest.raises(Stopped):
        loop.connect()


def test_failed_steps_are_recovered_with_backoff_then_the_loop_goes_on(clients, caplog):
    clients.consumer.script = [
        KafkaConnectionError("broker gone"),
        KafkaConnectionError("still gone"),
        RuntimeError("a bug"),
        ([("assigned", [P0])], {P0: [rec(P0, 1)]}),
    ]
    stop = threading.Event()
    h = Recorder(stop=stop, steps=1)
    loop = make_loop(h, unexpected_error="unexpected error in the test loop")
    with caplog.at_level(logging.INFO, logger=LOG.name):
        loop.run(stop)
    assert [c for c in h.calls if c[0] == "recover"] == [
        ("recover", "KafkaConnectionError"),
        ("recover", "KafkaConnectionError"),
        ("recover", "RuntimeError"),
    ]
    assert ("handle_batch", {P0: [1]}) in h.calls
    lines = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == LOG.name]
    lost = [m for _, m in lines if " lost: " in m]
    assert len(lost) == 1 and "broker gone" in lost[0], lost  # once per outage, not per error
    assert lost[0].startswith("Kafka at nowhere:9092 (test service) lost: KafkaConnectionError: ")
    assert [m for lv, m in lines if lv == logging.ERROR] == ["unexpected error in the test loop"]
    # the broker check saw connections again: one "back" line
    assert len([m for _, m in lines if " back after " in m]) == 1
    # close: the handler's on_close while the clients are open, then the clients, then after_close
    assert h.calls[-2:] == [("on_close", True), ("after_close", True)]
    assert clients.consumer.closed == [{"autocommit": False, "timeout_ms": 5000}]
    assert clients.producer.closed == [3]
    loop.close()  # again: harmless, the clients are not closed twice
    assert clients.consumer.closed == [{"autocommit": False, "timeout_ms": 5000}]
    assert clients.producer.closed == [3]


def test_stopped_in_a_step_ends_the_loop(clients):
    clients.consumer.script = [([], {P0: [rec(P0, 1)]})]
    stop = threading.Event()

    class Stopping(Recorder):
        def handle_batch(self, batch, fresh):
            raise Stopped

    h = Stopping()
    loop = make_loop(h)
    loop.run(stop)
    assert "recover" not in h.names() and h.names()[-2:] == ["on_close", "after_close"]


def test_the_broker_check_logs_each_state_change_once(clients, caplog):
    loop = make_loop(Recorder())
    loop.connect()
    c = clients.consumer
    with caplog.at_level(logging.INFO, logger=LOG.name):
        for connections in (0.0, 0.0, None, 2.0, 2.0):
            c.connections = connections
            loop._kafka_checked_at = 0.0  # past the once-a-second limit
            loop.check_kafka()
    lines = [r.getMessage() for r in caplog.records if r.name == LOG.name]
    assert len(lines) == 2 and " lost: no broker connection" in lines[0]
    assert " back after " in lines[1] and "(0 failed operations meanwhile)" in lines[1]


def test_helpers():
    assert fmt_partitions([P2, TopicPartition("a", 9), P0]) == "a[9], vigil.test[0], vigil.test[2]"
    assert sorted([P2, P0, P1], key=tp_order) == [P0, P1, P2]


def test_retry_with_backoff_doubles_up_to_the_longest_wait():
    waits: list[float] = []
    failures: list[str] = []

    class Stop:
        def wait(self, s):
            waits.append(s)
            return False

    attempts = iter([KafkaError("1"), KafkaError("2"), KafkaError("3"), KafkaError("4"), "ok"])

    def fn():
        x = next(attempts)
        if isinstance(x, Exception):
            raise x
        return x

    ok: list[bool] = []
    got = retry_with_backoff(
        fn,
        Stop(),
        (KafkaError,),
        0.1,
        0.3,
        lambda e: failures.append(e.args[0]),
        lambda: ok.append(True),
    )
    assert got == "ok" and ok == [True] and failures == ["1", "2", "3", "4"]
    assert waits == [0.1, 0.2, 0.3, 0.3]
    with pytest.raises(ValueError):  # not one of the errors: not retried
        retry_with_backoff(lambda: int("x"), Stop(), (KafkaError,), 0.1, 0.3, print, print)


def test_retrier_logs_once_per_outage_and_scrubs_the_secret(caplog):
    retried: list[str] = []
    r = Retrier(0.001, 0.001, "s3cret", on_retry=retried.append)
    calls = iter([OSError("auth s3cret refused"), OSError("again"), 42])

    def fn():
        x = next(calls)
        if isinstance(x, Exception):
            raise x
        return x

    with caplog.at_level(logging.INFO, logger="pipeline.common.retry"):
        assert r.retry("Redis write", fn, threading.Event(), (OSError,)) == 42
        r.failed("Kafka commit", OSError("x"), retried=False)
    lines = [m.getMessage() for m in caplog.records]
    assert lines[0] == "Redis write failed (OSError: auth *** refused); retrying with backoff"
    assert lines[1].startswith("Redis write recovered after")
    assert lines[2] == "Kafka commit failed (OSError: x); will try again with the next batch"
    assert len(lines) == 3 and retried == ["Redis write", "Redis write"]
    stop = threading.Event()
    stop.set()
    with pytest.raises(Stopped):
        r.retry("Redis write", lambda: int("x"), stop, (ValueError,))
