"""The MQTT sink against the real local mosquitto (``services.sh start-mqtt``; these tests fail
when it is not there): state topics ON/OFF retained, the retained snapshot JPEG, camera
availability from Redis, and the Home Assistant discovery payloads, checked by a plain paho
subscriber."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid

import pytest
import yaml

from alerts.store import AlertStore
from tests.support.kafka import TopicReader
from tests.support.notify import (
    REPO,
    MqttRecorder,
    alert,
    cfg_from,
    clear_retained,
    committed,
    config_dict,
    end_offsets,
    make_cfg,
    mqtt_address,
    produce,
    running,
)
from tests.support.private_services import PrivateService
from tests.support.redis import cleanup
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration


def mqtt_sink(host: str, port: int, tag: str, **kw) -> dict:
    return {
        "id": "home",
        "type": "mqtt",
        "url": f"mqtt://{host}:{port}",
        "prefix": f"{tag}/",
        "discovery_prefix": f"{tag}-ha",
        "timeout_s": 5.0,
        "availability_interval_s": 1.0,
        "retry": {"attempts": 5, "initial_s": 0.1, "max_s": 1.0, "budget_s": 20.0},
        **kw,
    }


def payload(rec: MqttRecorder, topic: str) -> bytes | None:
    msgs = rec.get(topic)
    return msgs[-1].payload if msgs else None


def test_state_snapshot_availability_and_discovery(kafka_bootstrap):
    host, port = mqtt_address()
    tag = f"t{uuid.uuid4().hex[:8]}"
    p, dp = f"{tag}/", f"{tag}-ha"
    cfg = make_cfg(kafka_bootstrap, [mqtt_sink(host, port, tag)])
    store = AlertStore(cfg.redis)
    jpeg = b"\xff\xd8\xff\xe0-snapshot-of-cam-a-\xff\xd9"
    a0, a1 = alert(0), alert(1)  # two overlapping intrusions on cam-a
    store.put_snapshot(a0["id"], jpeg, ttl_s=600)
    # the ingest worker's view of the cameras: cam-a streams, cam-b is reconnecting
    store.client.hset(store.keys.camera_status("cam-a"), mapping={"state": "streaming"})
    store.client.hset(store.keys.camera_status("cam-b"), mapping={"state": "backoff"})
    rec = MqttRecorder(host, port, [f"{p}#", f"{dp}/#"])
    seen: set[str] = set()
    try:
        with running(cfg, known=(("cam-a", "intrusion"), ("cam-b", "loiter"))) as service:
            produce(cfg, [a0, a1])
            state = f"{p}cam-a/intrusion/state"
            assert rec.wait(lambda: payload(rec, state) == b"ON", 20)
            assert rec.wait(lambda: payload(rec, f"{p}cam-a/snapshot") == jpeg, 10)
            produce(cfg, [alert(0, "ended")])
            # a1 is still open: the sensor stays ON until the last open alert ends
            assert rec.wait(lambda: len(rec.get(f"{p}alerts")) >= 3, 20)
            assert payload(rec, state) == b"ON"
            produce(cfg, [alert(1, "ended")])
            assert rec.wait(lambda: payload(rec, state) == b"OFF", 20)
            assert rec.wait(lambda: payload(rec, f"{p}cam-a/availability") == b"online", 10)
            assert rec.wait(lambda: payload(rec, f"{p}cam-b/availability") == b"offline", 10)
            assert payload(rec, f"{p}available") == b"online"
            ends = end_offsets(cfg)
            assert wait_for(lambda: committed(cfg) == ends, 15)
            assert service.runners[0].stats["delivered"] == 4
        # after a clean stop the notifier says it is gone
        assert rec.wait(lambda: payload(rec, f"{p}available") == b"offline", 10)
        events = [json.loads(m.payload) for m in rec.get(f"{p}alerts")]
        assert [(e["id"], e["status"]) for e in events] == [
            (a0["id"], "started"),
            (a1["id"], "started"),
            (a0["id"], "ended"),
            (a1["id"], "ended"),
        ]
        assert not any(m.retain for m in rec.get(f"{p}alerts"))
        seen = rec.topics()
    finally:
        rec.close()

    # a new subscriber gets the retained state: what Home Assistant sees after a restart
    late = MqttRecorder(host, port, [f"{p}#", f"{dp}/#"])
    retained = {
        f"{p}cam-a/intrusion/state",
        f"{p}cam-a/intrusion/attributes",
        f"{p}cam-a/snapshot",
        f"{dp}/binary_sensor/vigil_cam-a/intrusion/config",
        f"{dp}/image/vigil_cam-a/snapshot/config",
        f"{dp}/binary_sensor/vigil_cam-b/loiter/config",
        f"{dp}/image/vigil_cam-b/snapshot/config",
    }
    try:
        # the broker sends the retained messages after its SUBACK, one subscription after the
        # other ({p}# before {dp}/#): wait for all of them, not for the first one (reading the
        # discovery topics once the state had come was a race)
        assert late.wait(lambda: retained <= late.topics(), 10), retained - late.topics()
        (st,) = late.get(f"{p}cam-a/intrusion/state")
        assert st.retain and st.payload == b"OFF"
        (snap,) = late.get(f"{p}cam-a/snapshot")
        assert snap.retain and snap.payload == jpeg
        attrs = json.loads(late.get(f"{p}cam-a/intrusion/attributes")[0].payload)
        assert attrs["id"] == a1["id"] and attrs["status"] == "ended"
        assert late.get(f"{p}alerts") == []  # events are not retained

        sensor = json.loads(late.get(f"{dp}/binary_sensor/vigil_cam-a/intrusion/config")[0].payload)
        assert sensor["state_topic"] == f"{p}cam-a/intrusion/state"
        assert (sensor["payload_on"], sensor["payload_off"]) == ("ON", "OFF")
        assert sensor["unique_id"] == "vigil_cam-a_intrusion"
        assert sensor["device"]["identifiers"] == ["vigil_cam-a"]
        assert sensor["availability"] == [
            {"topic": f"{p}available"},
            {"topic": f"{p}cam-a/availability"},
        ]
        assert sensor["availability_mode"] == "all"
        image = json.loads(late.get(f"{dp}/image/vigil_cam-a/snapshot/config")[0].payload)
        assert image["image_topic"] == f"{p}cam-a/snapshot"
        assert image["content_type"] == "image/jpeg"
        assert image["device"] == sensor["device"]
        # announced from the config before any alert: cam-b's loiter rule and cam-b's image
        assert late.get(f"{dp}/binary_sensor/vigil_cam-b/loiter/config")
        assert late.get(f"{dp}/image/vigil_cam-b/snapshot/config")
        seen |= late.topics()
    finally:
        late.close()
        clear_retained(host, port, seen)
        store.client.delete(store.keys.camera_status("cam-a"), store.keys.camera_status("cam-b"))


def test_clip_message_carries_the_clip_url_on_the_alerts_topic(kafka_bootstrap):
    """The recorder's clip message goes out on <prefix>alerts with the clip's absolute URL
    (console.public_url + its path); the alert's state stays as its ended message left it."""
    host, port = mqtt_address()
    tag = f"t{uuid.uuid4().hex[:8]}"
    p = f"{tag}/"
    cfg = make_cfg(kafka_bootstrap, [mqtt_sink(host, port, tag, discovery=False)])
    a = alert(0)
    rec = MqttRecorder(host, port, [f"{p}#"])
    try:
        with running(cfg, public_url="https://vigil.example:8443"):
            produce(cfg, [a, alert(0, "ended"), alert(0, "clip")])
            assert rec.wait(lambda: len(rec.get(f"{p}alerts")) >= 3, 20)
            assert payload(rec, f"{p}cam-a/intrusion/state") == b"OFF"
        events = [json.loads(m.payload) for m in rec.get(f"{p}alerts")]
        assert [e["status"] for e in events] == ["started", "ended", "clip"]
        assert "clip_url" not in events[1]
        link = f"https://vigil.example:8443/#/alerts/{a['id']}"  # the console opens its detail
        assert [e["alert_url"] for e in events] == [link] * 3
        assert events[2]["clip_url"] == f"https://vigil.example:8443/api/alerts/{a['id']}/clip.mp4"
        assert events[2]["clip"]["path"] == f"/api/alerts/{a['id']}/clip.mp4"
    finally:
        rec.close()
        cleanup(AlertStore(cfg.redis).client, cfg.redis.key_prefix)


def test_broker_down_dead_letters_without_the_password(kafka_bootstrap, caplog):
    mqtt_address()  # the broker must be there for the suite; this test uses a closed port
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    password = "mqtt-pass-0123456789"
    sink = mqtt_sink(
        "127.0.0.1",
        closed,
        "tdown",
        username="vigil",
        password=password,
        timeout_s=0.5,
        retry={"attempts": 3, "initial_s": 0.1, "max_s": 0.2, "budget_s": 5.0},
    )
    cfg = make_cfg(kafka_bootstrap, [sink])
    produce(cfg, [alert(0)])
    with running(cfg):
        dlq = TopicReader(cfg, cfg.kafka.topics.notify_dlq)
        dead = dlq.until(lambda r: len(r) >= 1, 30)
        dlq.close()
    (d,) = [r["value"] for r in dead]
    assert d["sink"] == "home" and d["sink_type"] == "mqtt" and d["attempts"] == 3
    assert "not connected to mqtt://127.0.0.1" in d["error"]
    assert password.encode() not in dead[0]["raw"]
    assert password not in caplog.text


def test_notify_test_command_mqtt(kafka_bootstrap, tmp_path, capsys):
    from pipeline.cli import build_parser

    host, port = mqtt_address()
    tag = f"t{uuid.uuid4().hex[:8]}"
    data = config_dict(kafka_bootstrap, [mqtt_sink(host, port, tag)])
    path = tmp_path / "vigil.yaml"
    path.write_text(yaml.safe_dump(data))
    rec = MqttRecorder(host, port, [f"{tag}/#", f"{tag}-ha/#"])
    try:
        args = build_parser().parse_args(["notify", "test", "home", "-c", str(path)])
        assert args.func(args) == 0
        assert "mqtt sink 'home': delivered: published to" in capsys.readouterr().out
        assert rec.wait(lambda: rec.get(f"{tag}/alerts"), 10)
        event = json.loads(rec.get(f"{tag}/alerts")[0].payload)
        assert event["camera_id"] == "vigil-test"
        # a test alert leaves nothing retained behind: no state, no discovery of a fake camera
        assert rec.topics() == {f"{tag}/alerts"}
        assert not any(m.retain for m in rec.messages)
        seen = rec.topics()
    finally:
        rec.close()
    clear_retained(host, port, seen)


def test_broker_restart_republishes_and_the_will_says_offline(kafka_bootstrap, tmp_path):
    """A broker of the test's own (it is restarted, without persistence: its retained messages
    are gone). After the restart the notifier publishes again what it knows (availability,
    discovery, states, snapshots) and delivers what came while the broker was down; killed
    (SIGKILL: no goodbye), its will tells every subscriber it is offline (docs/notify.md)."""
    with PrivateService("mqtt", tmp_path) as broker:
        host, port = "127.0.0.1", broker.port
        tag = f"t{uuid.uuid4().hex[:8]}"
        p, dp = f"{tag}/", f"{tag}-ha"
        sink = mqtt_sink(
            host,
            port,
            tag,
            timeout_s=1.0,
            retry={"attempts": 100, "initial_s": 0.2, "max_s": 1.0, "budget_s": 60.0},
        )
        data = config_dict(kafka_bootstrap, [sink])
        path = tmp_path / "vigil.yaml"
        path.write_text(yaml.safe_dump(data))
        cfg = cfg_from(data)
        store = AlertStore(cfg.redis)
        jpeg = b"\xff\xd8\xff\xe0-cam-a-before-the-restart-\xff\xd9"
        a0 = alert(0)  # cam-a/intrusion, open
        b0 = alert(0, camera="cam-b", rule="loiter")  # comes while the broker is down
        store.put_snapshot(a0["id"], jpeg, ttl_s=600)
        store.client.hset(store.keys.camera_status("cam-a"), mapping={"state": "streaming"})
        log_path = tmp_path / "notify.log"
        proc = None
        rec = before = None
        try:
            before = MqttRecorder(host, port, [f"{p}#", f"{dp}/#"])
            with log_path.open("ab") as log:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "pipeline.cli", "notify", "serve", "-c", str(path)],
                    cwd=REPO,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env={**os.environ, "PYTHONUNBUFFERED": "1"},
                )
            produce(cfg, [a0])
            state_a = f"{p}cam-a/intrusion/state"
            assert before.wait(lambda: payload(before, state_a) == b"ON", 30), log_path.read_text()
            assert before.wait(lambda: payload(before, f"{p}cam-a/snapshot") == jpeg, 10)
            assert payload(before, f"{p}available") == b"online"
            before.close()
            before = None

            broker.stop()  # retained messages gone with it
            produce(cfg, [b0])  # to deliver once the broker is back
            broker.start()
            rec = MqttRecorder(host, port, [f"{p}#", f"{dp}/#"])
            want = {
                f"{p}available": b"online",
                state_a: b"ON",
                f"{p}cam-a/snapshot": jpeg,
                f"{p}cam-a/availability": b"online",
                f"{p}cam-b/loiter/state": b"ON",
            }
            assert rec.wait(lambda: all(payload(rec, t) == v for t, v in want.items()), 30), (
                {t: payload(rec, t) for t in want},
                log_path.read_text()[-3000:],
            )
            discovery = {
                f"{dp}/binary_sensor/vigil_cam-a/intrusion/config",
                f"{dp}/image/vigil_cam-a/snapshot/config",
                f"{dp}/binary_sensor/vigil_cam-b/loiter/config",
                f"{dp}/image/vigil_cam-b/snapshot/config",
            }
            assert rec.wait(lambda: discovery <= rec.topics(), 10), discovery - rec.topics()
            attrs = json.loads(payload(rec, f"{p}cam-b/loiter/attributes"))
            assert (attrs["id"], attrs["status"]) == (b0["id"], "started")

            proc.send_signal(signal.SIGKILL)  # no clean stop: the broker publishes the will
            proc.wait(10)
            assert rec.wait(lambda: payload(rec, f"{p}available") == b"offline", 15)
            late = MqttRecorder(host, port, [f"{p}available"])
            try:  # retained: what Home Assistant sees when it subscribes after the crash
                assert late.wait(lambda: late.get(f"{p}available"), 10)
                (gone,) = late.get(f"{p}available")
                assert gone.retain and gone.payload == b"offline"
            finally:
                late.close()
        finally:
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(10)
            for r in (before, rec):
                if r is not None:
                    r.close()
            cleanup(store.client, cfg.redis.key_prefix)
            store.client.close()
