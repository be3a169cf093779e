"""Rule preview (alerts/preview.py): recorded detection messages of a time range replayed through
a sandboxed engine holding only the candidate rule.

Unit tests (no services): the pairing of started/ended events, the argument checks, and the
reading logic against an in-memory stand-in for the Kafka consumer (range boundaries, the end
offsets taken at the start, camera filtering before decoding, malformed messages).
Integration tests (``-m integration``): the real local Kafka and Redis, one topic per test.
"""

from __future__ import annotations

import time
import uuid
from collections import namedtuple
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import redis
from kafka.admin import NewTopic
from kafka.structs import OffsetAndTimestamp

from alerts import preview, preview_snapshots
from alerts.config import AlertsConfig, parse_alerts_config
from alerts.engine import RuleEngine
from alerts.events import AlertEvent
from alerts.preview import PreviewResult, pair_events, preview_rule
from alerts.rules import parse_rule
from pipeline.common.jsoncodec import dumps
from pipeline.common.kafka import KafkaConfig, KafkaTopics, admin_client, make_producer
from pipeline.common.redis import RedisConfig, RedisKeys, redis_client
from tests.support.config import REDIS_URL
from tests.support.messages import det_message
from tests.support.net import free_port

ZONE = [[0.0, 0.0], [0.5, 0.0], [0.5, 1.0], [0.0, 1.0]]
IN_BOX = [0.1, 0.2, 0.3, 0.8]  # bottom centre (0.2, 0.8): inside ZONE
OUT_BOX = [0.7, 0.2, 0.9, 0.8]
CAR = {"class_id": 2, "label": "car", "confidence": 0.7, "box": [0.05, 0.5, 0.3, 0.7]}
FPS = 5
RULE_MAPPING = {
    "id": "lobby-zone",
    "type": "zone_intrusion",
    "cameras": ["lobby"],
    "zone": ZONE,
    "classes": ["person"],
    "min_frames": 3,
    "clear_after_s": 1.0,
    "cooldown_s": 0,
    "severity": "high",
    "enabled": False,  # a preview tries a rule before it is turned on
}


def timeline(
    camera: str, t0: float, seconds: float, visits: list[tuple[float, float, int]]
) -> list[tuple[str, dict]]:
    """``camera`` at 5 fps from ``t0`` for ``seconds``: a parked car (never a person), and a
    person per visit ``(from_s, to_s, track)`` inside the zone while ``from_s <= t < to_s``,
    else one walking outside it (track 99)."""
    epoch = int(t0 * 1000)
    out = []
    for seq in range(int(seconds * FPS)):
        t = seq / FPS
        dets = [dict(CAR, track_id=50)]
        inside = [tid for a, b, tid in visits if a <= t < b]
        if inside:
            dets.append(
                {
                    "class_id": 0,
                    "label": "person",
                    "confidence": 0.9,
                    "box": IN_BOX,
                    "track_id": inside[0],
                }
            )
        else:
            dets.append(
                {
                    "class_id": 0,
                    "label": "person",
                    "confidence": 0.9,
                    "box": OUT_BOX,
                    "track_id": 99,
                }
            )
        out.append((camera, det_message(camera, epoch, seq, t0 + t, dets)))
    return out


def interleave(*cams: list[tuple[str, dict]]) -> list[tuple[str, dict]]:
    """Cameras frame by frame, like live ones."""
    out = []
    for frames in zip(*cams, strict=True):
        out.extend(frames)
    return out


def ts_ms(msg: dict) -> int:
    """The record timestamp the ingest worker gives a message (pipeline/ingest/worker.py)."""
    return int(msg["capture_ts"] * 1000)


def live_pairs(rule_mapping: dict, msgs: list[dict]) -> list:
    """What the live service's engine raises for these messages, from a fresh state."""
    engine = RuleEngine(parse_alerts_config({"rules": [dict(rule_mapping, enabled=True)]}))
    events: list[AlertEvent] = []
    for m in msgs:
        events += engine.process(m)
    return pair_events(events)


def facts(alert: dict) -> dict:
    """A would-be alert without its picture (``snapshot*``)."""
    return {k: v for k, v in alert.items() if not k.startswith("snapshot")}


def _jpeg(value: int = 100) -> bytes:
    return cv2.imencode(".jpg", np.full((90, 160, 3), value, np.uint8))[1].tobytes()


# -- pairing --------------------------------------------------------------------------------------


def _ev(aid: str, status: str, started_at: float, camera: str = "cam", **kw) -> AlertEvent:
    return AlertEvent(
        id=aid,
        camera_id=camera,
        rule_id="r",
        rule_type="crowding",
        status=status,  # type: ignore[arg-type]
        severity="high",
        started_at=started_at,
        updated_at=started_at,
        frame_seq=1,
        epoch=1,
        **kw,
    )


def test_pair_events_pairs_by_id_oldest_first():
    events = [
        _ev("b", "started", 20.0, count=3, box=(0.1, 0.2, 0.3, 0.4), label="person"),
        _ev("a", "started", 10.0, count=5),
        _ev("b", "ended", 20.0, ended_at=25.0, count=7),  # crowding: "ended" has the peak
        _ev("z", "ended", 1.0, ended_at=2.0),  # its start is outside what was read: dropped
        _ev("c", "started", 10.0, camera="another"),
        _ev("b", "started", 20.0),  # a repeat never replaces the first
    ]
    alerts = [p.to_dict() for p in pair_events(events)]
    assert [a["id"] for a in alerts] == ["c", "a", "b"]  # by start, then camera
    by_id = {a["id"]: a for a in alerts}
    assert by_id["a"]["ended_at"] is None and by_id["a"]["count"] == 5  # still open
    b = by_id["b"]
    assert (b["started_at"], b["ended_at"], b["count"]) == (20.0, 25.0, 7)
    assert b["box"] == [0.1, 0.2, 0.3, 0.4] and b["label"] == "person"
    assert set(b) == {
        "id",
        "camera_id",
        "rule_id",
        "started_at",
        "ended_at",
        "label",
        "track_id",
        "count",
        "box",
        "severity",
        "snapshot",
        "snapshot_source",
        "snapshot_note",
    }


def test_check_times_uses_the_record_timestamp_not_todays_clock():
    old = 1_600_000_000.0  # years ago: the service's clock check would refuse it today
    preview._check_times(int(old * 1000), {"capture_ts": old + 1}, 300.0, 86400.0)
    with pytest.raises(ValueError, match="ahead of the record's timestamp"):
        preview._check_times(int(old * 1000), {"capture_ts": old + 301}, 300.0, 86400.0)
    with pytest.raises(ValueError, match="behind the record's timestamp"):
        preview._check_times(int(old * 1000), {"capture_ts": old - 86401}, 300.0, 86400.0)
    preview._check_times(int(old * 1000), {"capture_ts": old + 10_000}, None, None)


# -- reading, against an in-memory consumer -------------------------------------------------------

Rec = namedtuple("Rec", "topic partition offset timestamp key value")


class FakeConsumer:
    """The part of KafkaConsumer the preview uses, over in-memory partitions; small fetches so
    a partition takes several polls."""

    def __init__(self, topic: str, parts: dict[int, list[tuple[str | None, bytes | None, int]]]):
        self.topic = topic
        self.logs = {
            p: [
                Rec(topic, p, i, ts, None if k is None else k.encode(), v)
                for i, (k, v, ts) in enumerate(recs)
            ]
            for p, recs in parts.items()
        }
        self.pos: dict = {}
        self.paused: set = set()
        self.closed = False
        self.polls = 0
        self.batch = 7  # records per partition and poll

    def append(self, partition: int, key: str, value: bytes, ts: int) -> None:
        log = self.logs[partition]
        log.append(Rec(self.topic, partition, len(log), ts, key.encode(), value))

    def partitions_for_topic(self, topic):
        return set(self.logs) if topic == self.topic else set()

    def end_offsets(self, tps, timeout_ms=None):
        return {tp: len(self.logs[tp.partition]) for tp in tps}

    def offsets_for_times(self, stamps, timeout_ms=None):
        out = {}
        for tp, ts in stamps.items():
            hit = next((r for r in self.logs[tp.partition] if r.timestamp >= ts), None)
            out[tp] = None if hit is None else OffsetAndTimestamp(hit.offset, hit.timestamp, -1)
        return out

    def assign(self, tps):  # reused by the next preview as if it were a new consumer
        self.pos = dict.fromkeys(tps, 0)
        self.paused = set()

    def seek(self, tp, offset):
        self.pos[tp] = offset

    def poll(self, timeout_ms=0, max_records=None):
        self.polls += 1
        out = {}
        for tp, off in self.pos.items():
            if tp in self.paused:
                continue
            recs = self.logs[tp.partition][off : off + self.batch]
            # keep reading what is there even past the end offsets taken at the start:
            # stopping is the preview's job
            self.pos[tp] = off + len(recs)
            if recs:
                out[tp] = recs
        return out

    def position(self, tp, timeout_ms=None):
        return self.pos[tp]

    def pause(self, *tps):
        self.paused.update(tps)

    def close(self, autocommit=True, timeout_ms=None):
        self.closed = True


class FakeRedis:
    def __init__(self, data: dict[str, bytes] | None = None, down: bool = False):
        self.data = data or {}
        self.down = down
        self.gets: list[str] = []
        self.executes = 0

    def pipeline(self, transaction=True):
        self.gets = []
        return self

    def get(self, key):
        self.gets.append(key)

    def execute(self):
        self.executes += 1
        if self.down:
            raise redis.ConnectionError("Error 111 connecting to 127.0.0.1:1. Connection refused.")
        return [self.data.get(k) for k in self.gets]

    def close(self):
        pass


def _settings(
    topic: str = "t.detections", redis_url: str = REDIS_URL, prefix: str = "tp:", **alerts
) -> SimpleNamespace:
    return SimpleNamespace(
        kafka=KafkaConfig(topics=KafkaTopics(detections=topic)),
        redis=RedisConfig(url=redis_url, key_prefix=prefix),
        alerts=parse_alerts_config(alerts),
    )


@pytest.fixture
def fake_kafka(monkeypatch):
    """Install a FakeConsumer built from {partition: [(camera, message | raw bytes), ...]}."""
    made = {}

    def install(parts, topic="t.detections"):
        recs = {
            p: [
                (cam, m if isinstance(m, bytes | type(None)) else dumps(m), ts)
                for cam, m, ts in items
            ]
            for p, items in parts.items()
        }
        made["consumer"] = FakeConsumer(topic, recs)

        def make_consumer(cfg, suffix, **kw):
            assert kw["group_id"] is None and kw["enable_auto_commit"] is False
            assert cfg.request_timeout_ms <= 15000 and cfg.bootstrap_timeout_ms <= 15000
            return made["consumer"]

        monkeypatch.setattr(preview, "make_consumer", make_consumer)
        return made["consumer"]

    return install


@pytest.fixture
def fake_redis(monkeypatch):
    box = {}

    def install(data=None, down=False):
        box["r"] = FakeRedis(data, down)
        monkeypatch.setattr(preview_snapshots, "redis_client", lambda cfg: box["r"])
        return box["r"]

    return install


def _records(msgs: list[tuple[str, dict]]) -> list[tuple[str, dict, int]]:
    return [(cam, m, ts_ms(m)) for cam, m in msgs]


def test_range_boundaries_cameras_and_malformed(fake_kafka, fake_redis):
    t0 = 1_700_000_000.0
    lobby = timeline("lobby", t0, 70, [(2, 5, 1), (30, 40, 2), (55, 70, 3)])
    hall = timeline("hall", t0, 70, [(30, 35, 7)])
    p0 = _records(lobby)
    p1 = _records(hall)
    # malformed, in range: counted as skipped on the rule's camera; never decoded on another
    p0.insert(130, ("lobby", b"{not json", int((t0 + 25) * 1000)))
    p0.insert(131, ("lobby", None, int((t0 + 25) * 1000)))
    p1.insert(130, ("hall", b"{not json", int((t0 + 25) * 1000)))
    # an out-of-order record from before the range, after the range's first offset: not used
    early = det_message("lobby", 1, 10**6, t0 + 1, [])
    p0.insert(140, ("lobby", early, ts_ms(early)))
    consumer = fake_kafka({0: p0, 1: p1})
    fake_redis()
    start, end = t0 + 20, t0 + 60
    res = preview_rule(_settings(), parse_rule(RULE_MAPPING), start, end)

    in_range = [m for _, m in lobby if start * 1000 <= ts_ms(m) <= end * 1000]
    hall_in_range = [m for _, m in hall if start * 1000 <= ts_ms(m) <= end * 1000]
    assert res.messages == len(in_range) + len(hall_in_range) + 3
    assert res.frames == len(in_range) and res.skipped == 2
    assert (res.start, res.end, res.truncated) == (start, end, False)
    expected = [facts(p.to_dict()) for p in live_pairs(RULE_MAPPING, in_range)]
    assert [facts(a) for a in res.alerts] == expected
    assert [(a["track_id"], a["started_at"], a["ended_at"]) for a in res.alerts] == [
        (2, t0 + 30, pytest.approx(t0 + 39.8)),
        (3, t0 + 55, None),  # still inside at the end of the range
    ]
    assert all(a["camera_id"] == "lobby" and a["severity"] == "high" for a in res.alerts)
    assert consumer.closed and consumer.paused == set(consumer.pos)

    # the whole recording: the visit before the range is there too, hence its absence above
    whole = preview_rule(_settings(), parse_rule(RULE_MAPPING), t0, t0 + 100)
    assert [a["track_id"] for a in whole.alerts] == [1, 2, 3]
    assert whole.alerts[2]["ended_at"] is None  # inside until the recording stops
    # explicit cameras replace the rule's; "*" is every camera
    hall_only = preview_rule(_settings(), parse_rule(RULE_MAPPING), start, end, cameras=["hall"])
    assert [(a["camera_id"], a["track_id"]) for a in hall_only.alerts] == [("hall", 7)]
    assert hall_only.skipped == 1  # now hall's bad record is decoded, lobby's are not
    both = preview_rule(_settings(), parse_rule(RULE_MAPPING), start, end, cameras=["*"])
    assert {a["camera_id"] for a in both.alerts} == {"lobby", "hall"} and both.skipped == 3


def test_envelope_checks_of_the_service(fake_kafka, fake_redis):
    """Records the service would dead-letter are skipped: key not the camera id, capture time far
    from the record's timestamp (the record's, not today's clock: the recording is old)."""
    t0 = 1_700_000_000.0  # years ago
    msgs = _records(timeline("lobby", t0, 20, [(2, 8, 1)]))
    wrong_key = det_message("hall", 1, 0, t0 + 9, [])
    far_ahead = det_message("lobby", int(t0 * 1000), 10_000, t0 + 9 + 3600, [])
    msgs[45:45] = [
        ("lobby", wrong_key, ts_ms(wrong_key)),
        ("lobby", far_ahead, int((t0 + 9) * 1000)),
    ]
    fake_kafka({0: msgs})
    fake_redis()
    res = preview_rule(_settings(), parse_rule(RULE_MAPPING), t0, t0 + 20)
    assert (res.messages, res.frames, res.skipped) == (len(msgs), len(msgs) - 2, 2)
    assert [a["track_id"] for a in res.alerts] == [1]  # the far-ahead frame did not move time


def test_end_offsets_are_taken_when_the_preview_starts(fake_kafka, fake_redis, monkeypatch):
    t0 = 1_700_000_000.0
    msgs = timeline("lobby", t0, 20, [(2, 8, 1)])
    consumer = fake_kafka({0: _records(msgs)})
    fake_redis()
    real_assign = consumer.assign

    def assign_and_grow(tps):  # a live topic: records keep coming while the preview runs
        real_assign(tps)
        for seq in range(100, 200):
            m = det_message("lobby", int(t0 * 1000), seq, t0 + 10 + seq / 100, [])
            consumer.append(0, "lobby", dumps(m), ts_ms(m))

    monkeypatch.setattr(consumer, "assign", assign_and_grow)
    res = preview_rule(_settings(), parse_rule(RULE_MAPPING), t0, t0 + 3600)
    assert res.messages == len(msgs) == res.frames
    assert [a["track_id"] for a in res.alerts] == [1]


def test_empty_range_and_missing_topic(fake_kafka, fake_redis):
    t0 = 1_700_000_000.0
    fake_kafka({0: _records(timeline("lobby", t0, 10, [(2, 8, 1)])), 1: []})
    r = fake_redis()
    rule = parse_rule(RULE_MAPPING)
    for start, end in ((t0 + 100, t0 + 200), (t0 - 100, t0 - 50)):
        res = preview_rule(_settings(), rule, start, end)
        assert (res.alerts, res.messages, res.frames, res.skipped) == ([], 0, 0, 0)
    res = preview_rule(_settings(topic="no.such.topic"), rule, t0, t0 + 10)
    assert (res.alerts, res.messages) == ([], 0)
    assert r.executes == 0  # no alert: no Redis round trip


def test_max_alerts_truncates_oldest_first(fake_kafka, fake_redis):
    t0 = 1_700_000_000.0
    visits = [(2 + 4 * k, 4 + 4 * k, k + 1) for k in range(5)]
    fake_kafka({0: _records(timeline("lobby", t0, 30, visits))})
    fake_redis()
    res = preview_rule(_settings(), parse_rule(RULE_MAPPING), t0, t0 + 30, max_alerts=3)
    assert res.truncated and [a["track_id"] for a in res.alerts] == [1, 2, 3]
    res = preview_rule(_settings(), parse_rule(RULE_MAPPING), t0, t0 + 30, max_alerts=5)
    assert not res.truncated and len(res.alerts) == 5


def test_snapshots_from_redis_one_round_trip(fake_kafka, fake_redis):
    t0 = 1_700_000_000.0
    msgs = timeline("lobby", t0, 30, [(2, 6, 1), (10, 14, 2)])
    fake_kafka({0: _records(msgs)})
    first = live_pairs(RULE_MAPPING, [m for _, m in msgs])[0].started
    key = RedisKeys("tp:").frame("lobby", first.epoch, first.frame_seq)
    r = fake_redis({key: _jpeg()})
    res = preview_rule(_settings(), parse_rule(RULE_MAPPING), t0, t0 + 30)
    assert r.executes == 1 and len(r.gets) == 2
    img = cv2.imdecode(np.frombuffer(res.alerts[0]["snapshot"], np.uint8), cv2.IMREAD_COLOR)
    assert img.shape == (90, 160, 3)
    # the box is drawn in the severity colour (high: BGR (0, 128, 255)) on the grey frame
    x1, y2 = round(IN_BOX[0] * 159), round(IN_BOX[3] * 89)
    edge = img[y2 - 6 : y2 + 1, x1 - 1 : x1 + 2].reshape(-1, 3).mean(axis=0)
    assert edge[2] > 180 and edge[0] < 80, edge
    assert res.alerts[1]["snapshot"] is None  # that frame expired

    fake_redis(down=True)
    res = preview_rule(_settings(), parse_rule(RULE_MAPPING), t0, t0 + 30)
    assert len(res.alerts) == 2 and all(a["snapshot"] is None for a in res.alerts)


def test_pictures_from_recordings_once_the_live_frame_expired(fake_kafka, fake_redis):
    """The first alert's frame is in Redis (live); the others' expired: the frame source (the
    console's recordings) has the second's moment, not the third's; at most max_recorded frames
    are decoded; a source that fails is asked once; past the deadline pictures are left out."""
    t0 = 1_700_000_000.0
    msgs = timeline("lobby", t0, 30, [(2, 6, 1), (10, 14, 2), (18, 22, 3), (24, 28, 4)])
    fake_kafka({0: _records(msgs)})
    pairs = live_pairs(RULE_MAPPING, [m for _, m in msgs])
    first, second, third, fourth = (p.started for p in pairs)
    fake_redis({RedisKeys("tp:").frame("lobby", first.epoch, first.frame_seq): _jpeg()})
    asked, decoded = [], []

    def decoder(t, value):
        def decode():
            decoded.append(t)
            return None if value is None else np.full((90, 160, 3), value, np.uint8)

        return decode

    def recording(camera, t):  # the 2nd alert's moment recorded, the 4th's unreadable
        asked.append((camera, t))
        return {second.started_at: decoder(t, 40), fourth.started_at: decoder(t, None)}.get(t)

    rule = parse_rule(RULE_MAPPING)
    res = preview_rule(_settings(), rule, t0, t0 + 30, frames_from=recording)
    assert asked == [("lobby", ev.started_at) for ev in (second, third, fourth)]
    assert decoded == [second.started_at, fourth.started_at]
    got = [(a["snapshot_source"], a["snapshot_note"]) for a in res.alerts]
    assert got == [
        ("live", None),
        ("recording", None),
        (None, "not recorded"),
        (None, "recording unreadable"),
    ]
    assert [a["snapshot"] is None for a in res.alerts] == [False, False, True, True]
    live = cv2.imdecode(np.frombuffer(res.alerts[0]["snapshot"], np.uint8), cv2.IMREAD_COLOR)
    rec = cv2.imdecode(np.frombuffer(res.alerts[1]["snapshot"], np.uint8), cv2.IMREAD_COLOR)
    assert abs(float(live[80:, 130:].mean()) - 100) < 3  # the live frame's grey
    assert abs(float(rec[80:, 130:].mean()) - 40) < 3  # the recording's
    # ... with the alert drawn like a snapshot: the box's edge in the severity colour
    x1, y2 = round(IN_BOX[0] * 159), round(IN_BOX[3] * 89)
    edge = rec[y2 - 6 : y2 + 1, x1 - 1 : x1 + 2].reshape(-1, 3).mean(axis=0)
    assert edge[2] > 180 and edge[0] < 80, edge

    # the cap counts frames decoded, not moments looked up (the 3rd is not recorded)
    decoded.clear()
    res = preview_rule(_settings(), rule, t0, t0 + 30, frames_from=recording, max_recorded=1)
    assert decoded == [second.started_at]
    assert res.alerts[2]["snapshot_note"] == "not recorded"
    assert res.alerts[3]["snapshot_note"] == (
        "not loaded: pictures from recordings are limited to 1 per preview"
    )

    def broken(camera, t):
        asked.append(t)
        raise redis.ConnectionError("Redis away")

    asked.clear()
    res = preview_rule(_settings(), rule, t0, t0 + 30, frames_from=broken)
    assert len(asked) == 1 and res.alerts[0]["snapshot_source"] == "live"
    assert [a["snapshot_note"] for a in res.alerts[1:]] == ["recording unavailable"] * 3

    # the preview's deadline passes while pictures are decoded: the alerts after it have none
    # and say so, the preview stands (the replay itself finished in time)
    def slow(camera, t):
        time.sleep(0.2)
        return lambda: np.full((90, 160, 3), 40, np.uint8)

    alerts = [p.to_dict() for p in pairs]
    preview_snapshots.add_snapshots(
        _settings(), pairs, alerts, 80, time.monotonic() + 0.1, frames_from=slow
    )
    got = [(a["snapshot_source"], a["snapshot_note"]) for a in alerts]
    assert got == [("live", None), ("recording", None)] + [(None, "time was up")] * 2


def test_sandbox_keeps_the_service_tracker_and_forces_the_rule_on(fake_kafka, fake_redis):
    """Detections without track ids: the engine's IoU tracker numbers them (negative ids),
    with the service's tracker settings; with the tracker off the per-track rule sees nothing."""
    t0 = 1_700_000_000.0
    msgs = timeline("lobby", t0, 20, [(2, 8, 1)])
    for _, m in msgs:
        for d in m["detections"]:
            d.pop("track_id")
    fake_redis()
    fake_kafka({0: _records(msgs)})
    res = preview_rule(_settings(), parse_rule(RULE_MAPPING), t0, t0 + 20)
    assert len(res.alerts) == 1 and res.alerts[0]["track_id"] < 0
    fake_kafka({0: _records(msgs)})
    res = preview_rule(_settings(tracker={"enabled": False}), parse_rule(RULE_MAPPING), t0, t0 + 20)
    assert res.alerts == [] and res.frames == len(msgs)


def test_timeout_while_reading(fake_kafka, fake_redis, monkeypatch):
    t0 = 1_700_000_000.0
    consumer = fake_kafka({0: _records(timeline("lobby", t0, 60, []))})
    fake_redis()
    real_poll = consumer.poll

    def slow_poll(timeout_ms=0, max_records=None):
        time.sleep(0.05)
        return real_poll(timeout_ms, max_records)

    monkeypatch.setattr(consumer, "poll", slow_poll)
    with pytest.raises(
        TimeoutError, match=r"rule preview of 'lobby-zone' did not finish within 0\.3 s"
    ) as e:
        preview_rule(_settings(), parse_rule(RULE_MAPPING), t0, t0 + 60, timeout_s=0.3)
    assert "messages read" in str(e.value) and "shorter time range" in str(e.value)
    assert consumer.closed


def test_timeout_inside_a_big_batch(fake_kafka, fake_redis, monkeypatch):
    """A slow rule on one big fetch: the deadline is checked between records, not only polls."""
    t0 = 1_700_000_000.0
    consumer = fake_kafka({0: _records(timeline("lobby", t0, 300, []))})  # 1500 messages
    consumer.batch = 5000
    fake_redis()
    real = RuleEngine.process
    frames = []

    def slow(self, message):  # at least 2 ms a frame: 3 s for the batch
        frames.append(message)
        time.sleep(0.002)
        return real(self, message)

    monkeypatch.setattr(RuleEngine, "process", slow)
    with pytest.raises(TimeoutError, match=r"within 0\.5 s \(reading t\.detections; \d+ messages"):
        preview_rule(_settings(), parse_rule(RULE_MAPPING), t0, t0 + 300, timeout_s=0.5)
    # the batch was left unfinished: at most 0.5 s / 2 ms frames fit in the time, and the deadline
    # is checked every _CHECK_EVERY records after that
    assert len(frames) <= 0.5 / 0.002 + preview._CHECK_EVERY < 1500, len(frames)


def test_arguments_are_checked_before_kafka(monkeypatch):
    def no_kafka(*a, **kw):
        raise AssertionError("Kafka must not be reached")

    monkeypatch.setattr(preview, "make_consumer", no_kafka)
    rule = parse_rule(RULE_MAPPING)
    with pytest.raises(ValueError, match="before start"):
        preview_rule(_settings(), rule, 100.0, 50.0)
    with pytest.raises(ValueError, match="not a camera id"):
        preview_rule(_settings(), rule, 0.0, 50.0, cameras=["bad camera"])
    with pytest.raises(ValueError, match="timeout_s"):
        preview_rule(_settings(), rule, 0.0, 50.0, timeout_s=0)


def test_kafka_unreachable_fails_within_the_timeout():
    from pipeline.common.kafka import KafkaUnavailable

    cfg = _settings()
    # on its own, the client would try to bootstrap for 40 s: the preview's 2 s bound it
    cfg.kafka = KafkaConfig(
        bootstrap_servers=f"127.0.0.1:{free_port()}",
        bootstrap_timeout_ms=40_000,
        request_timeout_ms=40_000,
    )
    t = time.monotonic()
    with pytest.raises(KafkaUnavailable, match="cannot reach Kafka"):
        preview_rule(cfg, parse_rule(RULE_MAPPING), 0.0, 50.0, timeout_s=2.0)
    assert time.monotonic() - t < cfg.kafka.bootstrap_timeout_ms / 1000 / 2


# -- integration: the real Kafka and Redis ---------------------------------------------------------


@pytest.fixture
def live(kafka_bootstrap):
    """Settings with a topic (3 partitions) and a Redis key prefix of this test only; both are
    removed afterwards."""
    tag = uuid.uuid4().hex[:8]
    kcfg = KafkaConfig(
        bootstrap_servers=kafka_bootstrap,
        topics=KafkaTopics(detections=f"t{tag}.detections"),
        detections_partitions=3,
    )
    admin = admin_client(kcfg)
    admin.create_topics([NewTopic(kcfg.topics.detections, 3, 1)], timeout_ms=15000)
    settings = SimpleNamespace(
        kafka=kcfg,
        redis=RedisConfig(url=REDIS_URL, key_prefix=f"t{tag}:"),
        alerts=AlertsConfig(),
    )
    client = redis_client(settings.redis)
    try:
        client.ping()
    except redis.RedisError as e:
        pytest.fail(f"Redis is not reachable at {REDIS_URL}: run `make infra-up` ({e})")
    yield settings
    keys = list(client.scan_iter(match=f"t{tag}:*", count=1000))
    if keys:
        client.unlink(*keys)
    client.close()
    try:
        admin.delete_topics([kcfg.topics.detections], timeout_ms=15000)
    finally:
        admin.close()


def produce(settings, msgs: list[tuple[str, object, int]]) -> None:
    """(key, message or raw bytes, record timestamp in ms), in order."""
    producer = make_producer(settings.kafka, "test-preview", linger_ms=20)
    try:
        for key, value, ts in msgs:
            producer.send(settings.kafka.topics.detections, key=key, value=value, timestamp_ms=ts)
        producer.flush(timeout=60)
    finally:
        producer.close(timeout=10)


@pytest.mark.integration
def test_preview_on_kafka_matches_the_live_engine(live):
    t0 = float(int(time.time()) - 600)
    lobby = timeline("lobby", t0, 70, [(2, 5, 1), (30, 40, 2), (55, 70, 3)])
    hall = timeline("hall", t0, 70, [(30, 35, 7)])
    records = [(cam, m, ts_ms(m)) for cam, m in interleave(lobby, hall)]
    bad_ts = int((t0 + 25) * 1000)
    at = next(i for i, r in enumerate(records) if r[2] >= bad_ts)  # in time order
    records[at:at] = [("lobby", b"{not json", bad_ts), ("hall", b"{not json", bad_ts)]
    produce(live, records)

    start, end = t0 + 20, t0 + 60
    in_range = [m for _, m in lobby if start * 1000 <= ts_ms(m) <= end * 1000]
    expected = live_pairs(RULE_MAPPING, in_range)
    # the frame of the first alert is still in Redis, the second's expired
    keys = RedisKeys(live.redis.key_prefix)
    first = expected[0].started
    client = redis_client(live.redis)
    client.set(keys.frame("lobby", first.epoch, first.frame_seq), _jpeg(), ex=300)
    client.close()

    t = time.monotonic()
    res = preview_rule(live, parse_rule(RULE_MAPPING), start, end, timeout_s=60)
    took = time.monotonic() - t
    assert isinstance(res, PreviewResult)
    n_in_range = sum(1 for _, _, ts in records if start * 1000 <= ts <= end * 1000)
    assert res.messages == n_in_range
    assert res.frames == len(in_range) and res.skipped == 1  # hall's bad record is not decoded
    got = [facts(a) for a in res.alerts]
    want = [facts(p.to_dict()) for p in expected]
    assert got == want  # same ids, times, boxes as the live engine
    assert [(a["track_id"], a["started_at"], a["ended_at"]) for a in res.alerts] == [
        (2, t0 + 30, pytest.approx(t0 + 39.8)),
        (3, t0 + 55, None),
    ]
    snap = cv2.imdecode(np.frombuffer(res.alerts[0]["snapshot"], np.uint8), cv2.IMREAD_COLOR)
    assert snap is not None and snap.shape == (90, 160, 3)
    assert res.alerts[1]["snapshot"] is None
    assert 0 < res.seconds <= took  # the preview's own wall time, inside the call's

    # track 1's visit, before start, is in the recording: a range that covers it finds it
    whole = preview_rule(live, parse_rule(RULE_MAPPING), t0, t0 + 70, timeout_s=60)
    assert [a["track_id"] for a in whole.alerts] == [1, 2, 3]
    hall_only = preview_rule(live, parse_rule(RULE_MAPPING), start, end, cameras=["hall"])
    assert [(a["camera_id"], a["track_id"]) for a in hall_only.alerts] == [("hall", 7)]
    assert hall_only.messages == res.messages


@pytest.mark.integration
def test_preview_empty_range_on_kafka(live):
    t0 = float(int(time.time()) - 600)
    rule = parse_rule(RULE_MAPPING)
    res = preview_rule(live, rule, t0, t0 + 60, timeout_s=30)  # nothing produced yet
    assert (res.alerts, res.messages, res.frames) == ([], 0, 0)
    produce(live, [(c, m, ts_ms(m)) for c, m in timeline("lobby", t0, 20, [(2, 8, 1)])])
    for start, end in ((t0 + 30, t0 + 90), (t0 - 90, t0 - 30)):
        res = preview_rule(live, rule, start, end, timeout_s=30)
        assert (res.alerts, res.messages, res.frames) == ([], 0, 0)
    assert len(preview_rule(live, rule, t0, t0 + 20, timeout_s=30).alerts) == 1


@pytest.mark.integration
def test_preview_without_redis_still_answers(live):
    t0 = float(int(time.time()) - 600)
    msgs = timeline("lobby", t0, 20, [(2, 8, 1)])
    produce(live, [(c, m, ts_ms(m)) for c, m in msgs])
    live.redis = RedisConfig(url=f"redis://127.0.0.1:{free_port()}/15", socket_timeout_s=1.0)
    res = preview_rule(live, parse_rule(RULE_MAPPING), t0, t0 + 20, timeout_s=30)
    assert len(res.alerts) == 1 and res.alerts[0]["snapshot"] is None


@pytest.mark.integration
def test_preview_timeout_on_kafka(live, monkeypatch):
    t0 = float(int(time.time()) - 600)
    msgs = timeline("lobby", t0, 200, [])  # 1000 messages
    produce(live, [(c, m, ts_ms(m)) for c, m in msgs])
    real = RuleEngine.process
    frames = []

    def slow(self, message):  # a rule that costs at least 5 ms a frame
        frames.append(message)
        time.sleep(0.005)
        return real(self, message)

    monkeypatch.setattr(RuleEngine, "process", slow)
    with pytest.raises(TimeoutError, match=r"did not finish within 1 s") as e:
        preview_rule(live, parse_rule(RULE_MAPPING), t0, t0 + 200, timeout_s=1.0)
    assert "rule preview of 'lobby-zone'" in str(e.value)
    # checked within a fetched batch, not after it: at most 1 s / 5 ms frames fit in the time,
    # then at most _CHECK_EVERY more before the check
    assert len(frames) <= 1.0 / 0.005 + preview._CHECK_EVERY < len(msgs), len(frames)
