"""Vigil on a 3-broker Kafka cluster with SASL/SCRAM users and ACLs (deploy/local/kafka_cluster.sh).

- Who may write: only the ingest principal writes detections (and the motion spells), only the
  alert service's writes alerts, only the recorder's writes clips (and nothing else); anyone
  else is refused by the brokers with an authorization error (not a timeout, not any other
  error), and nothing of a refused write reaches the topic (a forged detection message needs
  the ingest workers' credentials).
- Failover, real processes: 4 camera-sim cameras, 2 ingest workers, 2 alert services. The broker
  leading most detection partitions is SIGKILLed mid-run and brought back; then one ingest worker
  and one alert service are SIGKILLed too. Every detection message a worker had acknowledged is
  on the topic, no camera's detections pause across the broker's failure for as long as a failed
  worker would cost it, the alert (id, status) set in Redis is exactly a fault-free replay of the
  detections on the topic, and no alert event is stored twice.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import pytest
import redis
import yaml
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import TopicAuthorizationFailedError
from kafka.structs import OffsetAndMetadata

from alerts.engine import RuleEngine
from alerts.store import AlertStore
from pipeline.cameras.registry import put_cameras
from pipeline.cameras.spec import CameraSpec
from pipeline.common.kafka import KafkaUnavailable, ensure_topics
from pipeline.config import parse_config
from tests.support.config import REDIS_URL
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
CLUSTER = REPO / "deploy" / "local" / "kafka_cluster.sh"
PORT = int(os.environ.get("VIGIL_TEST_KAFKA_CLUSTER_PORT", "19092"))
BOOTSTRAP = ",".join(f"127.0.0.1:{PORT + i}" for i in range(3))
WHOLE_FRAME = [[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]]
BROKER_PROPERTIES = REPO / "deploy" / "local" / "kafka" / "cluster.properties"
# How long the killed broker stays away
BROKER_DOWN_S = 12
FILES = [
    "classroom.mp4",
    "people-detection.mp4",
    "one-by-one-person-detection.mp4",
    "car-detection.mp4",
]


def cluster(state: Path, *args: str) -> str:
    env = {**os.environ, "VIGIL_STATE": str(state), "VIGIL_KAFKA_CLUSTER_PORT": str(PORT)}
    return subprocess.run(
        ["bash", str(CLUSTER), *args],
        env=env,
        check=True,
        capture_output=True,
        text=True,
        timeout=240,
    ).stdout


@pytest.fixture(scope="module")
def kafka_cluster(tmp_path_factory):
    state = tmp_path_factory.mktemp("cluster-state")
    cluster(state, "up")
    try:
        yield state
    finally:
        cluster(state, "down")


def broker_session_timeout_s() -> float:
    """How long the controller waits for a silent (SIGKILLed) broker before fencing it and
    electing new leaders for its partitions: broker.session.timeout.ms of the cluster's
    properties, Kafka's default (9000 ms) when they leave it."""
    for line in BROKER_PROPERTIES.read_text().splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "broker.session.timeout.ms":
            return int(value) / 1000
    return 9.0


def secret(state: Path, user: str) -> Path:
    return state / "kafka-cluster" / "secrets" / user


def config_dict(state: Path, user: str, tag: str) -> dict:
    return {
        "kafka": {
            "bootstrap_servers": BOOTSTRAP,
            "security_protocol": "SASL_PLAINTEXT",
            "sasl_mechanism": "SCRAM-SHA-512",
            "username": user,
            "password_file": str(secret(state, user)),
            "replication_factor": 3,
            "detections_partitions": 6,
            "cameras_partitions": 8,
        },
        "redis": {"url": REDIS_URL, "key_prefix": f"{tag}:"},
        "detector": {"max_batch": 4},
        "ingest": {
            "default_fps": 2,
            "session_timeout_ms": 6000,
            "reconnect": {"initial_s": 0.5, "max_s": 2.0},
        },
        "alerts": {
            "rules": [
                {
                    "id": "anyone",
                    "type": "zone_intrusion",
                    "zone": WHOLE_FRAME,
                    "classes": ["person"],
                    "min_frames": 2,
                    "clear_after_s": 1.0,
                    "cooldown_s": 0,
                },
                {
                    "id": "two-people",
                    "type": "crowding",
                    "zone": WHOLE_FRAME,
                    "classes": ["person"],
                    "min_count": 2,
                    "clear_after_s": 1.0,
                    "cooldown_s": 0,
                },
            ],
            "service": {"session_timeout_ms": 6000, "poll_timeout_ms": 200},
        },
    }


def client_kw(state: Path, user: str) -> dict:
    return {
        "bootstrap_servers": BOOTSTRAP.split(","),
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": user,
        "sasl_plain_password": secret(state, user).read_text().strip(),
        "request_timeout_ms": 10000,
    }


def assert_write_refused(state: Path, user: str, topic: str) -> None:
    """``user``'s write to ``topic`` is refused by the brokers' ACLs: the produce answer is
    TOPIC_AUTHORIZATION_FAILED for that topic. A timeout (KafkaTimeoutError) or any other error
    fails the test (every principal may DESCRIBE the topics, so the metadata is there and only the
    write itself can be refused)."""
    # retries=0: no idempotence, so no InitProducerId that could fail first for another reason
    producer = KafkaProducer(**client_kw(state, user), max_block_ms=10000, retries=0)
    try:
        with pytest.raises(TopicAuthorizationFailedError) as refused:
            producer.send(topic, key=b"gate", value=b"{}").get(timeout=15)
        assert type(refused.value) is TopicAuthorizationFailedError, repr(refused.value)
        assert topic in str(refused.value), repr(refused.value)
    finally:
        producer.close(5)


def test_only_the_ingest_principal_may_write_detections(kafka_cluster):
    state = kafka_cluster
    admin_cfg = parse_config(config_dict(state, "admin", "acl"), "t")
    ensure_topics(admin_cfg.kafka)  # as admin: RF 3, min.insync.replicas 2
    topic, alerts_topic = admin_cfg.kafka.topics.detections, admin_cfg.kafka.topics.alerts
    for user in ("alerts", "viewer"):
        assert_write_refused(state, user, topic)
    producer = KafkaProducer(**client_kw(state, "ingest"), acks="all", max_block_ms=10000)
    try:
        meta = producer.send(topic, key=b"gate", value=b'{"probe": 1}').get(timeout=15)
        assert meta.offset >= 0
    finally:
        producer.close(5)
    assert_write_refused(state, "ingest", alerts_topic)  # not the alerts topic either
    # the recorder (camera URLs and files: the most exposed process) announces clips on a topic
    # of its own and writes nothing else: no alert, detection or camera
    t = admin_cfg.kafka.topics
    for forged in (alerts_topic, topic, t.cameras, t.motion):
        assert_write_refused(state, "recorder", forged)
    for user in ("alerts", "notifier", "viewer"):
        assert_write_refused(state, user, t.clips)
    clip = (b"gate", b'{"status": "clip"}')
    producer = KafkaProducer(**client_kw(state, "recorder"), acks="all", max_block_ms=10000)
    try:
        assert producer.send(t.clips, key=clip[0], value=clip[1]).get(timeout=15).offset >= 0
    finally:
        producer.close(5)
    # the console publishes the operators' reviews on a topic of their own: it may not write an
    # alert or a clip, and nobody else may write a review
    for forged in (alerts_topic, t.clips, topic):
        assert_write_refused(state, "console", forged)
    for user in ("alerts", "recorder"):
        assert_write_refused(state, user, t.reviews)
    review = (b"gate", b'{"status": "reviewed"}')
    producer = KafkaProducer(**client_kw(state, "console"), acks="all", max_block_ms=10000)
    try:
        assert producer.send(t.reviews, key=review[0], value=review[1]).get(timeout=15).offset >= 0
    finally:
        producer.close(5)
    # ingest publishes the cameras' motion spells, which the recorders' motion followers read
    spell = (b"gate", b'{"v": 1}')
    producer = KafkaProducer(**client_kw(state, "ingest"), acks="all", max_block_ms=10000)
    try:
        assert producer.send(t.motion, key=spell[0], value=spell[1]).get(timeout=15).offset >= 0
    finally:
        producer.close(5)
    group = admin_cfg.recordings.group_id
    assert _read_as(state, "recorder", t.motion, f"{group}-motion") == [spell]
    # the recorder's alert follower reads alerts in its group; the notifier (its own group) and
    # subscribers (no group) read the clip
    assert _read_as(state, "recorder", alerts_topic, f"{group}-alerts") == []
    assert _read_as(state, "notifier", t.clips, admin_cfg.notify.group_id) == [clip]
    assert _read_as(state, "viewer", t.clips) == [clip]
    assert _read_as(state, "notifier", t.reviews, admin_cfg.notify.group_id) == [review]
    assert _read_as(state, "viewer", t.reviews) == [review]
    assert _read_as(state, "console", topic) == [(b"gate", b'{"probe": 1}')]  # a clip's boxes
    # a principal that may not create a missing topic is told so, naming the topic and the user
    # (it was told "cannot reach Kafka... is it running?", and its services retried forever)
    ingest_cfg = parse_config(config_dict(state, "ingest", "acl"), "t")
    ingest_cfg.kafka.topics.motion = "vigil.motion-made-by-nobody"
    with pytest.raises(KafkaUnavailable, match="not allowed to create") as refused:
        ensure_topics(ingest_cfg.kafka)
    assert "vigil.motion-made-by-nobody" in str(refused.value) and "ingest" in str(refused.value)
    # nothing of the refused writes is on the topics: the ingest probe alone
    assert [(r.key, r.value) for r in _read_all(state, topic)] == [(b"gate", b'{"probe": 1}')]
    assert _read_all(state, alerts_topic) == []
    assert _read_all(state, t.cameras) == []


def _read_as(state: Path, user: str, topic: str, group: str | None = None) -> list:
    """``topic``'s records as ``user`` reads them, (key, value) each; in consumer group ``group``
    (when given), whose offsets it commits: READ on the topic, and on the group."""
    consumer = KafkaConsumer(**client_kw(state, user), group_id=group, enable_auto_commit=False)
    try:
        tps = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        assert tps, f"{user} does not see {topic}"
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        end = consumer.end_offsets(tps)
        out = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(consumer.position(tp) < end[tp] for tp in tps):
            for recs in consumer.poll(timeout_ms=1000).values():
                out.extend((r.key, r.value) for r in recs)
        if group is not None:
            offsets = {tp: OffsetAndMetadata(consumer.position(tp), "", -1) for tp in tps}
            consumer.commit(offsets)
            assert {tp: consumer.committed(tp) for tp in tps} == {
                tp: om.offset for tp, om in offsets.items()
            }
        return out
    finally:
        consumer.close(autocommit=False)


def _leader_of_most_partitions(state: Path, topic: str) -> int:
    admin = KafkaAdminClient(**client_kw(state, "admin"))
    try:
        [desc] = admin.describe_topics([topic])
    finally:
        admin.close()
    parts = desc["partitions"]  # MetadataResponse fields (kafka-python 2.x names)
    leaders = Counter(p.get("leader_id", p.get("leader")) for p in parts)
    assert all(len(p.get("replica_nodes", p.get("replicas", ()))) == 3 for p in parts), desc
    return leaders.most_common(1)[0][0]


def _read_all(state: Path, topic: str) -> list:
    consumer = KafkaConsumer(**client_kw(state, "admin"), enable_auto_commit=False)
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in parts]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        end = consumer.end_offsets(tps)
        out = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and any(consumer.position(tp) < end[tp] for tp in tps):
            for recs in consumer.poll(timeout_ms=1000).values():
                out.extend(recs)
        return out
    finally:
        consumer.close()


def _detections(state: Path, topic: str) -> list:
    """The detection messages of ``topic`` (records whose value is one: the ACL test's probe
    message on the same topic is not), each with ``.value`` decoded."""
    out = []
    for rec in _read_all(state, topic):
        try:
            value = json.loads(rec.value)
        except ValueError:
            continue
        if isinstance(value, dict) and "worker_id" in value and "capture_ts" in value:
            out.append(rec._replace(value=value))
    return out


def _spawn(argv: list[str], log: Path) -> subprocess.Popen:
    out = open(log, "ab")  # noqa: SIM115 (closed when the process is reaped at the end)
    return subprocess.Popen(argv, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)


def test_failover_broker_worker_and_alert_service(kafka_cluster, camera_sim, tmp_path):
    state = kafka_cluster
    tag = f"fo{int(time.time())}"
    paths = {}
    for user in ("ingest", "alerts", "admin"):
        paths[user] = tmp_path / f"{user}.yaml"
        paths[user].write_text(yaml.safe_dump(config_dict(state, user, tag)))
    admin_cfg = parse_config(config_dict(state, "admin", tag), "t")
    ensure_topics(admin_cfg.kafka)
    sim = camera_sim(*FILES)
    cams = [CameraSpec(id=f"cam{i}", url=url, fps=2) for i, url in enumerate(sim.urls.values())]
    ingest_cfg = parse_config(config_dict(state, "ingest", tag), "t")
    put_cameras(ingest_cfg.kafka, cams)  # as the ingest principal: it may write the registry

    py = sys.executable
    workers = [
        _spawn(
            [
                py,
                "-m",
                "tests.e2e.ledger_worker",
                str(paths["ingest"]),
                f"w{i}",
                str(tmp_path / f"ledger{i}.txt"),
            ],
            tmp_path / f"worker{i}.log",
        )
        for i in range(2)
    ]
    services = [
        _spawn(
            [
                py,
                "-m",
                "pipeline.cli",
                "alerts",
                "serve",
                "-c",
                str(paths["alerts"]),
                "--instance-id",
                f"a{i}",
            ],
            tmp_path / f"alerts{i}.log",
        )
        for i in range(2)
    ]
    procs = workers + services
    redis_client = redis.Redis.from_url(REDIS_URL)
    stream = f"{tag}:alerts"
    topic = admin_cfg.kafka.topics.detections
    try:

        def owners() -> dict[str, set[str]]:
            seen = defaultdict(set)
            for rec in _detections(state, topic):
                seen[rec.value["worker_id"]].add(rec.key.decode())
            return seen

        # both workers stream, every camera has published, before anything fails (the gaps
        # below need each camera's detections on both sides of the kill), and alerts are being
        # written
        every = {c.id for c in cams}

        def all_streaming() -> bool:
            seen = owners()
            return len(seen) == 2 and set().union(*seen.values()) == every

        assert wait_for(all_streaming, 180, step=3), (
            "both workers own cameras, every camera publishes",
            {w: sorted(c) for w, c in owners().items()},
        )
        assert wait_for(lambda: redis_client.xlen(stream) > 0, 120, step=2), "no alert yet"

        leader = _leader_of_most_partitions(state, topic)
        killed_at = time.time()
        cluster(state, "kill-node", str(leader))
        time.sleep(BROKER_DOWN_S)
        cluster(state, "start-node", str(leader))  # returns once the node answers
        back_at = time.time()
        time.sleep(8)
        workers[0].send_signal(signal.SIGKILL)
        services[0].send_signal(signal.SIGKILL)
        worker_killed_at = time.time()
        # the surviving worker takes the cameras over; detections after that come from it
        assert wait_for(
            lambda: any(
                r.value["worker_id"] == "w1" and r.value["capture_ts"] > worker_killed_at + 5
                for r in _detections(state, topic)
            ),
            120,
            step=3,
        ), "no detections after the worker was killed"
        time.sleep(10)
        # stop the cameras' worker, then let the alert service finish what is on the topic
        workers[1].send_signal(signal.SIGTERM)
        assert workers[1].wait(60) == 0
        assert wait_for(lambda: _alerts_caught_up(state, topic, tag), 120, step=2), (
            "alert service lags"
        )
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(60)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(10)

    records = _detections(state, topic)
    values = [r.value for r in records]
    on_topic = {(v["camera_id"], v["epoch"], v["seq"]) for v in values}
    assert all(r.key.decode() == v["camera_id"] for r, v in zip(records, values, strict=True))

    # 1. every acknowledged detection message is on the topic
    acked = set()
    for i in range(2):
        for line in (tmp_path / f"ledger{i}.txt").read_text().splitlines():
            cam, epoch, seq = line.split()
            acked.add((cam, int(epoch), int(seq)))
    assert acked and acked <= on_topic, f"{len(acked - on_topic)} acknowledged messages lost"

    # 2. the broker's failure did not pause any camera's detections: the largest gap between a
    # camera's consecutive messages, from its last one before the kill to its first one past the
    # broker's return (+ 4 s; the worker kill comes 8 s after the return), against the bound.
    # A worker never waits for Kafka (DetectionPublisher: sends are buffered, acks=all with
    # retries, delivery.timeout.ms 120 s), so the gap is the frame interval plus the detection
    # loop's stalls (1.5 s measured here; 4.5 s in the 30-minute soak under extra contention,
    # BENCHMARKS.md). A worker that waited on, or dropped, the messages of the leaderless
    # partitions would show at least the time Kafka needs to move their leaders
    # (broker.session.timeout.ms), one whose cameras left it at least the group's
    # ingest.session_timeout_ms (6 s here): losing one of three brokers must cost a camera less
    # than losing its worker does, so the bound is the smaller of the two.
    ingest_session_s = config_dict(state, "ingest", tag)["ingest"]["session_timeout_ms"] / 1000
    bound_s = min(broker_session_timeout_s(), ingest_session_s)
    window_end = back_at + 4
    gaps = {}
    by_cam = defaultdict(list)
    for v in values:
        by_cam[v["camera_id"]].append(v["capture_ts"])
    assert sorted(by_cam) == sorted(c.id for c in cams), sorted(by_cam)
    for cam, ts in by_cam.items():
        ts.sort()
        before = [t for t in ts if t < killed_at]
        after = [t for t in ts if t > window_end]
        assert before and after, (
            f"{cam}: no detections before the kill or after the broker's return "
            f"({len(before)} before, {len(after)} after)"
        )
        span = [before[-1], *(t for t in ts if killed_at <= t <= window_end), after[0]]
        gaps[cam] = round(max(b - a for a, b in zip(span, span[1:], strict=False)), 2)
    print(
        f"per-camera gap across the broker kill (s): {gaps}, bound {bound_s} s; "
        f"broker back {back_at - killed_at:.1f} s after the kill; {len(acked)} acked messages"
    )
    assert all(g < bound_s for g in gaps.values()), (gaps, bound_s)

    # 3. the alerts: exactly a fault-free replay of the detections, none twice
    engine = RuleEngine(parse_config(config_dict(state, "admin", tag), "t").alerts)
    ordered = sorted(records, key=lambda r: (r.partition, r.offset))
    replay = {(a.id, a.status) for r in ordered for a in engine.process(r.value)}
    deadline = time.monotonic() + 60
    events: list = []
    while time.monotonic() < deadline:  # the service that was stopped last may still be writing
        events = [
            (f[b"id"].decode(), f[b"status"].decode()) for _, f in redis_client.xrange(stream)
        ]
        if set(events) >= replay:
            break
        time.sleep(1)
    dup = [e for e, n in Counter(events).items() if n > 1]
    assert not dup, f"alert events stored twice: {dup[:3]}"
    assert replay and set(events) == replay, (len(replay - set(events)), len(set(events) - replay))
    for key in redis_client.scan_iter(match=f"{tag}:*", count=1000):
        redis_client.unlink(key)
    redis_client.close()


def _alerts_caught_up(state: Path, topic: str, tag: str) -> bool:
    """Every detection partition is checkpointed up to its end (the checkpoint in Redis, not the
    committed offset, says where the alert service resumes: docs/redis.md)."""
    consumer = KafkaConsumer(**client_kw(state, "admin"))
    store = AlertStore(parse_config(config_dict(state, "admin", tag), "t").redis)
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        end = consumer.end_offsets([TopicPartition(topic, p) for p in parts])
        for tp, offset in end.items():
            if offset == 0:
                continue
            cp = store.get_checkpoint("vigil-alerts", topic, tp.partition)
            if cp is None or cp["offset"] < offset:
                return False
        return True
    finally:
        consumer.close()
        store.client.close()
