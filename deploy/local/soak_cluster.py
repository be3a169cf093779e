"""Soak on the 3-broker cluster (not in CI): N camera-sim cameras, one `vigil ingest` and one
`vigil alerts serve` process for --minutes, a broker SIGKILLed and restarted every
--restart-every minutes. Samples every --interval seconds: worker RSS, Redis memory, alert
consumer lag (Redis checkpoints vs the end of vigil.detections); at the end the per-camera gaps
between consecutive detection messages around each broker restart. Prints JSON and a
BENCHMARKS.md row.

    make infra-up KAFKA_NODES=3          # or: bash deploy/local/kafka_cluster.sh up
    python3 deploy/local/soak_cluster.py --cameras 8 --minutes 30 --restart-every 10
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

import redis
import yaml
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition

from alerts.store import AlertStore
from pipeline.camera_sim import CameraSim
from pipeline.cameras.registry import put_cameras
from pipeline.cameras.spec import CameraSpec
from pipeline.common.assets import footage
from pipeline.common.kafka import ensure_topics
from pipeline.config import parse_config

REPO = Path(__file__).resolve().parents[2]
CLUSTER = REPO / "deploy" / "local" / "kafka_cluster.sh"
FILES = [
    "classroom.mp4",
    "people-detection.mp4",
    "one-by-one-person-detection.mp4",
    "car-detection.mp4",
    "person-bicycle-car-detection.mp4",
    "face-demographics-walking.mp4",
    "bottle-detection.mp4",
]
WHOLE = [[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]]


def config(state: Path, user: str, port: int, redis_url: str, fps: float) -> dict:
    return {
        "kafka": {
            "bootstrap_servers": ",".join(f"127.0.0.1:{port + i}" for i in range(3)),
            "security_protocol": "SASL_PLAINTEXT",
            "sasl_mechanism": "SCRAM-SHA-512",
            "username": user,
            "password_file": str(state / "kafka-cluster" / "secrets" / user),
            "replication_factor": 3,
        },
        "redis": {"url": redis_url, "key_prefix": "soak:"},
        "ingest": {"default_fps": fps},
        "alerts": {
            "rules": [
                {"id": "anyone", "type": "zone_intrusion", "zone": WHOLE, "classes": ["person"]},
                {"id": "crowd", "type": "crowding", "zone": WHOLE, "min_count": 3},
            ]
        },
    }


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def kafka_kw(state: Path, port: int) -> dict:
    return {
        "bootstrap_servers": [f"127.0.0.1:{port + i}" for i in range(3)],
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "admin",
        "sasl_plain_password": (state / "kafka-cluster" / "secrets" / "admin").read_text().strip(),
    }


def lag(state: Path, port: int, store: AlertStore, topic: str) -> int:
    consumer = KafkaConsumer(**kafka_kw(state, port))
    try:
        tps = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        total = 0
        for tp, end in consumer.end_offsets(tps).items():
            cp = store.get_checkpoint("vigil-alerts", topic, tp.partition)
            total += max(0, end - (cp["offset"] if cp else 0))  # checkpoints may be newer
        return total
    finally:
        consumer.close()


def leader_of_most(state: Path, port: int, topic: str) -> int:
    admin = KafkaAdminClient(**kafka_kw(state, port))
    try:
        [desc] = admin.describe_topics([topic])
    finally:
        admin.close()
    return Counter(p.get("leader_id", p.get("leader")) for p in desc["partitions"]).most_common(1)[
        0
    ][0]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cameras", type=int, default=8)
    ap.add_argument("--fps", type=float, default=2.0)
    ap.add_argument("--minutes", type=float, default=30)
    ap.add_argument("--restart-every", type=float, default=10, help="minutes")
    ap.add_argument("--interval", type=float, default=10, help="seconds between samples")
    ap.add_argument(
        "--port", type=int, default=int(os.environ.get("VIGIL_KAFKA_CLUSTER_PORT", 19092))
    )
    ap.add_argument("--redis", default="redis://127.0.0.1:6379/14")
    args = ap.parse_args()
    state = Path(os.environ.get("VIGIL_STATE", REPO / ".vigil"))
    env = {**os.environ, "VIGIL_STATE": str(state)}
    tmp = Path(tempfile.mkdtemp(prefix="vigil-soak-"))
    paths = {}
    for user in ("ingest", "alerts", "admin"):
        paths[user] = tmp / f"{user}.yaml"
        paths[user].write_text(yaml.safe_dump(config(state, user, args.port, args.redis, args.fps)))
    admin_cfg = parse_config(config(state, "admin", args.port, args.redis, args.fps), "soak")
    ensure_topics(admin_cfg.kafka)
    files = {f"cam{i}": str(footage(FILES[i % len(FILES)])) for i in range(args.cameras)}
    store = AlertStore(admin_cfg.redis)
    rclient = redis.Redis.from_url(args.redis)
    topic = admin_cfg.kafka.topics.detections
    samples, restarts = [], []
    with CameraSim(files, port=0) as sim:
        ingest_cfg = parse_config(config(state, "ingest", args.port, args.redis, args.fps), "soak")
        put_cameras(ingest_cfg.kafka, [CameraSpec(id=c, url=u) for c, u in sim.urls.items()])
        py = sys.executable
        worker = subprocess.Popen(
            [py, "-m", "pipeline.cli", "ingest", "-c", str(paths["ingest"])],
            cwd=REPO,
            stdout=open(tmp / "ingest.log", "wb"),  # noqa: SIM115 (open while it runs)
            stderr=subprocess.STDOUT,
        )
        service = subprocess.Popen(
            [py, "-m", "pipeline.cli", "alerts", "serve", "-c", str(paths["alerts"])],
            cwd=REPO,
            stdout=open(tmp / "alerts.log", "wb"),  # noqa: SIM115 (open while it runs)
            stderr=subprocess.STDOUT,
        )
        t0 = time.time()
        next_restart = t0 + args.restart_every * 60
        try:
            while time.time() - t0 < args.minutes * 60:
                time.sleep(args.interval)
                if time.time() >= next_restart:
                    node = leader_of_most(state, args.port, topic)
                    at = time.time()
                    subprocess.run(
                        ["bash", str(CLUSTER), "kill-node", str(node)], env=env, check=True
                    )
                    time.sleep(10)
                    subprocess.run(
                        ["bash", str(CLUSTER), "start-node", str(node)], env=env, check=True
                    )
                    restarts.append({"node": node, "at": at, "t_min": round((at - t0) / 60, 1)})
                    next_restart += args.restart_every * 60
                samples.append(
                    {
                        "t_s": round(time.time() - t0),
                        "worker_rss_mb": round(rss_mb(worker.pid), 1),
                        "redis_used_mb": round(rclient.info("memory")["used_memory"] / 2**20, 1),
                        "alert_lag": lag(state, args.port, store, topic),
                    }
                )
                print(json.dumps(samples[-1]), flush=True)
        finally:
            for p in (worker, service):
                p.send_signal(signal.SIGTERM)
            for p in (worker, service):
                p.wait(60)
    consumer = KafkaConsumer(
        **kafka_kw(state, args.port),
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=5000,
    )
    consumer.subscribe([topic])
    by_cam = defaultdict(list)
    for rec in consumer:
        v = json.loads(rec.value)
        by_cam[v["camera_id"]].append(v["capture_ts"])
    consumer.close()
    gaps = {}
    for r in restarts:
        per = {}
        for cam, ts in by_cam.items():
            ts.sort()
            around = [
                b - a
                for a, b in zip(ts, ts[1:], strict=False)
                if a <= r["at"] + 30 and b >= r["at"]
            ]
            per[cam] = round(max(around, default=0.0), 2)
        gaps[f"restart at {r['t_min']} min (node {r['node']})"] = per
    rss = [s["worker_rss_mb"] for s in samples]
    result = {
        "cameras": args.cameras,
        "fps": args.fps,
        "minutes": args.minutes,
        "restarts": restarts,
        "worker_rss_mb": {"first": rss[0], "last": rss[-1], "max": max(rss)} if rss else None,
        "redis_used_mb_last": samples[-1]["redis_used_mb"] if samples else None,
        "alert_lag_max": max((s["alert_lag"] for s in samples), default=None),
        "gaps_s": gaps,
        "samples": samples,
        "logs": str(tmp),
    }
    print(json.dumps(result, indent=1))
    for key in rclient.scan_iter(match="soak:*", count=1000):
        rclient.unlink(key)
    return 0


if __name__ == "__main__":
    sys.exit(main())
