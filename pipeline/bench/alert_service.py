"""``vigil alerts bench``: the alert service's throughput through real Kafka and Redis.

The rule engine alone is measured by ``pipeline.bench.rule_engine``; this one adds what a deployment pays:
consuming and JSON-decoding from Kafka, writing alerts to Redis, publishing them, checkpointing
and committing. Messages are produced first, then one service instance drains them; the clock
runs from its first processed message to its last, so group join time is not counted.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
import uuid

from alerts.config import parse_alerts_config
from alerts.service import AlertService
from pipeline.bench.rule_engine import bench_rules, make_messages, make_rules
from pipeline.common.kafka import ensure_topics, make_producer
from pipeline.config import VigilConfig, load_config, parse_config


def bench_service(
    cfg, n_messages: int, n_cameras: int, n_rules: int, timeout_s: float = 600
) -> dict:

    tag = uuid.uuid4().hex[:6]
    data = cfg.model_dump(mode="json")
    data["redis"]["url"] = cfg.redis.url.get_secret_value()
    if cfg.kafka.password is not None:
        data["kafka"]["password"] = cfg.kafka.password.get_secret_value()
    data["kafka"]["topics"] = {k: f"bench{tag}.{v}" for k, v in data["kafka"]["topics"].items()}
    data["redis"]["key_prefix"] = f"bench{tag}:"
    # synthetic messages from 2023 (rule_engine: fixed times, deterministic schedules): no age bound
    data["alerts"] = {
        "rules": make_rules(n_rules),
        "service": {"group_id": f"bench{tag}", "max_age_s": None},
    }
    bcfg = parse_config(data, "bench")
    ensure_topics(bcfg.kafka)

    msgs = make_messages(n_messages, n_cameras)
    producer = make_producer(bcfg.kafka, "bench", linger_ms=20)
    for m in msgs:
        producer.send(
            bcfg.kafka.topics.detections, key=m["camera_id"], value=json.dumps(m).encode()
        )
    producer.flush(timeout=120)
    producer.close()

    service = AlertService(bcfg, parse_alerts_config(bcfg.alerts))
    stop = threading.Event()
    thread = threading.Thread(target=service.run, args=(stop,), daemon=True)
    thread.start()
    first = last = None
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        done = service.stats["messages"]
        now = time.perf_counter()
        if done and first is None:
            first = (now, done)
        if done >= n_messages:
            last = (now, done)
            break
        time.sleep(0.05)
    stop.set()
    thread.join(timeout=30)
    store = service.store
    alerts = store.stream_len()
    for key in store.client.scan_iter(f"{bcfg.redis.key_prefix}*", count=1000):
        store.client.delete(key)
    if first is None or last is None:
        raise RuntimeError(
            f"the service processed {service.stats['messages']} of {n_messages} messages in {timeout_s}s"
        )
    elapsed = last[0] - first[0]
    return {
        "messages": n_messages,
        "cameras": n_cameras,
        "rules": n_rules,
        "seconds": round(elapsed, 3),
        "msgs_per_s": round((last[1] - first[1]) / elapsed, 1),
        "alert_events_in_redis": alerts,
    }


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="alert service throughput through real Kafka and Redis")
    p.add_argument("-c", "--config", default=None)
    p.add_argument("--messages", type=int, default=100_000)
    p.add_argument("--cameras", type=int, default=50)
    p.add_argument("--rules", type=int, default=10)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_bench)


def cmd_bench(args: argparse.Namespace) -> int:

    cfg = load_config(args.config) if args.config else VigilConfig()
    engine = bench_rules(min(args.messages, 50_000), args.cameras, args.rules)
    result = bench_service(cfg, args.messages, args.cameras, args.rules)
    result["engine_only_msgs_per_s"] = round(engine, 1)
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"alert service: {result['msgs_per_s']:,.0f} detection msgs/s "
            f"({result['messages']} msgs, {result['cameras']} cameras, {result['rules']} rules, "
            f"{result['alert_events_in_redis']} alert events written); "
            f"rule engine alone: {result['engine_only_msgs_per_s']:,.0f} msgs/s"
        )
    return 0
