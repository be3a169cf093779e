"""Live rules against the real local Kafka and Redis: the rules topic (put, read, delete, seed,
invalid records), the watcher, and an alert service that applies a change within 5 s without a
restart, ends the open alert of the changed rule (``rule_changed``) and restores after the change.
Every test has its own topics (the rules topic included), key prefix and consumer group."""

from __future__ import annotations

import json
import logging
import threading
import time

import jsonschema
import pytest
import yaml
from kafka import TopicPartition

from alerts.config import parse_alerts_config
from alerts.rules import parse_rule
from alerts.rules_topic import (
    RulesWatcher,
    delete_rule,
    put_rule,
    read_rules,
    rule_value,
    seed_rules,
)
from alerts.service import AlertService
from alerts.store import AlertStore
from pipeline.cli import main
from pipeline.common.kafka import ensure_topics, make_consumer, make_producer
from pipeline.config import VigilConfig, parse_config
from tests.support.alert_service import ALERT_SCHEMA, Running, base_dict
from tests.support.kafka import produce, read_topic
from tests.support.messages import IN_BOX, OUT_BOX, ZONE, det_message, frame_jpeg
from tests.support.redis import cleanup
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration

INTRUSION = {
    "id": "intrusion",
    "type": "zone_intrusion",
    "zone": ZONE,
    "classes": ["person"],
    "min_frames": 2,
    "clear_after_s": 1.0,
    "cooldown_s": 0,
    "severity": "low",
}
LOITER = {"id": "loiter", "type": "loitering", "zone": ZONE, "dwell_s": 600}


def own_rules_topic(d: dict) -> dict:
    """The rules topic of the test's own (make_config_dict names it so too: never the shared
    default ``vigil.rules``, which every test's alert service would seed and read)."""
    d["kafka"]["topics"]["rules"] = d["kafka"]["topics"]["detections"].replace(
        ".detections", ".rules"
    )
    return d


@pytest.fixture
def cfg(kafka_bootstrap) -> VigilConfig:
    c = parse_config(own_rules_topic(base_dict(kafka_bootstrap, rules=[INTRUSION, LOITER])))
    assert c.kafka.topics.rules.endswith(".rules") and c.kafka.topics.rules != "vigil.rules"
    ensure_topics(c.kafka)
    yield c
    store = AlertStore(c.redis)
    cleanup(store.client, c.redis.key_prefix)
    store.client.close()


def rule(**patch) -> object:
    return parse_rule({**INTRUSION, **patch})


def dumps(rules: dict) -> dict:
    return {rid: r.model_dump() for rid, r in rules.items()}


def produce_raw(cfg: VigilConfig, items: list[tuple[bytes | None, bytes | None]]) -> None:
    producer = make_producer(cfg.kafka, "test-raw-rules")
    try:
        for key, value in items:
            producer.send(cfg.kafka.topics.rules, key=key, value=value)
        producer.flush(timeout=15)
    finally:
        producer.close(timeout=10)


# -- the topic -------------------------------------------------------------------------------------


def test_put_read_update_delete(cfg: VigilConfig) -> None:
    k = cfg.kafka
    assert read_rules(k) == {}
    put_rule(k, rule())
    put_rule(k, parse_rule(LOITER))
    got = read_rules(k)
    assert list(got) == ["intrusion", "loiter"]  # in id order
    assert dumps(got) == {
        "intrusion": rule().model_dump(),
        "loiter": parse_rule(LOITER).model_dump(),
    }

    put_rule(k, rule(severity="critical"))
    assert read_rules(k)["intrusion"].severity == "critical"

    delete_rule(k, "intrusion")
    assert list(read_rules(k)) == ["loiter"]
    # the values are the rule mappings as given in the YAML (JSON), the deletion a tombstone
    records = read_topic(cfg, k.topics.rules, 4)
    assert [(r.key, r.value is None) for r in records] == [
        (b"intrusion", False),
        (b"loiter", False),
        (b"intrusion", False),
        (b"intrusion", True),
    ]
    assert json.loads(records[0].value) == INTRUSION
    with pytest.raises(ValueError, match="invalid rule id"):
        delete_rule(k, "no such/rule")


def test_read_of_a_missing_topic_is_empty_and_creates_nothing(cfg: VigilConfig) -> None:
    k = cfg.kafka.model_copy(deep=True)
    k.topics.rules = cfg.kafka.topics.rules + ".absent"
    assert read_rules(k) == {}
    c = make_consumer(k, "test-topics", group_id=None, allow_auto_create_topics=False)
    try:
        assert k.topics.rules not in c.topics()
    finally:
        c.close()


def test_seed_publishes_only_what_the_topic_lacks(cfg: VigilConfig) -> None:
    k = cfg.kafka
    put_rule(k, rule(severity="high"))  # changed live: the topic is the truth now
    produce_raw(cfg, [(b"broken", b"{not json")])
    yaml_rules = parse_alerts_config(
        {"rules": [INTRUSION, LOITER, {**LOITER, "id": "broken"}]}
    ).rules
    assert seed_rules(k, yaml_rules) == ["loiter"]
    got = read_rules(k)
    assert got["intrusion"].severity == "high"  # not overwritten by the YAML's version
    assert "broken" not in got  # an invalid record is skipped, and not overwritten either
    assert seed_rules(k, yaml_rules) == []
    delete_rule(k, "loiter")
    assert seed_rules(k, yaml_rules) == ["loiter"]  # deleted: the YAML's comes back


def test_invalid_records_are_logged_and_skipped(cfg: VigilConfig, caplog) -> None:
    produce_raw(
        cfg,
        [
            (b"a", b"{not json"),
            (b"b", json.dumps({**INTRUSION, "id": "b", "zone": [[0, 0]]}).encode()),
            (b"c", json.dumps(INTRUSION).encode()),  # key is not the rule's id
            (b"intrusion", json.dumps(INTRUSION).encode()),
        ],
    )
    with caplog.at_level(logging.ERROR, logger="alerts.rules_topic"):
        got = read_rules(cfg.kafka)
    assert list(got) == ["intrusion"]
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3 and all("\n" not in line for line in lines)
    assert "'a': not JSON" in lines[0]
    assert "rule 'b': zone: polygon needs at least 3 points" in lines[1]
    assert "'c': key does not match the rule's id 'intrusion'" in lines[2]
    # (a record without a key cannot exist: the broker refuses it on a compacted topic)


def test_watcher_reports_the_initial_rules_then_each_change(cfg: VigilConfig) -> None:
    k = cfg.kafka
    put_rule(k, rule())
    calls: list[dict] = []
    changed = threading.Event()

    def on_change(rules: dict) -> None:
        calls.append(dumps(rules))
        changed.set()

    watcher = RulesWatcher(k, on_change).start()
    try:
        assert watcher.ready.wait(15) and changed.wait(15)
        assert calls == [{"intrusion": rule().model_dump()}]

        def next_call(n: int) -> dict:
            assert wait_for(lambda: len(calls) >= n, 5), calls
            return calls[n - 1]

        t0 = time.monotonic()
        put_rule(k, parse_rule(LOITER))
        assert list(next_call(2)) == ["intrusion", "loiter"]
        assert time.monotonic() - t0 < 5
        put_rule(k, rule())  # the same rule again: no change, no call
        produce_raw(cfg, [(b"intrusion", b"{not json")])  # invalid: skipped, the rule kept
        delete_rule(k, "loiter")
        # the next call is the deletion's: the two records before it called nothing
        assert next_call(3) == {"intrusion": rule().model_dump()}
        assert watcher.rules["intrusion"].model_dump() == rule().model_dump()
        time.sleep(1.0)
        assert len(calls) == 3
    finally:
        watcher.stop()


# -- the alert service ------------------------------------------------------------------------------


class Camera:
    """A live camera: a frame every 0.1 s (capture_ts = now) with a person inside the zone and a
    car outside it, its JPEG in Redis like the ingest worker keeps it."""

    def __init__(self, cfg: VigilConfig, store: AlertStore, cam: str = "lobby") -> None:
        self.cfg, self.store, self.cam = cfg, store, cam
        self.jpeg = frame_jpeg(90)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        producer = make_producer(self.cfg.kafka, "test-live-rules")
        epoch = int(time.time() * 1000)
        seq = 0
        try:
            while not self.stop.is_set():
                dets = [
                    {
                        "class_id": 0,
                        "label": "person",
                        "confidence": 0.9,
                        "box": IN_BOX,
                        "track_id": 7,
                    },
                    {"class_id": 2, "label": "car", "confidence": 0.6, "box": OUT_BOX},
                ]
                msg = det_message(self.cam, epoch, seq, time.time(), dets)
                self.store.client.set(self.store.frame_key(self.cam, epoch, seq), self.jpeg, ex=60)
                producer.send(self.cfg.kafka.topics.detections, key=self.cam, value=msg)
                producer.flush(10)
                seq += 1
                self.stop.wait(0.1)
        finally:
            producer.close(10)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(15)


def events(store: AlertStore, rule_id: str) -> list[dict]:
    return [a for a in reversed(store.recent(count=1000)) if a["rule_id"] == rule_id]


def processed_offset(cfg: VigilConfig, store: AlertStore, part: int) -> int:
    cp = store.get_checkpoint(cfg.alerts.service.group_id, cfg.kafka.topics.detections, part)
    return -1 if cp is None else cp["offset"]


def test_service_applies_a_rule_change_within_5_s(cfg: VigilConfig) -> None:
    k = cfg.kafka
    store = AlertStore(cfg.redis)
    put_rule(k, rule(severity="high"))  # the topic has its own version of the YAML's rule
    service = Running(cfg)
    camera = Camera(cfg, store)
    try:
        # seeded with the YAML's rule the topic lacked; the topic's version of the other applies
        assert wait_for(lambda: "loiter" in read_rules(k), 30)
        assert wait_for(lambda: events(store, "intrusion"), 120), "no alert"
        first = events(store, "intrusion")[0]
        assert first["status"] == "started" and first["severity"] == "high"

        # the console's review material of the started alert
        stored = store.get_alert(first["id"])
        assert store.get_source(first["id"]) == camera.jpeg  # as the camera saw it
        assert stored["snapshot"] is True and store.get_snapshot(first["id"]) != camera.jpeg
        dets = stored["frame_detections"]
        assert [(d["label"], d["box"], d["confidence"]) for d in dets] == [
            ("person", IN_BOX, 0.9),
            ("car", OUT_BOX, 0.6),
        ]
        assert dets[0]["track_id"] == 7 and dets[1]["track_id"] < 0  # the service's tracker
        assert "frame_detections" not in first  # the alert.v1 message is unchanged

        # change the rule: its open alert ends within 5 s, the new version starts afresh
        t0 = time.monotonic()
        put_rule(k, rule(severity="critical"))
        assert wait_for(lambda: store.get_alert(first["id"])["status"] == "ended", 5, 0.05), (
            "the change was not applied within 5 s"
        )
        took = time.monotonic() - t0
        ended = store.get_alert(first["id"])
        assert ended["details"]["reason"] == "rule_changed", ended
        print(f"rule change applied in {took:.2f} s")
        assert wait_for(lambda: len(events(store, "intrusion")) >= 3, 15)
        second = events(store, "intrusion")[2]
        assert second["status"] == "started" and second["severity"] == "critical"
        assert second["id"] != first["id"]

        # the checkpoints hold the new version's state (keyed by its fingerprint)
        new_fp = rule(severity="critical").fingerprint()
        fps = set()
        for p in range(k.detections_partitions):
            cp = store.get_checkpoint(cfg.alerts.service.group_id, k.topics.detections, p)
            cams = (cp or {}).get("engine", {}).get("cameras", {})
            fps |= {c["rules"]["intrusion"]["fp"] for c in cams.values()}
        assert fps == {new_fp}

        # a restart restores the new version's open alert: nothing ends, nothing starts
        service.close()
        parts = [p for p in range(k.detections_partitions) if processed_offset(cfg, store, p) > 0]
        at_restart = {p: processed_offset(cfg, store, p) for p in parts}
        service = Running(cfg)
        assert wait_for(
            lambda: all(processed_offset(cfg, store, p) > at_restart[p] + 10 for p in parts), 60
        ), "the restarted service processed nothing"
        assert [(a["id"], a["status"]) for a in events(store, "intrusion")] == [
            (first["id"], "started"),
            (first["id"], "ended"),
            (second["id"], "started"),
        ]

        # delete it: its alert ends, and nothing more comes from it
        delete_rule(k, "intrusion")
        assert wait_for(lambda: store.get_alert(second["id"])["status"] == "ended", 5, 0.05)
        assert store.get_alert(second["id"])["details"]["reason"] == "rule_changed"
        at_delete = {p: processed_offset(cfg, store, p) for p in parts}
        assert wait_for(
            lambda: all(processed_offset(cfg, store, p) > at_delete[p] + 10 for p in parts), 30
        )
        assert len(events(store, "intrusion")) == 4
    finally:
        camera.close()
        service.close()

    # on Kafka too: valid alert.v1 messages, the rule_changed ends among them
    records = read_topic(cfg, k.topics.alerts, 4)
    msgs = [json.loads(r.value) for r in records]
    for m in msgs:
        jsonschema.validate(m, ALERT_SCHEMA)
    ends = {m["id"] for m in msgs if m["status"] == "ended"}
    assert {first["id"], second["id"]} <= ends
    assert all(m["details"]["reason"] == "rule_changed" for m in msgs if m["status"] == "ended")
    store.client.close()


def test_yaml_only_service_neither_seeds_nor_watches(kafka_bootstrap) -> None:
    d = own_rules_topic(base_dict(kafka_bootstrap, rules=[INTRUSION], live_rules=False))
    c = parse_config(d)
    ensure_topics(c.kafka)
    put_rule(c.kafka, rule(severity="critical"))
    svc = AlertService(c)
    try:
        svc._start_live_rules()
        assert svc._watcher is None and svc.acfg.rules[0].severity == "low"
    finally:
        svc.close()
    assert list(read_rules(c.kafka)) == ["intrusion"]  # nothing seeded

    d["alerts"]["service"]["live_rules"] = True
    svc = AlertService(parse_config(d))
    try:
        svc._start_live_rules()
        assert svc._watcher is not None
        assert [(r.id, r.severity) for r in svc.acfg.rules] == [("intrusion", "critical")]
    finally:
        svc.close()
    assert svc._watcher is None


def test_rule_values_on_the_topic_are_the_yaml_mappings(cfg: VigilConfig) -> None:
    put_rule(cfg.kafka, parse_rule(LOITER))
    c = make_consumer(cfg.kafka, "test-raw", group_id=None, enable_auto_commit=False)
    try:
        tp = TopicPartition(cfg.kafka.topics.rules, 0)
        c.assign([tp])
        c.seek_to_beginning(tp)
        recs = wait_for(lambda: c.poll(timeout_ms=500).get(tp), 15)
        assert json.loads(recs[0].value) == LOITER == rule_value(parse_rule(LOITER))
    finally:
        c.close()


# -- vigil rules ------------------------------------------------------------------------------------


def test_cli_put_list_rm_preview(kafka_bootstrap, tmp_path, capsys) -> None:
    d = own_rules_topic(base_dict(kafka_bootstrap, rules=[]))
    cfg_file = tmp_path / "vigil.yaml"
    cfg_file.write_text(yaml.safe_dump(d))
    c = parse_config(d)
    ensure_topics(c.kafka)
    rule_file = tmp_path / "intrusion.yaml"
    rule_file.write_text(yaml.safe_dump(INTRUSION))

    def vigil(*argv: str) -> tuple[int, str, str]:
        code = main(["rules", argv[0], "-c", str(cfg_file), *argv[1:]])
        out, err = capsys.readouterr()
        return code, out, err

    assert vigil("list") == (0, "", f"no rules in {c.kafka.topics.rules}\n")
    assert vigil("put", "--rule", str(rule_file))[:2] == (
        0,
        "rule intrusion (zone_intrusion) added\n",
    )
    assert (
        vigil("put", "--rule", str(rule_file))[1] == "rule intrusion (zone_intrusion) unchanged\n"
    )
    code, out, _ = vigil("list", "--json")
    assert code == 0 and [json.loads(line) for line in out.splitlines()] == [INTRUSION]
    code, out, _ = vigil("list")
    assert out.split()[:4] == ["intrusion", "zone_intrusion", "enabled", "low"]

    # preview: a person in the zone for 2 s, twice, in the last minutes
    now = time.time()
    msgs = []
    for seq in range(60):
        ts = now - 120 + seq * 0.5
        inside = seq % 30 < 4 * 2
        det = {"class_id": 0, "label": "person", "confidence": 0.9, "track_id": 1 + seq // 30}
        det["box"] = IN_BOX if inside else OUT_BOX
        msgs.append(("gate", det_message("gate", 1, seq, ts, [det])))
    produce(c, msgs)
    code, out, err = vigil("preview", "--rule", str(rule_file), "--since", "10m")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split()[:2] == ["start", "(UTC)"] and len(lines) == 4, out
    assert all(line.split()[4:6] == ["gate", "person"] for line in lines[1:3])
    assert lines[3].startswith("rule intrusion: 2 alert(s)") and "60 detection message(s)" in out
    code, out, err = vigil("preview", "--rule", str(rule_file), "--since", "10m", "--json")
    result = json.loads(out)
    assert code == 0 and result["messages"] == 60 and result["frames"] == 60
    assert len(result["alerts"]) == 2 and all("snapshot" not in a for a in result["alerts"])
    assert {a["camera_id"] for a in result["alerts"]} == {"gate"}
    code, out, _ = vigil("preview", "--rule", str(rule_file), "--since", "10m", "--camera", "x")
    assert code == 0 and "0 alert(s)" in out

    assert vigil("rm", "intrusion")[:2] == (0, "removed rule intrusion\n")
    code, out, err = vigil("rm", "intrusion")
    assert code == 2 and err == "vigil: no such rule: intrusion (see `vigil rules list`)\n"
    assert read_rules(c.kafka) == {}
