"""The alert service end to end against the real local Kafka and Redis: scripted detection
messages in (valid per detection.v1.json, with their frames as JPEG in Redis), alerts out in
Redis, on Kafka and through the subscribers; crashes, a Redis restart and a rebalance in the
middle of a run change nothing in Redis: no alert lost, none stored twice."""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import cv2
import jsonschema
import numpy as np
import pytest
import redis
import yaml
from kafka import TopicPartition
from prometheus_client import REGISTRY

from alerts.engine import RuleEngine
from alerts.service import CRASH_ENV
from alerts.store import AlertStore
from alerts.subscribe import subscribe
from pipeline.common.kafka import ensure_topics, make_consumer, make_producer
from pipeline.config import VigilConfig, parse_config
from pipeline.ingest.messages import validate_detection_message
from tests.support.alert_service import ALERT_SCHEMA, RULES, Running, base_dict
from tests.support.kafka import produce, read_topic
from tests.support.messages import (
    CAMERAS,
    IN_BOX,
    OUT_BOX,
    ZONE,
    det_message,
    frame_jpeg,
    scripted,
)
from tests.support.messages import cameras as _cameras
from tests.support.net import free_port
from tests.support.redis import cleanup, stream_events
from tests.support.snapshot_oracle import assert_snapshot
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
FRAMES = 1000  # per camera: 4 cameras x 1000 = 4000 messages, 800 alert events


def decode(jpeg: bytes) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)


def put_frames(store: AlertStore, msgs: list[tuple[str, dict]], jpeg: bytes) -> None:
    """What the ingest worker does: a JPEG per frame with detections, with a TTL."""
    pipe = store.client.pipeline(transaction=False)
    for cam, m in msgs:
        if m["detections"]:
            pipe.set(store.frame_key(cam, m["epoch"], m["seq"]), jpeg, ex=900)
    pipe.execute()


def variant(base: dict, tag: str, **service) -> dict:
    """Same deployment, its own key prefix, consumer group and alerts topic."""
    d = copy.deepcopy(base)
    d["redis"]["key_prefix"] = f"{base['redis']['key_prefix']}{tag}:"
    d["kafka"]["topics"]["alerts"] = f"{base['kafka']['topics']['alerts']}.{tag}"
    d["alerts"]["service"] = {
        **d["alerts"].get("service", {}),
        "group_id": f"{d['alerts']['service']['group_id']}-{tag}",
        **service,
    }
    return d


def end_offsets(cfg: VigilConfig) -> dict[int, int]:
    c = make_consumer(cfg.kafka, "test-end", group_id=None, enable_auto_commit=False)
    try:
        topic = cfg.kafka.topics.detections
        parts = wait_for(lambda: c.partitions_for_topic(topic), 15)
        ends = c.end_offsets([TopicPartition(topic, p) for p in parts])
        return {tp.partition: off for tp, off in ends.items()}
    finally:
        c.close()


def committed_offsets(cfg: VigilConfig) -> dict[int, int | None]:
    group = parse_alerts_group(cfg)
    c = make_consumer(cfg.kafka, "test-committed", group_id=group, enable_auto_commit=False)
    try:
        topic = cfg.kafka.topics.detections
        parts = wait_for(lambda: c.partitions_for_topic(topic), 15)
        return {p: c.committed(TopicPartition(topic, p)) for p in parts}
    finally:
        c.close(autocommit=False)


def wait_done(cfg: VigilConfig, store: AlertStore, timeout: float) -> bool:
    """True once every partition's checkpoint is at the end of the detections topic."""
    ends = end_offsets(cfg)
    group, topic = parse_alerts_group(cfg), cfg.kafka.topics.detections
    keys = [(topic, p) for p in sorted(ends)]

    def done() -> bool:
        try:
            cps = store.get_checkpoints(group, keys)
        except redis.RedisError:
            return False
        return all(
            cp is not None and cp["offset"] == ends[p] for (_, p), cp in zip(keys, cps, strict=True)
        )

    return bool(wait_for(done, timeout, step=0.2))


def parse_alerts_group(cfg: VigilConfig) -> str:
    return cfg.alerts.service.group_id


@pytest.fixture
def services():
    running: list[Running] = []

    def start(cfg: VigilConfig) -> Running:
        r = Running(cfg)
        running.append(r)
        return r

    yield start
    for r in running:
        if r.thread.is_alive():
            r.close()


# -- the reference run: one uninterrupted service over the scripted detections -----------------------


@dataclass
class Script:
    base: dict
    msgs: list[tuple[str, dict]]
    expected: set[tuple[str, str]]
    per_camera: Counter


@pytest.fixture(scope="module")
def script(kafka_bootstrap):
    base = base_dict(kafka_bootstrap, max_batch=50)
    cfg = parse_config(base)
    ensure_topics(cfg.kafka)
    t0 = time.time() - FRAMES / 5.0 - 60
    msgs = scripted(CAMERAS, FRAMES, t0)
    validate_detection_message(msgs[0][1])
    produce(cfg, msgs)

    # The same messages through the engine alone: the service must reproduce exactly these.
    engine = RuleEngine(base["alerts"])
    offline = [(a.id, a.status) for _, m in msgs for a in engine.process(m)]
    assert len(offline) == len(set(offline)) > 600

    ref = parse_config(variant(base, "ref"))
    store = AlertStore(ref.redis)
    service = Running(ref)
    try:
        assert wait_done(ref, store, 90), "reference run did not finish"
    finally:
        service.close()
    events = stream_events(store)
    assert len(events) == len(set(events)), "duplicates in an uninterrupted run"
    assert set(events) == set(offline)
    per_camera = Counter({cam: len(stream_events(store, cam)) for cam in CAMERAS})
    assert sum(per_camera.values()) == len(events) and all(per_camera.values())
    yield Script(base, msgs, set(events), per_camera)
    cleanup(store.client, base["redis"]["key_prefix"])
    store.client.close()


def check_exactly_once(store: AlertStore, s: Script) -> None:
    events = stream_events(store)
    dup = [e for e, n in Counter(events).items() if n > 1]
    assert not dup, f"{len(dup)} (id, status) stored twice, e.g. {dup[:3]}"
    missing = s.expected - set(events)
    extra = set(events) - s.expected
    assert not missing and not extra, f"missing {len(missing)}, unexpected {len(extra)}"
    for cam in CAMERAS:
        assert len(stream_events(store, cam)) == s.per_camera[cam]
    assert store.stream_len() == len(s.expected)


# -- tests -----------------------------------------------------------------------------------------


def test_alerts_reach_redis_and_kafka_with_snapshot(kafka_bootstrap, services):
    rules = [{**RULES[0], "clear_after_s": 0.3}]
    cfg = parse_config(base_dict(kafka_bootstrap, rules=rules))
    ensure_topics(cfg.kafka)
    store = AlertStore(cfg.redis)
    services(cfg)
    try:
        cam, epoch = "lobby", int(time.time() * 1000)
        jpeg = frame_jpeg(100)
        producer = make_producer(cfg.kafka, "test-live")
        # Live: 20 fps, capture_ts = now, so latency_ms is the real pipeline latency.
        captured: dict[int, float] = {}
        for seq in range(40):
            phase = seq % 20
            box = IN_BOX if phase < 12 else OUT_BOX
            det = {"class_id": 0, "label": "person", "confidence": 0.91, "box": box}
            det["track_id"] = 1 + seq // 20
            msg = det_message(cam, epoch, seq, time.time(), [det])
            captured[seq] = msg["capture_ts"]
            store.client.set(store.frame_key(cam, epoch, seq), jpeg, ex=60)
            producer.send(cfg.kafka.topics.detections, key=cam, value=msg)
            producer.flush(10)
            time.sleep(0.05)
        producer.close(10)

        # generous: a group joined before the new topic's metadata arrived waits for a refresh
        assert wait_for(lambda: store.stream_len() >= 4, 120), stream_events(store)
        seen_at = time.time()
        events = stream_events(store)
        assert sorted(s for _, s in events) == ["ended", "ended", "started", "started"]
        assert stream_events(store, cam) == events
        ids = {i for i, _ in events}
        started = {a["id"]: a for a in store.recent(cam) if a["status"] == "started"}
        for aid in ids:
            alert = store.get_alert(aid)
            assert alert["camera_id"] == cam and alert["rule_id"] == "intrusion"
            assert alert["label"] == "person" and alert["status"] == "ended"
            # latency_ms is Redis' write time minus the capture time of the frame that started
            # the alert: exactly that, and within what this test saw (no speed assumed)
            trigger = captured[started[aid]["frame_seq"]]
            assert started[aid]["updated_at"] == pytest.approx(trigger, abs=1e-6)
            written = alert["written_started"]
            assert alert["latency_ms"] == pytest.approx((written - trigger) * 1000, abs=0.1)
            assert 0 < alert["latency_ms"] <= (seen_at - trigger) * 1000 + 1, alert
            print(f"alert {aid}: capture->Redis latency {alert['latency_ms']} ms")
            assert alert["snapshot"] is True
            img = cv2.imdecode(np.frombuffer(store.get_snapshot(aid), np.uint8), cv2.IMREAD_COLOR)
            assert img is not None and img.shape == (90, 160, 3)
            # The box (high severity: orange) where the person was, the label band above it,
            # the frame everywhere else: regions computed from the alert, not fixed pixels.
            assert_snapshot(img, decode(jpeg), IN_BOX, "intrusion: person 0.91", "high", ZONE)
        for entry in store.recent():
            jsonschema.validate(entry, ALERT_SCHEMA)

        records = read_topic(cfg, cfg.kafka.topics.alerts, 4)
        on_kafka = []
        for r in records:
            assert r.key == cam.encode()
            value = json.loads(r.value)  # plain JSON, readable by any consumer
            jsonschema.validate(value, ALERT_SCHEMA)
            on_kafka.append((value["id"], value["status"]))
        assert sorted(on_kafka) == sorted(events)
    finally:
        cleanup(store.client, cfg.redis.key_prefix)


def test_poison_messages_go_to_dlq_and_the_service_carries_on(kafka_bootstrap, services):
    cfg = parse_config(base_dict(kafka_bootstrap))
    ensure_topics(cfg.kafka)
    store = AlertStore(cfg.redis)
    t0 = time.time() - 100
    good = scripted(["door"], 20, t0)
    valid = good[0][1]
    missing = {k: v for k, v in valid.items() if k != "detections"}
    wrong = {**valid, "seq": "seven"}
    bad_det = {**valid, "detections": [{"class_id": 0, "label": "person", "confidence": 2.0}]}
    poison: list[tuple[str, object]] = [
        ("door", b"\x00not json{"),
        ("door", b"\xff\xfe"),
        ("door", missing),
        ("door", wrong),
        ("door", bad_det),
        ("door", [1, 2, 3]),
        ("door", b"x" * 100_000),
    ]
    produce(cfg, poison + good)  # valid messages after the poison
    services(cfg)
    try:
        # generous: a group joined before the new topic's metadata arrived waits for a refresh
        assert wait_for(lambda: store.stream_len() >= 4, 120), stream_events(store)
        dead = read_topic(cfg, cfg.kafka.topics.detections_dlq, len(poison))
        assert len(dead) == len(poison)
        letters = [json.loads(r.value) for r in dead]
        for r, letter in zip(dead, letters, strict=True):
            assert r.key == b"door"
            assert letter["topic"] == cfg.kafka.topics.detections and letter["error"]
            assert set(letter) >= {"error", "topic", "partition", "offset", "key", "value", "ts"}
        errors = [x["error"] for x in letters]
        assert "missing field 'detections'" in errors[2]
        assert "seq must be a non-negative integer" in errors[3]
        assert "confidence" in errors[4] or "box" in errors[4]
        assert "JSON object" in errors[5]
        assert letters[0]["value"].endswith("not json{")
        assert letters[6]["value_truncated"] is True and len(letters[6]["value"]) == 65_536
        assert [x["offset"] for x in letters] == sorted(x["offset"] for x in letters)
        alerts = [store.get_alert(i) for i, _ in stream_events(store)]
        assert {a["camera_id"] for a in alerts} == {"door"}
        assert REGISTRY.get_sample_value("vigil_alerts_dlq_total") >= len(poison)
    finally:
        cleanup(store.client, cfg.redis.key_prefix)


def _serve(cfg_path: Path, log_path: Path, crash: str | None) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != CRASH_ENV}
    if crash:
        env[CRASH_ENV] = crash
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "pipeline.cli", "alerts", "serve", "-c", str(cfg_path)],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def test_exactly_once_across_crashes(script: Script, tmp_path: Path):
    """SIGKILL in each window of a batch (after the Redis write, after Kafka's acknowledgement,
    after the published mark, after the checkpoint) and once at an arbitrary moment; each restart
    resumes from the checkpoint."""
    d = variant(script.base, "kill", instance_id="kill-test")
    cfg = parse_config(d)
    store = AlertStore(cfg.redis)
    put_frames(store, script.msgs, frame_jpeg())
    cfg_path = tmp_path / "vigil.yaml"
    cfg_path.write_text(yaml.safe_dump(d))
    log_path = tmp_path / "serve.log"
    progress = []
    try:
        for crash in ("stored:3", "acked:3", "published:3", "checkpointed:3"):
            proc = _serve(cfg_path, log_path, crash)
            assert proc.wait(60) == -signal.SIGKILL, log_path.read_text()[-3000:]
            progress.append(store.stream_len())
        # A real SIGKILL at an arbitrary point: once some more alerts are in.
        before = store.stream_len()
        proc = _serve(cfg_path, log_path, None)
        assert wait_for(lambda: store.stream_len() >= before + 40, 60), log_path.read_text()[-3000:]
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        progress.append(store.stream_len())
        assert progress[-1] < len(script.expected), "the run finished before the kill"
        # Restart and let it finish.
        proc = _serve(cfg_path, log_path, None)
        try:
            assert wait_done(cfg, store, 90), log_path.read_text()[-3000:]
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 0
        check_exactly_once(store, script)
        assert committed_offsets(cfg) == end_offsets(cfg)  # the commit follows the checkpoint
        started = [i for i, s in stream_events(store) if s == "started"]
        assert all(store.get_alert(i)["snapshot"] for i in started)

        # Kafka: every alert arrived (at-least-once); repeats only from the crash windows.
        records = read_topic(cfg, cfg.kafka.topics.alerts, len(script.expected))
        on_kafka = Counter(
            (json.loads(r.value)["id"], json.loads(r.value)["status"]) for r in records
        )
        assert set(on_kafka) == script.expected
        repeats = sum(n - 1 for n in on_kafka.values())
        log_text = log_path.read_text()
        assert "Traceback" not in log_text, log_text[-3000:]
        print(
            f"crash test: {len(script.msgs)} messages, {len(script.expected)} alert events; "
            f"stream length after each kill {progress}; Kafka repeats {repeats}"
        )
        assert repeats <= 200  # at most a batch's worth per crash
    finally:
        cleanup(store.client, d["redis"]["key_prefix"])


def test_exactly_once_across_redis_restart(
    script: Script, kafka_bootstrap, tmp_path: Path, services
):
    """Redis killed (SIGKILL) while the service writes, restarted 1.5 s later from its AOF."""
    port = free_port()
    d = variant(script.base, "redis")
    d["kafka"]["topics"]["detections"] += ".redis"
    d["redis"]["url"] = f"redis://127.0.0.1:{port}/0"
    cfg = parse_config(d)
    ensure_topics(cfg.kafka)

    def start_redis() -> subprocess.Popen:
        return subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--dir", str(tmp_path)]
            + ["--save", "", "--appendonly", "yes", "--appendfsync", "always"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    server = start_redis()
    store = AlertStore(cfg.redis)
    try:
        assert wait_for(lambda: _ping(store.client), 10)
        put_frames(store, script.msgs, frame_jpeg())
        services(cfg)
        sender = threading.Thread(target=_produce_paced, args=(cfg, script.msgs, 4.0))
        sender.start()
        assert wait_for(lambda: store.stream_len() >= 40, 30)
        at_kill = store.stream_len()
        server.kill()
        server.wait(10)
        time.sleep(1.5)
        server = start_redis()
        sender.join(60)
        assert wait_for(lambda: _ping(store.client), 10)
        assert wait_done(cfg, store, 90)
        assert at_kill < len(script.expected)
        check_exactly_once(store, script)
        print(f"Redis restart: killed at {at_kill} of {len(script.expected)} alert events")
    finally:
        server.kill()
        server.wait(10)
        store.client.close()


def _ping(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


def _produce_paced(cfg: VigilConfig, msgs: list[tuple[str, dict]], seconds: float) -> None:
    producer = make_producer(cfg.kafka, "test-paced", linger_ms=10)
    chunk = max(1, len(msgs) // 40)
    for i in range(0, len(msgs), chunk):
        for key, value in msgs[i : i + chunk]:
            producer.send(cfg.kafka.topics.detections, key=key, value=value)
        producer.flush(30)
        time.sleep(seconds / 40)
    producer.close(10)


def test_two_instances_share_partitions_and_hand_over_state(script: Script, services):
    """A second instance joins mid-run, then the first leaves: every camera's alerts, none
    twice, and the rule state follows each partition through the checkpoints."""
    # Checkpoints at most every 0.5 s: a revoked partition's state is flushed on the way out.
    d = variant(script.base, "pair", checkpoint_interval_s=0.5)
    d["kafka"]["topics"]["detections"] += ".pair"
    d["kafka"]["detections_partitions"] = 4
    cfg = parse_config(d)
    ensure_topics(cfg.kafka)
    store = AlertStore(cfg.redis)
    put_frames(store, script.msgs, frame_jpeg())
    third = len(script.msgs) // 3
    try:
        produce(cfg, script.msgs[:third])
        a = services(cfg)
        assert wait_for(lambda: a.service.stats["messages"] >= third, 60)
        b = services(cfg)
        assert wait_for(lambda: len(b.service._engines) == 2 and len(a.service._engines) == 2, 30)
        produce(cfg, script.msgs[third : 2 * third])
        assert wait_for(lambda: b.service.stats["messages"] > 0, 30)
        a.close()
        assert wait_for(lambda: len(b.service._engines) == 4, 30)
        produce(cfg, script.msgs[2 * third :])
        assert wait_done(cfg, store, 90)
        check_exactly_once(store, script)
        print(
            f"two instances: A processed {a.service.stats['messages']} messages, "
            f"B {b.service.stats['messages']} (B restored {b.service.stats['restores']} partitions)"
        )
    finally:
        cleanup(store.client, d["redis"]["key_prefix"])


def test_cli_tail_show_snapshot_and_subscribe(kafka_bootstrap, services, tmp_path: Path):
    rules = [{**RULES[0], "clear_after_s": 0.3}]
    d = base_dict(kafka_bootstrap, rules=rules)
    cfg = parse_config(d)
    ensure_topics(cfg.kafka)
    cfg_path = tmp_path / "vigil.yaml"
    cfg_path.write_text(yaml.safe_dump(d))
    store = AlertStore(cfg.redis)
    services(cfg)
    cli = [sys.executable, "-m", "pipeline.cli", "alerts"]
    err_path = tmp_path / "tail.err"
    try:
        with open(err_path, "wb") as err:
            tail = subprocess.Popen(
                cli + ["tail", "-c", str(cfg_path), "--json", "--max", "1", "--timeout", "60"],
                cwd=REPO,
                stdout=subprocess.PIPE,
                stderr=err,
            )
        assert wait_for(lambda: "tailing alerts" in err_path.read_text(), 30), err_path.read_text()
        # Produced only now: the tail must see it.
        msgs = scripted(["gate"], 20, time.time() - 10, fps=20)
        put_frames(store, msgs, frame_jpeg())
        produce(cfg, msgs)
        out, _ = tail.communicate(timeout=60)
        assert tail.returncode == 0, err_path.read_text()
        lines = out.decode().splitlines()
        assert len(lines) == 1
        alert = json.loads(lines[0])
        jsonschema.validate(alert, ALERT_SCHEMA)
        assert alert["camera_id"] == "gate" and alert["status"] == "started"
        aid = alert["id"]

        out_jpg = tmp_path / "out.jpg"
        bad_jpg = tmp_path / "x.jpg"
        cmds = {
            "show": ["show", aid],
            "show_json": ["show", aid, "--json"],
            "snapshot": ["snapshot", aid, "-o", str(out_jpg)],
            "show_unknown": ["show", "f" * 20],
            "snapshot_unknown": ["snapshot", "f" * 20, "-o", str(bad_jpg)],
        }
        procs = {  # in parallel: each CLI start costs a second or two
            name: subprocess.Popen(
                cli + cmd + ["-c", str(cfg_path)],
                cwd=REPO,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            for name, cmd in cmds.items()
        }
        res = {name: (p.communicate(timeout=60), p.returncode) for name, p in procs.items()}
        (out, err), rc = res["show"]
        assert rc == 0, err
        assert "intrusion" in out.decode() and "gate" in out.decode()
        (out, err), rc = res["show_json"]
        shown = json.loads(out)
        assert shown["id"] == aid and shown["snapshot"] is True and shown["latency_ms"] > 0
        (out, err), rc = res["snapshot"]
        assert rc == 0, err
        img = cv2.imread(str(out_jpg))
        assert img is not None and img.shape == (90, 160, 3)
        for name in ("show_unknown", "snapshot_unknown"):
            (out, err), rc = res[name]
            assert rc == 2, (name, err)
            assert "no alert with id" in err.decode()
            assert "Traceback" not in err.decode()
        assert not bad_jpg.exists()

        # The Python API, both backends: the same alerts, each (id, status) once.
        assert wait_for(lambda: store.stream_len() >= 2, 30)
        want = set(stream_events(store))
        via_redis = list(subscribe(cfg, backend="redis", from_beginning=True, timeout_s=1.0))
        via_kafka = list(subscribe(cfg, camera="gate", from_beginning=True, timeout_s=2))
        assert {(a["id"], a["status"]) for a in via_redis} == want
        assert {(a["id"], a["status"]) for a in via_kafka} == want
        assert list(subscribe(cfg, rule="nope", from_beginning=True, timeout_s=1.0)) == []
        assert (
            list(
                subscribe(cfg, backend="redis", camera="other", from_beginning=True, timeout_s=0.5)
            )
            == []
        )
    finally:
        cleanup(store.client, cfg.redis.key_prefix)


def _replayed(batches: list[list], finals: list) -> list:
    """The alert service's sends around crashes: after every third batch the process is killed
    between Kafka's acknowledgement and its checkpoint, and the restart sends the last two
    batches again before new ones. ``finals`` (one event per camera) go last, once."""
    sends = []
    for i, batch in enumerate(batches):
        sends += batch
        if i % 3 == 2:
            sends += batches[i - 1] + batch
    return sends + finals


def test_replayed_alerts_on_kafka_are_yielded_and_tailed_once(
    kafka_bootstrap, tmp_path: Path, capsys
):
    """docs/messages.md: the alerts topic is at-least-once (a crash of the service publishes a
    batch again) and ``alerts.subscribe()`` / ``vigil alerts tail`` dedup by (id, status). The
    topic here holds real repeats: the same messages, byte for byte, interleaved as a replay
    after a crash sends them."""
    import logging

    from pipeline.cli import main as vigil
    from pipeline.common.jsoncodec import dumps

    d = base_dict(kafka_bootstrap)
    cfg = parse_config(d)
    ensure_topics(cfg.kafka)
    cfg_path = tmp_path / "vigil.yaml"
    cfg_path.write_text(yaml.safe_dump(d))
    cams = _cameras(2)  # one per partition of the 2-partition alerts topic
    engine = RuleEngine(d["alerts"])
    events = [
        ev.to_dict() for _, m in scripted(cams, 60, time.time() - 60) for ev in engine.process(m)
    ]
    for e in events[:2]:
        jsonschema.validate(e, ALERT_SCHEMA)
    expected = [(e["id"], e["status"]) for e in events]
    assert len(expected) == len(set(expected)) >= 20
    # each camera's last event goes last and once: once it is read, everything of its
    # partition before it has been read too (Kafka keeps order per partition)
    finals = [max(i for i, e in enumerate(events) if e["camera_id"] == c) for c in cams]
    sends = [(e["camera_id"], dumps(e)) for e in events]
    body = [x for i, x in enumerate(sends) if i not in finals]
    sends = _replayed([body[i : i + 4] for i in range(0, len(body), 4)], [sends[i] for i in finals])
    producer = make_producer(cfg.kafka, "test-replay")
    try:
        for key, payload in sends:
            producer.send(cfg.kafka.topics.alerts, key=key, value=payload)
        producer.flush(30)
    finally:
        producer.close(10)

    on_topic = Counter(
        (json.loads(r.value)["id"], json.loads(r.value)["status"])
        for r in read_topic(cfg, cfg.kafka.topics.alerts, len(sends))
    )
    assert sum(on_topic.values()) == len(sends) > len(expected)
    repeated = [k for k, n in on_topic.items() if n > 1]
    assert len(repeated) >= 10 and set(on_topic) == set(expected)

    # the Python API, kafka backend (the default)
    last = {(events[i]["id"], events[i]["status"]) for i in finals}
    yielded: list[tuple[str, str]] = []
    for alert in subscribe(cfg, from_beginning=True, timeout_s=60):
        yielded.append((alert["id"], alert["status"]))
        if last <= set(yielded):
            break
    twice = [k for k, n in Counter(yielded).items() if n > 1]
    assert not twice, f"subscribe() yielded {len(twice)} (id, status) more than once: {twice[:3]}"
    assert sorted(yielded) == sorted(expected)
    assert [k for k in yielded if k[0] == events[0]["id"]] == [
        k for k in expected if k[0] == events[0]["id"]
    ]  # started before ended

    # `vigil alerts tail`: exactly as many lines as there are distinct events. Had it printed a
    # repeat, a repeat would be among them (each partition's repeats come before its last event)
    kafka_log = logging.getLogger("kafka")
    level = kafka_log.level
    try:
        code = vigil(
            ["alerts", "tail", "-c", str(cfg_path), "--from-beginning", "--json"]
            + ["--max", str(len(expected)), "--timeout", "60"]
        )
    finally:
        kafka_log.setLevel(level)
    out, err = capsys.readouterr()
    assert code == 0, err
    printed = Counter(
        (json.loads(line)["id"], json.loads(line)["status"]) for line in out.splitlines()
    )
    twice = [k for k, n in printed.items() if n > 1]
    assert not twice, f"tail printed {len(twice)} (id, status) more than once: {twice[:3]}"
    assert set(printed) == set(expected)
