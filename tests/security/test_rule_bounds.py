"""An operator (or anyone who can write to the rules topic) saving one large zone (issue 22,
finding 4). The zone's self-intersection check compares every edge with every other; 5,000 points
took longer than the alert service's start-up read of the rules topic, which then timed out and
was retried forever: the service never started. Zones are bounded (256 points, said in the error
that names the rule and the field) and the start-up read validates after reading, each rule's
versions once, so the other rules load and the service starts."""

from __future__ import annotations

import json
import math
import random
import time

import pytest
from prometheus_client import REGISTRY

from alerts.errors import RulesError
from alerts.geometry import segments_intersect, self_intersects
from alerts.rules_topic import validate_rule
from alerts.store import AlertStore
from pipeline.common.kafka import ensure_topics, make_producer
from pipeline.config import parse_config
from tests.support.alert_service import Running, base_dict
from tests.support.kafka import produce
from tests.support.messages import IN_BOX, ZONE, det_message
from tests.support.redis import cleanup, stream_events
from tests.support.waiting import wait_for

INTRUSION = {
    "id": "intrusion",
    "type": "zone_intrusion",
    "zone": ZONE,
    "classes": ["person"],
    "min_frames": 2,
    "clear_after_s": 1.0,
    "cooldown_s": 0,
}


def circle(n: int) -> list[list[float]]:
    """A convex zone of ``n`` points: valid, and the slowest case of the check (no early exit)."""
    return [
        [0.5 + 0.4 * math.cos(2 * math.pi * i / n), 0.5 + 0.4 * math.sin(2 * math.pi * i / n)]
        for i in range(n)
    ]


def test_a_zone_has_at_most_256_points_and_the_error_says_so(monkeypatch) -> None:
    """A zone over the bound is refused on its length alone, before any point is looked at (a
    huge list costs nothing); the largest allowed one is checked point by point, then once for
    crossing edges, vectorised: not one Python call per pair of edges (32,000 pairs at 256
    points). Counted, not timed: the machine is shared."""
    from alerts import geometry
    from alerts.rules import config as rules_config

    points, checks, pairs = [], [], []
    real_pair = geometry.segments_intersect
    monkeypatch.setattr(geometry, "segments_intersect", lambda *a: pairs.append(a) or real_pair(*a))
    real_point, real_intersects = rules_config._check_point, rules_config.self_intersects

    def check_point(p, what):
        points.append(p)
        return real_point(p, what)

    def intersects(zone):
        checks.append(len(zone))
        return real_intersects(zone)

    monkeypatch.setattr(rules_config, "_check_point", check_point)
    monkeypatch.setattr(rules_config, "self_intersects", intersects)
    with pytest.raises(RulesError) as err:
        validate_rule({**INTRUSION, "id": "big-zone", "zone": circle(2000)})
    assert str(err.value) == (
        "rule 'big-zone': zone: 2000 points; at most 256 are allowed (simplify the polygon)"
    )
    assert (len(points), checks) == (0, [])
    assert validate_rule({**INTRUSION, "zone": circle(256)}).zone is not None
    assert (len(points), checks, len(pairs)) == (256, [256], 0)


def _reference_self_intersects(points: list) -> bool:
    """The pair-by-pair check the vectorised one replaced."""
    n = len(points)
    edges = [(points[i], points[(i + 1) % n]) for i in range(n)]
    for i in range(n):
        for j in range(i + 1, n):
            if j == i + 1 or (i == 0 and j == n - 1):
                continue
            if segments_intersect(*edges[i], *edges[j]):
                return True
    return False


def test_vectorised_self_intersection_check_agrees_with_the_pairwise_one() -> None:
    rng = random.Random(22)
    for _ in range(3000):
        n = rng.randint(3, 9)
        if rng.random() < 0.5:  # on a grid: collinear and touching edges, shared points
            pts = [(rng.randint(0, 4) / 4, rng.randint(0, 4) / 4) for _ in range(n)]
        else:
            pts = [(rng.random(), rng.random()) for _ in range(n)]
        assert self_intersects(pts) == _reference_self_intersects(pts), pts


@pytest.mark.integration
def test_the_service_starts_with_a_huge_zone_and_a_flood_of_costly_rules(kafka_bootstrap) -> None:
    d = base_dict(kafka_bootstrap, rules=[])
    d["kafka"]["topics"]["rules"] = d["kafka"]["topics"]["detections"].replace(
        ".detections", ".rules"
    )
    cfg = parse_config(d)
    ensure_topics(cfg.kafka)
    store = AlertStore(cfg.redis)
    costly = json.dumps({**INTRUSION, "id": "costly", "zone": circle(256)}).encode()
    records = [
        (b"intrusion", json.dumps(INTRUSION).encode()),
        # one zone of 5,000 points: more than the 15 s start-up read could validate
        (b"huge", json.dumps({**INTRUSION, "id": "huge", "zone": circle(5000)}).encode()),
        *[(b"costly", costly)] * 200,  # the same valid 256-point rule, saved 200 times
    ]
    producer = make_producer(cfg.kafka, "test-rules", compression_type="gzip")
    try:
        for key, value in records:
            producer.send(cfg.kafka.topics.rules, key=key, value=value)
        producer.flush(timeout=30)
    finally:
        producer.close(timeout=10)
    before = REGISTRY.get_sample_value(
        "vigil_records_skipped_total", {"reader": "rules", "reason": "invalid"}
    )
    now = time.time()
    epoch = int((now - 30) * 1000)
    person = [{"class_id": 0, "label": "person", "confidence": 0.9, "box": IN_BOX}]
    produce(
        cfg,
        [("door", det_message("door", epoch, s, now - 10 + s * 0.2, person)) for s in range(4)],
    )
    service = Running(cfg)
    try:
        assert wait_for(lambda: store.stream_len() >= 1, 60), stream_events(store)
        assert {r.id for r in service.service.acfg.rules} == {"intrusion", "costly"}
        after = REGISTRY.get_sample_value(
            "vigil_records_skipped_total", {"reader": "rules", "reason": "invalid"}
        )
        assert after is not None and after > (before or 0)
    finally:
        service.stop.set()
        service.thread.join(60)
        cleanup(store.client, cfg.redis.key_prefix)
        store.client.close()
