"""Holds: the stretch of a camera's recordings an alert's clip needs, kept until a time; what
Redis holds is read as hostile (a bad hold protects nothing and breaks nothing)."""

from __future__ import annotations

import math
import uuid

import pytest
import redis

from pipeline.common.redis import RedisKeys
from pipeline.record.holds import Hold, HoldStore
from tests.support.config import REDIS_URL
from tests.support.redis import cleanup

pytestmark = pytest.mark.integration


@pytest.fixture
def holds():
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.RedisError as e:
        pytest.fail(f"Redis is not reachable at {REDIS_URL} ({e}): run `make infra-up`")
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    yield HoldStore(client, RedisKeys(prefix))
    cleanup(client, prefix)


def test_a_hold_is_active_until_its_time_and_covers_its_range(holds):
    holds.hold("cam1", "a-later", 200.0, 210.0, until=1000.0)
    holds.hold("cam1", "b-earlier", 100.0, 110.0, until=1000.0)
    assert holds.active("cam1", 500.0) == [
        Hold("b-earlier", 100.0, 110.0, 1000.0),  # oldest range first
        Hold("a-later", 200.0, 210.0, 1000.0),
    ]
    assert holds.active("cam2", 500.0) == []  # per camera
    assert holds.active("cam1", 1000.0) == []  # ended at its time
    h = Hold("a1", 100.0, 110.0, 1000.0)
    assert h.covers(105, 115) and h.covers(90, 101) and h.covers(90, 120)
    assert not h.covers(110, 120) and not h.covers(90, 100)  # segments that only touch it


def test_a_later_hold_of_the_same_alert_replaces_it(holds):
    holds.hold("cam1", "a1", 100.0, 110.0, until=1000.0)
    holds.hold("cam1", "a1", 100.0, 130.0, until=2000.0)  # the alert went on
    assert holds.active("cam1", 1500.0) == [Hold("a1", 100.0, 130.0, 2000.0)]


def test_expire_forgets_the_ended_holds_only(holds):
    holds.hold("cam1", "a1", 100.0, 110.0, until=1000.0)
    holds.hold("cam1", "a2", 200.0, 210.0, until=3000.0)
    assert holds.expire("cam1", 2000.0) == 1
    assert holds.active("cam1", 0.0) == [Hold("a2", 200.0, 210.0, 3000.0)]
    assert not holds.client.exists(holds.keys.recording_hold("cam1", "a1"))
    assert holds.expire("cam1", 2000.0) == 0


def test_hostile_hold_data_protects_nothing_and_breaks_nothing(holds):
    holds.hold("cam1", "good", 100.0, 110.0, until=1000.0)
    forged = {
        "nan": {"from": "nan", "to": "110", "until": "1000"},
        "inf": {"from": "100", "to": "inf", "until": "1000"},
        "text": {"from": "yesterday", "to": "110", "until": "1000"},
        "reversed": {"from": "110", "to": "100", "until": "1000"},
        "until-past": {"from": "100", "to": "110", "until": "10"},  # its score says later
        "bytes": {"from": b"\xff\xfe", "to": "110", "until": "1000"},
        "partial": {"from": "100"},
    }
    for alert_id, fields in forged.items():
        holds.client.hset(holds.keys.recording_hold("cam1", alert_id), mapping=fields)
    holds.client.zadd(holds.keys.recording_holds("cam1"), dict.fromkeys([*forged, "no-hash"], 1000))
    assert holds.active("cam1", 500.0) == [Hold("good", 100.0, 110.0, 1000.0)]


def test_a_bad_hold_is_refused(holds):
    for start, end, until in ((110.0, 100.0, 1000.0), (math.nan, 100.0, 1000.0), (1, 2, math.inf)):
        with pytest.raises(ValueError, match="finite times"):
            holds.hold("cam1", "a1", start, end, until)
    with pytest.raises(ValueError, match="invalid camera id"):
        holds.hold("../x", "a1", 1.0, 2.0, 3.0)
    assert holds.active("cam1", 0.0) == []
