"""Health check, topics and ACLs of the local 3-broker cluster (kafka_cluster.sh).

Who may write what (the issue's rule: a principal writes only its own topics):

| principal | writes | reads | groups |
|---|---|---|---|
| ingest | detections, cameras (the registry), motion (spells) | cameras, alerts (collection of alert frames) | <group prefix>ingest* |
| alerts | alerts, detections.dlq, rules (seeds the YAML's rules) | detections, rules (live rules) | <group prefix>alerts* |
| recorder | clips (the clip announcements) | cameras, alerts (holds, clips), motion (mode events) | <group prefix>record* (recordings.group_id, its "-alerts" and "-motion") |
| notifier | notify.dlq | alerts, clips, reviews | <group prefix>notify* (notify.group_id) |
| console | reviews (the operators' verdicts), cameras (the registry), rules (the live rules) | cameras, rules (its views), detections (a clip's boxes) | - (its readers assign partitions, no group) |
| viewer | - | alerts, clips, reviews | - (subscribe() assigns partitions, no group) |
| admin | super user: creates topics, grants ACLs | | |

The recorder reads camera URLs and writes files (the most exposed process): it writes nothing
but clip announcements, on a topic of their own that the notifier takes only clip messages from,
so a recorder's credentials cannot forge an alert, a detection or a camera. The console writes
the operators' ``reviewed`` messages on a topic of their own (reviews), which the notifier and
subscribers take only reviews from, so a console's credentials cannot forge an alert or a clip
either (it does write cameras and rules: that is what an administrator edits there).

Every principal may DESCRIBE the topics of the prefix (Vigil lists them before creating the
missing ones). Nothing else is allowed (allow.everyone.if.no.acl.found=false).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from kafka import KafkaAdminClient
from kafka.admin import (
    ACL,
    ACLOperation,
    ACLPermissionType,
    ACLResourcePatternType,
    ResourcePattern,
    ResourceType,
)

logging.disable(logging.CRITICAL)  # kafka-python logs every refused connection while we poll

TOPIC, GROUP = ResourceType.TOPIC, ResourceType.GROUP
LIT, PRE = ACLResourcePatternType.LITERAL, ACLResourcePatternType.PREFIXED
R, W, D = ACLOperation.READ, ACLOperation.WRITE, ACLOperation.DESCRIBE


def admin(bootstrap: str, password: str, timeout_ms: int = 10000) -> KafkaAdminClient:
    return KafkaAdminClient(
        bootstrap_servers=bootstrap.split(","),
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_plain_username="admin",
        sasl_plain_password=password,
        request_timeout_ms=timeout_ms,
        client_id="vigil-cluster-admin",
    )


def rules(
    topic_prefix: str, group_prefix: str
) -> list[tuple[str, ResourceType, str, object, object]]:
    t = topic_prefix
    out = []
    for who in ("ingest", "alerts", "recorder", "notifier", "console", "viewer"):
        out.append((who, TOPIC, t, PRE, D))
    out += [
        ("ingest", TOPIC, f"{t}detections", LIT, W),
        ("ingest", TOPIC, f"{t}cameras", LIT, W),
        ("ingest", TOPIC, f"{t}motion", LIT, W),
        ("ingest", TOPIC, f"{t}cameras", LIT, R),
        ("ingest", TOPIC, f"{t}alerts", LIT, R),
        ("ingest", GROUP, f"{group_prefix}ingest", PRE, R),
        ("alerts", TOPIC, f"{t}detections", LIT, R),
        ("alerts", TOPIC, f"{t}alerts", LIT, W),
        ("alerts", TOPIC, f"{t}detections.dlq", LIT, W),
        ("alerts", TOPIC, f"{t}rules", LIT, R),
        ("alerts", TOPIC, f"{t}rules", LIT, W),
        ("alerts", GROUP, f"{group_prefix}alerts", PRE, R),
        ("recorder", TOPIC, f"{t}cameras", LIT, R),
        ("recorder", TOPIC, f"{t}alerts", LIT, R),
        ("recorder", TOPIC, f"{t}motion", LIT, R),
        ("recorder", TOPIC, f"{t}clips", LIT, W),
        ("recorder", GROUP, f"{group_prefix}record", PRE, R),
        ("notifier", TOPIC, f"{t}alerts", LIT, R),
        ("notifier", TOPIC, f"{t}clips", LIT, R),
        ("notifier", TOPIC, f"{t}reviews", LIT, R),
        ("notifier", TOPIC, f"{t}notify.dlq", LIT, W),
        ("notifier", GROUP, f"{group_prefix}notify", PRE, R),
        ("console", TOPIC, f"{t}reviews", LIT, W),
        ("console", TOPIC, f"{t}cameras", LIT, W),
        ("console", TOPIC, f"{t}rules", LIT, W),
        ("console", TOPIC, f"{t}cameras", LIT, R),
        ("console", TOPIC, f"{t}rules", LIT, R),
        ("console", TOPIC, f"{t}detections", LIT, R),
        ("viewer", TOPIC, f"{t}alerts", LIT, R),
        ("viewer", TOPIC, f"{t}clips", LIT, R),
        ("viewer", TOPIC, f"{t}reviews", LIT, R),
    ]
    return out


def grant(client: KafkaAdminClient, topic_prefix: str, group_prefix: str) -> int:
    acls = [
        ACL(f"User:{who}", "*", op, ACLPermissionType.ALLOW, ResourcePattern(kind, name, pattern))
        for who, kind, name, pattern, op in rules(topic_prefix, group_prefix)
    ]
    result = client.create_acls(acls)
    failed = result.get("failed", [])
    if failed:
        raise SystemExit(f"kafka_acls: could not create {len(failed)} ACLs: {failed[:3]}")
    return len(acls)


def wait(bootstrap: str, password: str, nodes: list[int], timeout_s: float) -> None:
    """Every node of ``nodes`` (1-based) answers a metadata request as admin."""
    hosts = bootstrap.split(",")
    deadline = time.monotonic() + timeout_s
    last: object = None
    pending = set(nodes)
    while pending and time.monotonic() < deadline:
        for n in sorted(pending):
            try:
                client = admin(hosts[n - 1], password, 5000)
                try:
                    client.list_topics()
                    pending.discard(n)
                finally:
                    client.close()
            except Exception as exc:  # not listening yet, controller election, SASL not ready
                last = exc
        if pending:
            time.sleep(1.0)
    if pending:
        raise SystemExit(f"kafka_acls: nodes {sorted(pending)} not healthy in time ({last!r})")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--admin-password-file", required=True)
    p.add_argument("--wait", type=float, default=None, help="seconds to wait for --nodes")
    p.add_argument("--nodes", type=int, nargs="*", default=[])
    p.add_argument("--grant", action="store_true", help="create the ACLs of the table above")
    p.add_argument("--topic-prefix", default="vigil.")
    p.add_argument("--group-prefix", default="vigil-")
    args = p.parse_args(argv)
    password = Path(args.admin_password_file).read_text().strip()
    if args.wait is not None:
        wait(args.bootstrap, password, args.nodes, args.wait)
    if args.grant:
        client = admin(args.bootstrap, password)
        try:
            n = grant(client, args.topic_prefix, args.group_prefix)
        finally:
            client.close()
        print(
            f"kafka_acls: {n} ACLs for topics {args.topic_prefix}* and groups {args.group_prefix}*"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
