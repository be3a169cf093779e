"""The recorder's alert follower (pipeline/record/alert_follower.py): an alert on vigil.alerts of a
recorded camera holds ``[started_at - pre_s, (ended_at or started_at) + post_s]`` of its
recordings until ``retain.event_days`` after the alert; hostile records are skipped and counted;
an alert of a camera without recording holds nothing; a clip is announced on vigil.clips, never
on vigil.alerts. Run inside the recorder service."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator

import jsonschema
import pytest
import redis

from pipeline.cameras.registry import put_cameras
from pipeline.cameras.settings import RecordConfig
from pipeline.cameras.spec import CameraSpec
from pipeline.cli.record import build_follower
from pipeline.common.kafka import ensure_topics, make_producer
from pipeline.common.redis import RedisKeys
from pipeline.config import VigilConfig
from pipeline.record.alert_follower import CHECK_INTERVAL_S, AlertFollower
from pipeline.record.holds import HoldStore
from pipeline.record.index import SegmentIndex
from pipeline.record.service import RecorderService
from tests.support.alert_events import alert_event
from tests.support.alert_service import ALERT_SCHEMA
from tests.support.config import KAFKA, REDIS_URL, make_config
from tests.support.kafka import read_topic
from tests.support.net import free_port
from tests.support.recordings import fake_segment
from tests.support.redis import cleanup
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration

DAY = 86400.0
REC, PLAIN = "rec", "plain"
SCHEMA_VALIDATOR = jsonschema.Draft202012Validator(ALERT_SCHEMA)


@pytest.fixture
def cfg(tmp_path) -> Iterator[VigilConfig]:
    cfg = make_config(KAFKA, recordings={"dir": str(tmp_path / "rec"), "backoff_max_s": 1})
    ensure_topics(cfg.kafka)
    dead = f"rtsp://127.0.0.1:{free_port()}/nothing"  # nobody serves it: the recorder retries
    put_cameras(
        cfg.kafka,
        [
            CameraSpec(
                id=REC,
                url=dead,
                record={"enabled": True, "pre_s": 3, "post_s": 4, "retain": {"event_days": 2}},
            ),
            CameraSpec(id=PLAIN, url=dead),  # record disabled
        ],
    )
    client = redis.Redis.from_url(REDIS_URL)
    try:
        yield cfg
    finally:
        cleanup(client, cfg.redis.key_prefix)
        client.close()


def _alert(status: str, aid: str, camera: str, start: float, end: float | None) -> dict:
    msg = alert_event(status, aid=aid, camera=camera)
    msg.update(started_at=start, ended_at=end, updated_at=end if end is not None else start)
    return msg


def _send(cfg: VigilConfig, values: list[object]) -> None:
    producer = make_producer(cfg.kafka, "test-alerts")
    try:
        for v in values:
            producer.send(cfg.kafka.topics.alerts, key=b"k", value=v)
        producer.flush(timeout=30)
    finally:
        producer.close(timeout=10)


def test_alerts_of_a_recorded_camera_hold_their_clip_range(cfg: VigilConfig) -> None:
    keys = RedisKeys(cfg.redis.key_prefix)
    client = redis.Redis.from_url(REDIS_URL)
    holds = HoldStore(client, keys)
    follower = build_follower(cfg)
    service = RecorderService(
        cfg.kafka,
        cfg.recordings,
        SegmentIndex(client, keys),
        recorder_id="r-follow",
        follower=follower,
    ).start()
    t0 = time.time() - 60
    a, b, c = "a" * 20, "b" * 20, "c" * 20
    try:
        _send(
            cfg,
            [
                b"[" * 100_000,  # hostile: too deep
                b"\xff\xfe not utf-8",
                {"id": "x", "camera_id": REC, "status": "started", "started_at": t0},  # bad id
                {"id": c, "camera_id": "../etc", "status": "started", "started_at": t0},
                {"id": c, "camera_id": REC, "status": "started", "started_at": "soon"},
                _alert("started", a, REC, t0, None),
                _alert("started", b, PLAIN, t0, None),  # no recording: nothing held
                _alert("ended", a, REC, t0, t0 + 10),  # the end moves the hold on
            ],
        )

        def held():
            hs = holds.active(REC, time.time())
            return hs if hs and hs[0].end > t0 + 10 else None

        found = wait_for(held, 30)
        assert found, f"no hold of the ended alert: {holds.active(REC, time.time())}"
        (h,) = found
        assert (h.alert_id, h.start, h.end) == (a, t0 - 3, t0 + 10 + 4)
        assert h.until == pytest.approx(t0 + 10 + 2 * DAY, abs=1e-3)
        wait_for(lambda: follower.skipped.total >= 5, 10)
        assert follower.skipped.total == 5
        assert holds.active(PLAIN, time.time()) == []
        assert not client.exists(keys.recording_holds(PLAIN), keys.recording_hold(PLAIN, b))
        assert follower.held == 2  # started, then ended
    finally:
        service.close()
        client.close()
    assert follower._thread is None  # stopped with the service


def _messages(cfg: VigilConfig, topic: str, records: int, timeout: float = 20) -> list:
    """The records of ``topic`` once it holds ``records`` (or ``timeout``), values decoded."""
    return [
        rec._replace(value=json.loads(rec.value))
        for rec in read_topic(cfg, topic, records, timeout)
    ]


def test_a_clip_is_announced_once_its_range_is_recorded(cfg: VigilConfig, tmp_path) -> None:
    keys = RedisKeys(cfg.redis.key_prefix)
    client = redis.Redis.from_url(REDIS_URL)
    index = SegmentIndex(client, keys)
    root = tmp_path / "rec"
    t0 = time.time() - 60
    a, gone = "a" * 20, "d" * 20
    client.hset(keys.alert(a), mapping={"id": a, "status": "ended"})  # as the alert service left it
    fake_segment(root, index, REC, t0 - 5, duration=10)  # recorded up to t0 + 5
    follower = build_follower(cfg)
    follower.start()
    try:
        _send(cfg, [_alert("ended", a, REC, t0, t0 + 10), _alert("ended", gone, REC, t0, t0 + 10)])
        wait_for(lambda: follower.held >= 2, 30)
        time.sleep(3 * CHECK_INTERVAL_S)  # a few looks at the index: the range is not recorded yet
        assert client.hget(keys.alert(a), "clip_to") is None
        assert _messages(cfg, cfg.kafka.topics.clips, 1, timeout=1) == []
        fake_segment(root, index, REC, t0 + 5, duration=10)  # now up to t0 + 15 >= t0 + 10 + 4
        assert wait_for(lambda: client.hget(keys.alert(a), "clip_to"), 30)
        fields = {
            k.decode(): float(v)
            for k, v in client.hgetall(keys.alert(a)).items()
            if k.startswith(b"clip_")
        }
        assert fields == {
            "clip_from": t0 - 3,
            "clip_to": t0 + 14,
            "clip_until": pytest.approx(t0 + 10 + 2 * DAY, abs=1e-3),
        }
        # the clips on the clips topic, keyed by camera; the alerts topic has the alerts only (a
        # recorder may not write it: docs/security.md)
        recs = _messages(cfg, cfg.kafka.topics.clips, 2)
        by_id = {r.value["id"]: r.value for r in recs}
        assert len(recs) == 2 and set(by_id) == {a, gone}
        assert {(r.key, r.value["status"]) for r in recs} == {(REC.encode(), "clip")}
        on_alerts = _messages(cfg, cfg.kafka.topics.alerts, 2, timeout=5)
        assert [r.value["status"] for r in on_alerts] == ["ended", "ended"]
        msg = by_id[a]
        SCHEMA_VALIDATOR.validate(msg)
        assert msg["clip"]["path"] == f"/api/alerts/{a}/clip.mp4"
        assert (msg["clip"]["from"], msg["clip"]["to"]) == (t0 - 3, t0 + 14)
        assert msg["ended_at"] == t0 + 10 and msg["rule_id"] == "lobby"
        assert not client.exists(keys.alert(gone))  # an expired alert is not recreated
    finally:
        follower.stop()
        client.close()


def test_a_clip_whose_recording_never_comes_is_given_up_with_a_warning(
    cfg: VigilConfig, tmp_path, caplog
) -> None:
    """A camera down after the alert: no clip is announced, one warning says so, and footage
    that turns up later announces nothing."""
    keys = RedisKeys(cfg.redis.key_prefix)
    client = redis.Redis.from_url(REDIS_URL)
    index = SegmentIndex(client, keys)
    now = [time.time()]
    rec = RecordConfig(enabled=True, pre_s=1, post_s=2)
    follower = AlertFollower(
        cfg.kafka,
        HoldStore(client, keys),
        lambda camera: rec,
        group_id="unused",
        clock=lambda: now[0],
        index=index,
        clip_wait_s=60,
    )
    t0 = now[0] - 30
    a = "e" * 20
    try:
        assert follower.handle(json.dumps(_alert("ended", a, REC, t0, t0 + 5)), "test@0")
        follower.check_clips()
        now[0] += 59
        follower.check_clips()  # still waiting
        assert "no clip" not in caplog.text
        now[0] += 2
        with caplog.at_level(logging.WARNING):
            follower.check_clips()
        assert f"no clip for alert {a} of {REC}" in caplog.text
        fake_segment(tmp_path / "rec", index, REC, t0 - 5, duration=20)  # too late
        follower.check_clips()
        assert follower.clips == 0
    finally:
        client.close()


def test_a_clip_pending_at_a_restart_is_announced_by_the_next_recorder(
    cfg: VigilConfig, tmp_path
) -> None:
    """A recorder stopped while an alert's clip waits for its footage: the next one in the group
    reads the alert again and announces the clip; read once more (a new group), it is not
    announced twice."""
    keys = RedisKeys(cfg.redis.key_prefix)
    client = redis.Redis.from_url(REDIS_URL)
    index = SegmentIndex(client, keys)
    t0 = time.time() - 60
    a = "f" * 20
    client.hset(keys.alert(a), mapping={"id": a, "status": "ended"})
    first = build_follower(cfg).start()
    try:
        _send(cfg, [_alert("ended", a, REC, t0, t0 + 10)])
        assert wait_for(lambda: first.waiting == 1, 30), "the first recorder never read the alert"
    finally:
        first.stop()
    assert first.clips == 0
    fake_segment(tmp_path / "rec", index, REC, t0 - 5, duration=20)  # up to t0 + 15 >= t0 + 14
    second = build_follower(cfg).start()
    try:
        assert wait_for(lambda: second.clips == 1, 30), "the clip was lost at the restart"
        assert client.hget(keys.alert(a), "clip_to") is not None
    finally:
        second.stop()
        client.close()
    again = build_follower(cfg)  # its message read again: the clip is known, nothing waits
    assert again.handle(json.dumps(_alert("ended", a, REC, t0, t0 + 10)), "test@0")
    assert again.waiting == 0
    assert len(_messages(cfg, cfg.kafka.topics.clips, 1)) == 1


def test_a_running_alert_holds_an_open_range_until_its_end_message() -> None:
    # a recorder in mode events records a running alert on until the hold is closed
    cfg = make_config(KAFKA)
    client = redis.Redis.from_url(REDIS_URL)
    holds = HoldStore(client, RedisKeys(cfg.redis.key_prefix))
    rec = RecordConfig(enabled=True, pre_s=3, post_s=4)
    follower = AlertFollower(cfg.kafka, holds, lambda cam: rec, group_id="unused")
    t0, a = time.time() - 60, "d" * 20
    try:
        assert follower.handle(json.dumps(_alert("started", a, REC, t0, None)).encode(), "t@1")
        assert [h.open for h in holds.active(REC, time.time())] == [True]
        assert follower.handle(json.dumps(_alert("ended", a, REC, t0, t0 + 10)).encode(), "t@2")
        (h,) = holds.active(REC, time.time())
        assert (h.open, h.end) == (False, t0 + 14)
    finally:
        cleanup(client, cfg.redis.key_prefix)
        client.close()
