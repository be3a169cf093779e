"""The notifier's numbers for BENCHMARKS.md (issue 13), against the local Kafka, Redis and
mosquitto (``bash deploy/local/services.sh up``):

1. ``alert-service``: the alert service's own rate of alert events (``vigil alerts bench``'s
   measurement, ``pipeline.bench.alert_service.bench_service``): the target for (2);
2. ``throughput``: deliveries per second of one notifier process (``vigil notify serve`` in a
   subprocess) draining a backlog of alert events to a local webhook receiver (a separate
   process), and to mosquitto; with the notifier's CPU seconds per delivery;
3. ``latency``: Redis write -> webhook receipt and -> MQTT receipt, p50/p99, under demo-like
   load: cameras at 5 frames/s in real time (frames stored in Redis like the ingest worker
   does, so snapshots are rendered), a person entering and leaving a zone every 4 s per camera,
   a real alert service (``vigil alerts serve``) and notifier (``vigil notify serve``), each in
   its own process. Redis write = the alert hash's ``written_<status>`` (Redis ``TIME``).

    python3 -m pipeline.bench.notify                      # all three, a summary
    python3 -m pipeline.bench.notify --only throughput --events 20000 --json

The receiver, the MQTT counter and the subprocesses are in :mod:`pipeline.bench.notify_rig`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.bench.measure import percentile
from pipeline.bench.notify_rig import (
    SECRET,
    ZONE,
    MqttCounter,
    Receiver,
    alert_events,
    bench_config,
    cleanup,
    cpu_seconds,
    mqtt_url,
    stop,
    vigil,
    write_config,
)
from pipeline.common.kafka import ensure_topics, make_producer
from pipeline.config import VigilConfig, load_config, parse_config

# -- 1. the alert service's rate -----------------------------------------------------------------


def bench_alert_service(base: VigilConfig, messages: int) -> dict:
    from pipeline.bench.alert_service import bench_service  # noqa: PLC0415 (imports the service)

    r = bench_service(base, messages, 50, 10)
    r["alert_events_per_s"] = round(r["alert_events_in_redis"] / r["seconds"], 1)
    return r


# -- 2. deliveries per second --------------------------------------------------------------------


def bench_throughput(
    base: VigilConfig, tmp: Path, events: int, kind: str, concurrency: int
) -> dict:
    tag = uuid.uuid4().hex[:6]
    host, port = mqtt_url()
    rx = Receiver(tmp) if kind == "webhook" else None
    mq = MqttCounter(host, port, f"nb{tag}/alerts") if kind == "mqtt" else None
    if rx is not None:
        sink = {
            "id": "bench",
            "type": "webhook",
            "url": rx.url,
            "secret": SECRET,
            "concurrency": concurrency,
            "queue_size": 10_000,
        }
    else:
        sink = {
            "id": "bench",
            "type": "mqtt",
            "url": f"mqtt://{host}:{port}",
            "prefix": f"nb{tag}/",
            "discovery_prefix": f"nb{tag}-ha",
            "queue_size": 10_000,
        }
    data = bench_config(base, tag, {"sinks": [sink]})
    cfg = parse_config(data, "bench")
    ensure_topics(cfg.kafka)
    producer = make_producer(cfg.kafka, "bench", linger_ms=20)
    for a in alert_events(events, 50):
        producer.send(cfg.kafka.topics.alerts, key=a["camera_id"], value=json.dumps(a).encode())
    producer.flush(timeout=120)
    producer.close()
    log = tmp / f"notify-{kind}-{tag}.log"
    proc = vigil("notify", "serve", "-c", str(write_config(tmp, data)), log=log)
    try:
        deadline = time.monotonic() + 600
        count, cpu0 = 0, None
        while time.monotonic() < deadline:
            count = rx.count() if rx is not None else len(mq.got)
            if count and cpu0 is None:
                cpu0 = cpu_seconds(proc.pid)
            if count >= events:
                break
            if proc.poll() is not None:
                raise RuntimeError(f"notifier exited: {log.read_text()[-2000:]}")
            time.sleep(0.5)
        cpu1 = cpu_seconds(proc.pid)
    finally:
        stop(proc)
    times = sorted(t for t, _ in (rx.records() if rx is not None else mq.got))
    if rx is not None:
        rx.close()
    if mq is not None:
        mq.close()
        _clear_retained(host, port, f"nb{tag}/#", f"nb{tag}-ha/#")
    cleanup(cfg)
    if len(times) < events:
        raise RuntimeError(f"only {len(times)} of {events} deliveries arrived")
    span = times[-1] - times[0]
    return {
        "sink": kind,
        "concurrency": concurrency if kind == "webhook" else 1,
        "events": events,
        "received": len(times),
        "seconds": round(span, 3),
        "deliveries_per_s": round((len(times) - 1) / span, 1),
        "notifier_cpu_ms_per_delivery": round((cpu1 - (cpu0 or cpu1)) * 1000 / events, 3),
    }


def _clear_retained(host: str, port: int, *patterns: str) -> None:
    """Delete the retained messages a bench left (discovery, states, snapshots)."""
    import paho.mqtt.client as mqtt  # noqa: PLC0415
    from paho.mqtt.enums import CallbackAPIVersion  # noqa: PLC0415

    retained: set[str] = set()
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-clear-{os.getpid()}")
    c.on_connect = lambda cl, *_: cl.subscribe([(p, 0) for p in patterns])
    c.on_message = lambda _c, _u, m: retained.add(m.topic) if m.retain and m.payload else None
    c.connect(host, port, keepalive=30)
    c.loop_start()
    time.sleep(2.0)
    for t in retained:
        c.publish(t, b"", qos=1, retain=True).wait_for_publish(5)
    c.disconnect()
    c.loop_stop()


# -- 3. latency under demo-like load -------------------------------------------------------------


def bench_latency(base: VigilConfig, tmp: Path, seconds: float, cameras: int) -> dict:
    import cv2  # noqa: PLC0415 (only the frames of this section)

    from alerts.store import AlertStore  # noqa: PLC0415

    tag = uuid.uuid4().hex[:6]
    host, port = mqtt_url()
    rx = Receiver(tmp)
    mq = MqttCounter(host, port, f"nb{tag}/alerts")
    cams = [f"cam{i}" for i in range(cameras)]
    rules = [
        {
            "id": f"{c}-intrusion",
            "type": "zone_intrusion",
            "cameras": [c],
            "zone": ZONE,
            "classes": ["person"],
            "min_frames": 3,
            "clear_after_s": 1.0,
            "cooldown_s": 0,
            "severity": "high",
        }
        for c in cams
    ]
    sinks = [
        {"id": "hook", "type": "webhook", "url": rx.url, "secret": SECRET},
        {
            "id": "home",
            "type": "mqtt",
            "url": f"mqtt://{host}:{port}",
            "prefix": f"nb{tag}/",
            "discovery_prefix": f"nb{tag}-ha",
        },
    ]
    data = bench_config(
        base,
        tag,
        {"sinks": sinks, "auto_offset_reset": "latest"},
        {"rules": rules, "service": {"group_id": f"nb{tag}-alerts", "auto_offset_reset": "latest"}},
    )
    cfg = parse_config(data, "bench")
    ensure_topics(cfg.kafka)
    path = write_config(tmp, data)
    alerts_log, notify_log = tmp / f"alerts-{tag}.log", tmp / f"notify-{tag}.log"
    service = vigil("alerts", "serve", "-c", str(path), log=alerts_log)
    notifier = vigil("notify", "serve", "-c", str(path), log=notify_log)
    store = AlertStore(cfg.redis)
    rng = np.random.default_rng(3)
    frame = cv2.imencode(".jpg", rng.integers(0, 255, (360, 640, 3), dtype=np.uint8), [1, 80])[1]
    jpeg = frame.tobytes()
    producer = make_producer(cfg.kafka, "bench-detections")
    time.sleep(8.0)  # both groups joined (their logs say so) before the first frame
    epoch = int(time.time() * 1000)
    t_start = time.monotonic()
    seq = 0
    try:
        while time.monotonic() - t_start < seconds:
            now = time.time()
            pipe = store.client.pipeline(transaction=False)
            for ci, cam in enumerate(cams):
                inside = (seq + ci * 5) % 20 < 8  # 8 frames in the zone, 12 out: every 4 s
                box = [0.1, 0.2, 0.3, 0.8] if inside else [0.7, 0.2, 0.9, 0.8]
                msg = {
                    "schema_version": 1,
                    "camera_id": cam,
                    "seq": seq,
                    "epoch": epoch + ci,
                    "capture_ts": round(now, 6),
                    "publish_ts": round(now, 6),
                    "frame": {"width": 640, "height": 360},
                    "model": {"name": "yolov5n", "version": "bench"},
                    "worker_id": "bench",
                    "inference_ms": 0.0,
                    "detections": [
                        {
                            "class_id": 0,
                            "label": "person",
                            "confidence": 0.9,
                            "box": box,
                            "track_id": 1 + (seq + ci * 5) // 20,
                        }
                    ],
                }
                pipe.set(store.frame_key(cam, epoch + ci, seq), jpeg, ex=120)
                producer.send(cfg.kafka.topics.detections, key=cam, value=msg)
            pipe.execute()
            producer.flush(timeout=10)
            seq += 1
            time.sleep(max(0.0, t_start + seq * 0.2 - time.monotonic()))
        time.sleep(5.0)  # the last events' deliveries
    finally:
        producer.close(timeout=10)
        stop(notifier)
        stop(service)
    hooks = rx.records()
    rx.close()
    mqtt_got = list(mq.got)
    mq.close()
    written: dict[tuple[str, str], float] = {}

    def write_time(aid: str, status: str) -> float | None:
        if (aid, status) not in written:
            h = store.get_alert(aid) or {}
            if h.get(f"written_{status}") is not None:
                written[(aid, status)] = float(h[f"written_{status}"])
        return written.get((aid, status))

    hook_ms, mqtt_ms = [], []
    for t, key in hooks:
        aid, status = key.split(":")[:2]
        w = write_time(aid, status)
        if w is not None:
            hook_ms.append((t - w) * 1000)
    for t, payload in mqtt_got:
        e = json.loads(payload)
        w = write_time(e["id"], e["status"])
        if w is not None:
            mqtt_ms.append((t - w) * 1000)
    stored = store.stream_len()
    _clear_retained(host, port, f"nb{tag}/#", f"nb{tag}-ha/#")
    cleanup(cfg)

    def stats(v: list[float]) -> dict:
        return {
            "events": len(v),
            "p50_ms": round(percentile(v, 50) or 0, 1),
            "p99_ms": round(percentile(v, 99) or 0, 1),
            "max_ms": round(max(v), 1) if v else None,
        }

    return {
        "cameras": cameras,
        "fps_per_camera": 5,
        "seconds": seconds,
        "alert_events_in_redis": stored,
        "redis_to_webhook": stats(hook_ms),
        "redis_to_mqtt": stats(mqtt_ms),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-c", "--config", default=None, help="vigil.yaml (Kafka/Redis); default local")
    ap.add_argument(
        "--only", default="alert-service,throughput,mqtt,latency", help="comma-separated sections"
    )
    ap.add_argument("--events", type=int, default=20_000, help="alert events for throughput")
    ap.add_argument("--alert-messages", type=int, default=50_000, help="for the alert service")
    ap.add_argument("--concurrency", type=int, default=4, help="webhook sink concurrency")
    ap.add_argument("--latency-seconds", type=float, default=60.0)
    ap.add_argument("--cameras", type=int, default=4, help="cameras of the latency run")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    import logging  # noqa: PLC0415

    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("kafka").setLevel(logging.CRITICAL)
    base = load_config(args.config) if args.config else VigilConfig()
    only = set(args.only.split(","))
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="notify-bench-") as d:
        tmp = Path(d)
        if "alert-service" in only:
            out["alert_service"] = bench_alert_service(base, args.alert_messages)
            print(json.dumps({"alert_service": out["alert_service"]}), file=sys.stderr)
        if "throughput" in only:
            out["webhook"] = bench_throughput(base, tmp, args.events, "webhook", args.concurrency)
            print(json.dumps({"webhook": out["webhook"]}), file=sys.stderr)
        if "mqtt" in only:
            out["mqtt"] = bench_throughput(base, tmp, args.events, "mqtt", 1)
            print(json.dumps({"mqtt": out["mqtt"]}), file=sys.stderr)
        if "latency" in only:
            out["latency"] = bench_latency(base, tmp, args.latency_seconds, args.cameras)
    if args.json:
        print(json.dumps(out))
        return 0
    if "alert_service" in out:
        a = out["alert_service"]
        print(
            f"alert service: {a['alert_events_per_s']:,.0f} alert events/s "
            f"({a['alert_events_in_redis']} events from {a['messages']} detection msgs in "
            f"{a['seconds']} s, {a['msgs_per_s']:,.0f} msgs/s)"
        )
    for kind in ("webhook", "mqtt"):
        if kind in out:
            r = out[kind]
            print(
                f"notifier -> {kind}: {r['deliveries_per_s']:,.0f} deliveries/s per process "
                f"({r['events']} events in {r['seconds']} s, concurrency {r['concurrency']}, "
                f"{r['notifier_cpu_ms_per_delivery']} ms notifier CPU per delivery)"
            )
    if "latency" in out:
        r = out["latency"]
        for k in ("redis_to_webhook", "redis_to_mqtt"):
            s = r[k]
            print(
                f"{k.replace('_', ' ')}: p50 {s['p50_ms']} ms, p99 {s['p99_ms']} ms, max "
                f"{s['max_ms']} ms over {s['events']} events ({r['cameras']} cameras at 5 fps, "
                f"{r['seconds']:.0f} s)"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
