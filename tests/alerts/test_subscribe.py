"""``alerts.subscribe`` on Kafka (alerts/subscribe.py): a subscriber sees the alerts and, from the
clips topic, when an alert's clip is recorded, and from the reviews topic, an operator's review;
neither the clips topic (the recorders') nor the reviews topic (the console's) can start or end
an alert for it."""

from __future__ import annotations

import pytest

from alerts.subscribe import subscribe
from pipeline.common.kafka import ensure_topics
from tests.support.config import make_config
from tests.support.notify import alert, produce

pytestmark = pytest.mark.integration


def test_a_subscriber_sees_clips_and_reviews_and_never_an_alert_forged_on_their_topics(
    kafka_bootstrap,
):
    cfg = make_config(kafka_bootstrap)
    ensure_topics(cfg.kafka)
    started, ended, clip = alert(0), alert(0, "ended"), alert(0, "clip")
    forged, forged_too, review = alert(1, "started"), alert(2, "started"), alert(0, "reviewed")
    produce(cfg, [started, ended])
    produce(cfg, [forged, clip, b"not json"], topic=cfg.kafka.topics.clips)
    produce(cfg, [forged_too, review], topic=cfg.kafka.topics.reviews)

    def seen(**kw) -> list[tuple[str, str]]:
        got = subscribe(cfg, from_beginning=True, timeout_s=1.0, **kw)
        return sorted((m["id"], m["status"]) for m in got)

    a = started["id"]
    assert seen() == sorted([(a, "started"), (a, "ended"), (a, "clip"), (a, "reviewed")])
    assert seen(clips=False, reviews=False) == sorted([(a, "started"), (a, "ended")])
