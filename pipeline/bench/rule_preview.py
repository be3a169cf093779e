"""Benchmark of the rule preview (alerts/preview.py) against a real Kafka broker.

Produces one hour of detection messages (default: 4 cameras at 5 fps, 72,000 messages) into a
fresh topic, timestamped over the last hour like the ingest worker does (record timestamp =
capture time), then times ``preview_rule`` over that hour with a zone rule, on all cameras and on
one. The topic is deleted afterwards (``--keep`` keeps it); nothing else on the broker or in Redis
is touched (Redis is only read, under a key prefix of this run).

    vigil alerts bench-preview                        # broker at 127.0.0.1:9092
    vigil alerts bench-preview --bootstrap host:9092 --cameras 8 --minutes 30

The scene is shaped like a lobby: people arrive now and then (about four a minute per camera),
walk across the picture in 10 to 30 s and some pass through the zone; a parked car and a bench
are always detected; now and then a low-confidence false detection.
"""

from __future__ import annotations

import argparse
import logging
import random
import time
import uuid
from dataclasses import dataclass
from typing import Any

from kafka.admin import NewTopic

from alerts.config import AlertsConfig
from alerts.preview import PreviewResult, preview_rule
from alerts.rules import parse_rule
from pipeline.common.kafka import KafkaConfig, KafkaTopics, admin_client, make_producer
from pipeline.common.redis import RedisConfig

ZONE = [[0.4, 0.75], [0.6, 0.75], [0.6, 0.95], [0.4, 0.95]]  # a doorway, near the camera
RULE = {
    "id": "bench-lobby",
    "type": "zone_intrusion",
    "cameras": "*",
    "zone": ZONE,
    "classes": ["person"],
    "min_confidence": 0.4,
    "min_frames": 3,
    "severity": "high",
}


@dataclass
class Settings:
    """What ``preview_rule`` needs of the root config."""

    kafka: KafkaConfig
    redis: RedisConfig
    alerts: AlertsConfig


def scene(
    n_cameras: int, fps: float, seconds: float, t0: float, seed: int = 11
) -> list[tuple[str, dict[str, Any]]]:
    """(camera, detection.v1 message) in capture order, cameras interleaved frame by frame."""
    rng = random.Random(seed)
    cams = [f"cam-{i}" for i in range(n_cameras)]
    walkers: dict[str, list[list[float]]] = {c: [] for c in cams}  # x, y, vx, vy, track id
    next_id = dict.fromkeys(cams, 1)
    epoch = int(t0 * 1000)
    dt = 1.0 / fps
    out = []
    for seq in range(int(seconds * fps)):
        ts = t0 + seq * dt
        for cam in cams:
            ws = walkers[cam]
            if rng.random() < dt / 15.0:  # about four arrivals a minute
                left = rng.random() < 0.5
                speed = rng.uniform(1 / 30, 1 / 10)  # across the picture in 10-30 s
                ws.append(
                    [
                        0.0 if left else 0.95,
                        rng.uniform(0.3, 0.95),
                        (speed if left else -speed) * dt,
                        rng.uniform(-0.01, 0.01) * dt,
                        float(next_id[cam]),
                    ]
                )
                next_id[cam] += 1
            dets = [
                _det(2, "car", 0.88, [0.02, 0.55, 0.25, 0.8], 10_000),
                _det(56, "bench", 0.61, [0.7, 0.7, 0.9, 0.85], 10_001),
            ]
            for w in ws:
                w[0] += w[2]
                w[1] = min(0.95, max(0.25, w[1] + w[3]))
            ws = walkers[cam] = [w for w in ws if -0.06 < w[0] < 0.95]  # still in the picture
            for x, y, _, _, tid in ws:
                box = [max(0.0, x), y - 0.22, min(1.0, x + 0.06), y]
                dets.append(_det(0, "person", round(rng.uniform(0.45, 0.95), 3), box, int(tid)))
            if rng.random() < 0.02:  # a flicker: a low-confidence false detection
                x, y = rng.uniform(0, 0.9), rng.uniform(0.2, 0.9)
                dets.append(_det(0, "person", 0.3, [x, y - 0.1, x + 0.05, y], None))
            out.append(
                (
                    cam,
                    {
                        "schema_version": 1,
                        "camera_id": cam,
                        "seq": seq,
                        "epoch": epoch,
                        "capture_ts": round(ts, 6),
                        "publish_ts": round(ts + 0.06, 6),
                        "frame": {"width": 1280, "height": 720},
                        "model": {"name": "yolov5n", "version": "bench"},
                        "worker_id": "bench",
                        "inference_ms": 21.5,
                        "detections": dets,
                    },
                )
            )
    return out


def _det(
    class_id: int, label: str, conf: float, box: list[float], track_id: int | None
) -> dict[str, Any]:
    d: dict[str, Any] = {
        "class_id": class_id,
        "label": label,
        "confidence": conf,
        "box": [round(v, 5) for v in box],
    }
    if track_id is not None:
        d["track_id"] = track_id
    return d


def produce(kcfg: KafkaConfig, msgs: list[tuple[str, dict[str, Any]]]) -> float:
    """Send every message with its capture time as the record timestamp; returns seconds."""
    producer = make_producer(kcfg, "bench-preview", linger_ms=20, batch_size=256 * 1024)
    t = time.perf_counter()
    try:
        topic = kcfg.topics.detections
        for cam, m in msgs:
            producer.send(topic, key=cam, value=m, timestamp_ms=int(m["capture_ts"] * 1000))
        producer.flush(timeout=300)
    finally:
        producer.close(timeout=10)
    return time.perf_counter() - t


def _line(what: str, res: PreviewResult) -> str:
    return (
        f"{what}: {res.seconds:.2f} s, {res.messages:,} messages read "
        f"({res.messages / res.seconds:,.0f} msgs/s), {res.frames:,} frames to the engine, "
        f"{len(res.alerts)} alert(s){' (truncated)' if res.truncated else ''}, "
        f"{res.skipped} skipped"
    )


def register(sub: argparse._SubParsersAction) -> None:
    """``vigil alerts bench-preview`` (registered by ``pipeline.cli.alerts``, by name)."""
    p = sub.add_parser("bench-preview", help="rule preview over an hour of detections in Kafka")
    p.add_argument("--bootstrap", default="127.0.0.1:9092")
    p.add_argument("--redis", default="redis://127.0.0.1:6379/15")
    p.add_argument("--cameras", type=int, default=4)
    p.add_argument("--fps", type=float, default=5.0)
    p.add_argument("--minutes", type=float, default=60.0)
    p.add_argument("--partitions", type=int, default=6)
    p.add_argument("--runs", type=int, default=3, help="timed previews of the whole range")
    p.add_argument("--keep", action="store_true", help="keep the topic afterwards")
    p.set_defaults(func=cmd_bench_preview)


def cmd_bench_preview(args: argparse.Namespace) -> int:
    logging.getLogger().setLevel(logging.DEBUG if args.verbose else logging.WARNING)

    tag = uuid.uuid4().hex[:8]
    kcfg = KafkaConfig(
        bootstrap_servers=args.bootstrap,
        topics=KafkaTopics(detections=f"bench-preview-{tag}.detections"),
        detections_partitions=args.partitions,
    )
    settings = Settings(
        kafka=kcfg,
        redis=RedisConfig(url=args.redis, key_prefix=f"bench-preview-{tag}:"),
        alerts=AlertsConfig(),
    )
    seconds = args.minutes * 60.0
    now = time.time()
    t0 = now - seconds
    msgs = scene(args.cameras, args.fps, seconds, t0)
    admin = admin_client(kcfg)
    topic = kcfg.topics.detections
    try:
        admin.create_topics([NewTopic(topic, args.partitions, 1)], timeout_ms=15_000)
        took = produce(kcfg, msgs)
        print(
            f"produced {len(msgs):,} messages ({args.cameras} cameras x {args.fps:g} fps x "
            f"{args.minutes:g} min, {sum(len(m['detections']) for _, m in msgs) / len(msgs):.1f} "
            f"detections a frame) to {topic} ({args.partitions} partitions) in {took:.1f} s"
        )
        rule = parse_rule(RULE)
        for i in range(args.runs):
            res = preview_rule(settings, rule, t0, now + 1, timeout_s=300)
            print(_line(f"preview, all cameras, run {i + 1}", res))
        res = preview_rule(settings, rule, t0, now + 1, cameras=["cam-0"], timeout_s=300)
        print(_line("preview, one camera (others skipped by key)", res))
        res = preview_rule(settings, rule, now - 600, now + 1, timeout_s=300)
        print(_line("preview, last 10 minutes", res))
    finally:
        if not args.keep:
            try:
                admin.delete_topics([topic], timeout_ms=15_000)
            except Exception as e:  # the numbers are printed already
                print(f"could not delete {topic}: {e}")
        admin.close()
    return 0
