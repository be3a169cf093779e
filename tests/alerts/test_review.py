"""What the console's review needs of the alert stage: the ``reviewed`` alert.v1 message and its
dedup, the review fields of the alert hash, and the triggering frame (``source``) with all its
detections (``frame_detections``) kept for a started alert. The Redis tests use the shared test
Redis (DB 15, a unique key prefix per test)."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import jsonschema
import pytest
import redis

from alerts.events import AlertEvent
from alerts.review import review_message, store_review
from alerts.store import AlertStore, AlertWrite
from alerts.subscribe import _filtered
from pipeline.common.redis import RedisConfig
from tests.support.config import REDIS_URL

SCHEMA = json.loads((Path(__file__).parents[2] / "alerts/schemas/alert.v1.json").read_text())
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)
AID = "0123456789abcdef0123"
DETS = [
    {"label": "person", "confidence": 0.91, "box": [0.1, 0.2, 0.3, 0.9], "track_id": 4},
    {"label": "car", "confidence": 0.55, "box": [0.5, 0.5, 0.9, 0.8], "track_id": None},
]


def event(status: str = "started", aid: str = AID) -> dict:
    return AlertEvent(
        id=aid,
        camera_id="cam-a",
        rule_id="lobby",
        rule_type="zone_intrusion",
        status=status,  # type: ignore[arg-type]
        severity="high",
        started_at=1000.0,
        updated_at=1002.5 if status == "ended" else 1000.0,
        ended_at=1002.0 if status == "ended" else None,
        frame_seq=7,
        epoch=123,
        label="person",
        track_id=4,
        box=(0.1, 0.2, 0.3, 0.9),
        confidence=0.91,
        zone=[[0.0, 0.0], [0.5, 0.0], [0.5, 1.0]],
        details={"reason": "cleared"} if status == "ended" else {"frames": 3},
    ).to_dict()


# -- the reviewed message ------------------------------------------------------------------------


def test_reviewed_message_is_valid_and_the_rest_of_the_alert() -> None:
    alert = event("ended")
    msg = review_message(alert, "false_positive", "a shadow", "alice", 1_700_000_000.5)
    VALIDATOR.validate(msg)
    assert msg["status"] == "reviewed"
    assert msg["review"] == {
        "verdict": "false_positive",
        "note": "a shadow",
        "by": "alice",
        "at": 1_700_000_000.5,
    }
    assert {k: v for k, v in msg.items() if k not in ("status", "review")} == {
        k: v for k, v in alert.items() if k != "status"
    }
    assert alert["status"] == "ended"  # the input is not changed


def test_reviewed_message_from_the_alert_hash_leaves_the_store_fields_out() -> None:
    stored = {
        **event("started"),
        "snapshot": True,
        "latency_ms": 12.5,
        "written_started": 1.0,
        "published_started": True,
        "frame_detections": DETS,
        "review": "true_positive",
        "reviewed_by": "bob",
    }
    msg = review_message(stored, "true_positive", "", "alice", 5.0)
    VALIDATOR.validate(msg)
    assert set(msg) == set(SCHEMA["required"]) | {"review"}


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (("maybe", "", "alice", 1.0), "verdict"),
        (("true_positive", "", "", 1.0), "user name"),
        (("true_positive", "", "alice", float("nan")), "seconds"),
    ],
)
def test_review_message_refuses_bad_input(args: tuple, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        review_message(event(), *args)
    with pytest.raises(ValueError, match="missing"):
        review_message({"id": AID}, "true_positive", "", "alice", 1.0)


def test_schema_of_reviewed_messages() -> None:
    good = review_message(event(), "true_positive", "ok", "alice", 1.0)
    VALIDATOR.validate(good)
    for bad in (
        {**good, "review": None},
        {k: v for k, v in good.items() if k != "review"},  # reviewed needs its review
        {**good, "review": {**good["review"], "verdict": "maybe"}},
        {**good, "review": {**good["review"], "extra": 1}},
        {**good, "status": "started"},  # only a reviewed message carries a review
        {**good, "status": "closed"},
    ):
        assert not VALIDATOR.is_valid(bad), bad
    VALIDATOR.validate(event("started"))
    VALIDATOR.validate(event("ended"))


def test_subscribers_keep_every_review_and_drop_repeats() -> None:
    started, ended = event("started"), event("ended")
    r1 = review_message(ended, "true_positive", "", "alice", 10.0)
    r2 = review_message(ended, "false_positive", "no", "bob", 20.0)
    source = iter([started, started, ended, r1, r1, r2, ended, r2])
    got = list(_filtered(source, None, None, None, dedup=True))
    assert got == [started, ended, r1, r2]


# -- Redis ---------------------------------------------------------------------------------------


@pytest.fixture
def store():
    s = AlertStore(RedisConfig(url=REDIS_URL, key_prefix=f"tr{uuid.uuid4().hex[:8]}:"), None, 3600)
    try:
        s.client.ping()
    except redis.RedisError as e:
        pytest.fail(f"Redis is not reachable at {REDIS_URL}: run `make infra-up` ({e})")
    yield s
    keys = list(s.client.scan_iter(match=f"{s.prefix}*", count=1000))
    if keys:
        s.client.unlink(*keys)
    s.client.close()


@pytest.mark.integration
def test_started_alert_keeps_its_source_frame_and_detections(store: AlertStore) -> None:
    started, ended = event("started"), event("ended")
    text = json.dumps(DETS)
    write = AlertWrite(started, time.time(), b"drawn", source=b"raw", frame_detections=text)
    assert store.write_alert(write) == (True, False)
    alert = store.get_alert(AID)
    assert alert is not None and alert["frame_detections"] == DETS
    assert store.get_source(AID) == b"raw" and store.get_snapshot(AID) == b"drawn"
    assert store.client.get(store.keys.source_frame(AID)) == b"raw"  # the console's key
    ttl = store.client.ttl(store.source_key(AID))
    assert 0 < ttl <= store.cfg.snapshot_ttl_s and ttl > store.cfg.snapshot_ttl_s - 60
    # the stream entry and Kafka's message stay alert.v1: no detections in them
    assert store.recent() == [started]

    # a replayed started (another frame, other detections) changes nothing: idempotent
    replay = AlertWrite(started, time.time(), b"x", source=b"other", frame_detections=[])
    assert store.write_alert(replay) == (False, False)
    assert store.get_source(AID) == b"raw" and store.get_alert(AID)["frame_detections"] == DETS
    # ended events carry neither
    store.write_alert(AlertWrite(ended, time.time(), None, source=b"e", frame_detections=[]))
    alert = store.get_alert(AID)
    assert alert["status"] == "ended" and alert["frame_detections"] == DETS
    assert store.get_source(AID) == b"raw"


@pytest.mark.integration
def test_started_alert_without_frame_has_no_source(store: AlertStore) -> None:
    store.write_alert(AlertWrite(event("started"), time.time(), frame_detections=DETS))
    alert = store.get_alert(AID)
    assert alert["frame_detections"] == DETS and alert["snapshot"] is False
    assert store.get_source(AID) is None


@pytest.mark.integration
def test_store_review_fields_and_a_second_review(store: AlertStore) -> None:
    store.write_alert(AlertWrite(event("started"), time.time()))
    assert store_review(store, AID, "false_positive", "a shadow", "alice", 100.25, "img/1.jpg")
    alert = store.get_alert(AID)
    assert alert["review"] == "false_positive" and alert["review_note"] == "a shadow"
    assert alert["reviewed_by"] == "alice" and alert["reviewed_at"] == 100.25
    assert alert["review_image"] == "img/1.jpg" and alert["status"] == "started"
    assert store_review(store, AID, "true_positive", "", "bob", 200.0, None)
    alert = store.get_alert(AID)
    assert (alert["review"], alert["reviewed_by"], alert["reviewed_at"]) == (
        "true_positive",
        "bob",
        200.0,
    )
    assert alert["review_image"] is None and alert["review_note"] is None
    # the alert's TTL is kept; an ended event later keeps the review
    assert 0 < store.client.ttl(store.alert_key(AID)) <= 3600
    store.write_alert(AlertWrite(event("ended"), time.time()))
    alert = store.get_alert(AID)
    assert alert["review"] == "true_positive"
    # what the console publishes: built from the decoded hash, a valid alert.v1 message
    msg = review_message(alert, "true_positive", "", "bob", 200.0)
    VALIDATOR.validate(msg)
    assert {k: v for k, v in msg.items() if k not in ("status", "review")} == {
        k: v for k, v in event("ended").items() if k != "status"
    }


@pytest.mark.integration
def test_review_of_an_unknown_alert_writes_nothing(store: AlertStore) -> None:
    assert store_review(store, "f" * 20, "true_positive", "", "alice", 1.0, None) is False
    assert store.client.exists(store.alert_key("f" * 20)) == 0
    with pytest.raises(ValueError, match="verdict"):
        store_review(store, AID, "maybe", "", "alice", 1.0, None)
