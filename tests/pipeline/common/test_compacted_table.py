"""CompactedTable against the real local Kafka: writes and tombstones, the read to the end offsets
and its deadline, the "last valid value stays in force" rule, unusable records skipped and
counted by reason, and the follower (first read, one call per change, read-your-writes, a broken
callback, a topic that appears later). Every test has its own compacted topic and metric label."""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from types import SimpleNamespace

import kafka
import pytest
from kafka.admin import NewTopic
from prometheus_client import REGISTRY
from pydantic import BaseModel, ConfigDict

from pipeline.common.compacted_table import CompactedTable, TableRecordError
from pipeline.common.contracts import validate_camera_id
from pipeline.common.kafka import KafkaConfig, admin_client, make_consumer, make_producer

pytestmark = pytest.mark.integration

log = logging.getLogger(__name__)

DEEP = b"[" * 100_000
BAD_UTF8 = b'{"id": "\xff\xfe", "n": 1}'


class Item(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    id: str
    n: int


def parse_item(raw: object) -> Item:
    if not isinstance(raw, dict):
        raise ValueError(f"an item is an object, not {type(raw).__name__}")
    return Item.model_validate(raw)


class Env:
    """A topic of the test's own (3 partitions, compacted, or not created yet) and its table."""

    def __init__(self, bootstrap: str, create: bool = True) -> None:
        tag = uuid.uuid4().hex[:8]
        self.cfg = KafkaConfig(bootstrap_servers=bootstrap)
        self.topic = f"t{tag}.table"
        self.reader = f"test_{tag}"
        self.table: CompactedTable[Item] = CompactedTable(
            topic_of=lambda _cfg: self.topic,
            parse=parse_item,
            key_of=lambda item: item.id,
            encode=lambda item: item.model_dump(mode="json"),
            check_key=validate_camera_id,
            reader=self.reader,
            noun="item",
            client="test-table",
            logger=log,
            create_topic=False,
        )
        if create:
            self.create()

    def create(self) -> None:
        admin = admin_client(self.cfg)
        try:
            admin.create_topics(
                [NewTopic(self.topic, 3, 1, topic_configs={"cleanup.policy": "compact"})],
                timeout_ms=15000,
            )
        finally:
            admin.close()

    def raw(self, items: list[tuple[bytes, bytes | None]]) -> None:
        """Produce records as they are, in order (one partition per key, like the table's)."""
        producer = make_producer(self.cfg, "test-table-raw", max_request_size=2 * 1024 * 1024)
        try:
            for key, value in items:
                producer.send(self.topic, key=key, value=value).get(timeout=15)
        finally:
            producer.close(timeout=10)

    def skipped(self, reason: str) -> float:
        labels = {"reader": self.reader, "reason": reason}
        return REGISTRY.get_sample_value("vigil_records_skipped_total", labels) or 0.0


def item(key: str, n: int) -> bytes:
    return json.dumps({"id": key, "n": n}).encode()


@pytest.fixture
def env(kafka_bootstrap) -> Env:
    return Env(kafka_bootstrap)


@pytest.mark.filterwarnings("ignore:Pydantic serializer warnings")  # the value built unchecked
def test_put_read_delete_in_key_order(env: Env) -> None:
    t, cfg = env.table, env.cfg
    assert t.read(cfg) == {} and t.read_keys(cfg) == set()
    t.put(cfg, [Item(id="b", n=1), Item(id="a", n=2), Item(id="c", n=3)])
    got = t.read(cfg)
    assert list(got) == ["a", "b", "c"]  # in key order, whatever the partitions
    assert got["a"] == Item(id="a", n=2)
    t.put(cfg, [Item(id="a", n=20)])
    t.delete(cfg, ["b"])
    assert t.read(cfg) == {"a": Item(id="a", n=20), "c": Item(id="c", n=3)}
    assert t.read_keys(cfg) == {"a", "c"}

    # the values on the topic: the encoded JSON, keyed by id; a deletion is a tombstone
    c = make_consumer(cfg, "test-table-check", group_id=None, enable_auto_commit=False)
    try:
        tps = [kafka.TopicPartition(env.topic, p) for p in range(3)]
        c.assign(tps)
        c.seek_to_beginning(*tps)
        records = []
        deadline = time.monotonic() + 15
        while len(records) < 5 and time.monotonic() < deadline:
            for recs in c.poll(timeout_ms=500).values():
                records.extend(recs)
    finally:
        c.close()
    assert sorted(((r.key, r.value) for r in records), key=repr) == sorted(
        [
            (b"a", b'{"id":"a","n":2}'),
            (b"a", b'{"id":"a","n":20}'),
            (b"b", b'{"id":"b","n":1}'),
            (b"b", None),
            (b"c", b'{"id":"c","n":3}'),
        ],
        key=repr,
    )

    # refused before anything is sent: a key no record may have, a value its readers would skip
    with pytest.raises(ValueError, match="invalid camera id"):
        t.delete(cfg, ["ok", "no such/key"])
    with pytest.raises(ValueError):
        t.put(cfg, [Item.model_construct(id="d", n="three")])
    assert set(t.read(cfg)) == {"a", "c"}


def test_a_missing_topic_reads_empty_and_is_not_created(kafka_bootstrap) -> None:
    env = Env(kafka_bootstrap, create=False)
    assert env.table.read(env.cfg) == {}
    c = make_consumer(env.cfg, "test-topics", group_id=None, allow_auto_create_topics=False)
    try:
        assert env.topic not in c.topics()
    finally:
        c.close()


def test_the_last_valid_value_stays_in_force(env: Env, caplog) -> None:
    env.raw(
        [
            (b"a", item("a", 1)),
            (b"a", item("a", 2)),
            (b"a", DEEP),  # later unusable records of "a": its last valid value stays
            (b"a", BAD_UTF8),
            (b"a", b"{not json"),
            (b"a", json.dumps({"id": "a", "n": "two"}).encode()),
            (b"a", item("x", 3)),  # the key is not the value's id
            (b"a", b"[1, 2]"),
            (b"b", item("b", 1)),
            (b"b", None),
            (b"b", b"{not json"),  # deleted, then unusable: no value
            (b"c", b"{not json"),
            (b"c", item("c", 5)),  # unusable, then valid: the valid one
            (b"ghost", None),
        ]
    )
    with caplog.at_level(logging.ERROR, logger=__name__):
        got = env.table.read(env.cfg)
    assert got == {"a": Item(id="a", n=2), "c": Item(id="c", n=5)}
    assert env.table.read_keys(env.cfg) == {"a", "b", "c"}  # "b" has a record, not a valid one
    # each unusable record newer than its key's last valid value is counted by reason and
    # logged on one line (read_keys parses nothing: it skips nothing)
    for reason, n in [("too_deep", 1), ("not_utf8", 1), ("not_json", 2), ("invalid", 3)]:
        assert env.skipped(reason) == n, reason
    lines = [r.getMessage() for r in caplog.records if env.reader in r.getMessage()]
    assert len(lines) == 7 and all("\n" not in line for line in lines), lines
    assert any("item record 'a': key does not match the item's id 'x'" in ln for ln in lines)
    assert any("'a'" in ln and "Input should be a valid integer" in ln for ln in lines)


def test_read_gives_up_at_its_deadline(env: Env, monkeypatch) -> None:
    """A broker that never delivers the records: the read waits its whole deadline and not past
    it (no poll or position call may reach beyond it), then says so. The table's clock is one
    that only the stalled polls move, so this is exact on a loaded machine."""
    from pipeline.common import compacted_table

    env.raw([(b"a", item("a", 1))])
    start, timeout_s = 100.0, 1.2
    deadline = start + timeout_s
    now = [start]
    polls: list[tuple[float, int]] = []  # (clock, timeout_ms) of each call
    positions: list[tuple[float, int]] = []
    real_poll, real_position = kafka.KafkaConsumer.poll, kafka.KafkaConsumer.position

    def stalled(self, timeout_ms=0, **kw):  # waits all it is allowed to, delivers nothing
        polls.append((now[0], timeout_ms))
        if len(polls) > 20:
            raise AssertionError(f"still polling at {now[0] - start:.2f} s: {polls}")
        now[0] += timeout_ms / 1000
        return {}

    def position(self, tp, timeout_ms=None):
        positions.append((now[0], timeout_ms))
        return real_position(self, tp, timeout_ms=timeout_ms)

    monkeypatch.setattr(compacted_table, "time", SimpleNamespace(monotonic=lambda: now[0]))
    monkeypatch.setattr(kafka.KafkaConsumer, "poll", stalled)
    monkeypatch.setattr(kafka.KafkaConsumer, "position", position)
    with pytest.raises(TimeoutError, match=f"reading {env.topic} did not finish in 1.2 s"):
        env.table.read(env.cfg, timeout_s=timeout_s)
    assert now[0] == pytest.approx(deadline)  # it waited the whole deadline, and no longer
    assert [ms for _, ms in polls] == [500, 500, 200]  # polls of at most 500 ms, the last cut
    for at, ms in polls + positions:
        assert ms > 0 and at + ms / 1000 <= deadline + 1e-9, (polls, positions)
    monkeypatch.setattr(kafka.KafkaConsumer, "poll", real_poll)
    monkeypatch.setattr(compacted_table, "time", time)
    assert env.table.read(env.cfg) == {"a": Item(id="a", n=1)}


def test_parse_record_errors_carry_the_decoders_reason(env: Env) -> None:
    t = env.table
    assert t.parse_record(b"a", None) is None
    assert t.parse_record(b"a", item("a", 1)) == Item(id="a", n=1)
    assert t.parse_record(None, item("a", 1)) == Item(id="a", n=1)  # no key: nothing to match
    for value, reason in [
        (DEEP, "too_deep"),
        (BAD_UTF8, "not_utf8"),
        (b"{", "not_json"),
        (b"[]", "invalid"),
        (item("b", 1), "invalid"),
    ]:
        with pytest.raises(TableRecordError) as e:
            t.parse_record(b"a", value)
        assert e.value.reason == reason and "\n" not in str(e.value)


def test_follower_reports_the_first_read_then_each_change(env: Env) -> None:
    t, cfg = env.table, env.cfg
    t.put(cfg, [Item(id="a", n=1), Item(id="b", n=1)])
    calls: list[dict[str, Item]] = []
    called = threading.Condition()

    def on_change(items: dict[str, Item]) -> None:
        with called:
            calls.append(items)
            called.notify_all()

    def next_call(n: int) -> dict[str, Item]:
        with called:
            assert called.wait_for(lambda: len(calls) >= n, 15), calls
            return calls[n - 1]

    follower = t.follow(cfg, on_change, name="test-follower", reader=env.reader).start()
    try:
        assert follower.ready.wait(15)
        assert next_call(1) == {"a": Item(id="a", n=1), "b": Item(id="b", n=1)}
        assert list(next_call(1)) == ["a", "b"]

        t.put(cfg, [Item(id="c", n=1)])
        assert next_call(2) == {**calls[0], "c": Item(id="c", n=1)}
        assert follower.wait(lambda items: "c" in items, 5)  # read-your-writes

        t.put(cfg, [Item(id="a", n=1)])  # the same value again: no call
        env.raw([(b"a", DEEP), (b"b", b"{nope"), (b"a", item("a", "x"))])  # unusable: no call
        t.delete(cfg, ["b"])
        assert next_call(3) == {"a": Item(id="a", n=1), "c": Item(id="c", n=1)}
        assert follower.items == calls[2] and follower.snapshot(1) == calls[2]
        assert follower.skipped.total == 3 and env.skipped("not_json") == 1
        assert follower.error is None and follower.connected()
        # nothing more came of the records above (the deletion's call was the next one)
        t.put(cfg, [Item(id="d", n=1)])
        assert set(next_call(4)) == {"a", "c", "d"}
        assert len(calls) == 4
    finally:
        follower.stop()
    assert not follower._thread.is_alive()


def test_follower_outlives_a_broken_callback_and_waits_for_its_topic(kafka_bootstrap) -> None:
    env = Env(kafka_bootstrap, create=False)
    seen: list[set[str]] = []

    def on_change(items: dict[str, Item]) -> None:
        seen.append(set(items))
        raise RuntimeError("a bug in the callback")

    follower = env.table.follow(env.cfg, on_change, name="test-late", reader=env.reader)
    follower.start()
    try:
        with pytest.raises(Exception, match="does not exist"):
            follower.snapshot(timeout_s=2)
        assert not follower.ready.is_set() and not follower.connected()
        env.create()
        env.table.put(env.cfg, [Item(id="a", n=1)])
        assert follower.wait(lambda items: "a" in items, 30), follower.error
        env.table.put(env.cfg, [Item(id="b", n=1)])
        deadline = time.monotonic() + 15
        while (not seen or seen[-1] != {"a", "b"}) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert seen[-1] == {"a", "b"} and follower._thread.is_alive(), seen
    finally:
        follower.stop()
