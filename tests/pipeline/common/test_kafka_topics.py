"""Vigil's topics (pipeline/common/kafka.py): the recorder's clips topic is created with the others,
partitioned like the alerts, and can never be the alerts topic; the console's reviews topic
likewise."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from pipeline.common.kafka import KafkaConfig, KafkaTopics, topic_specs


def test_the_clips_topic_is_created_like_the_alerts_and_is_never_the_alerts_topic():
    cfg = KafkaConfig(detections_partitions=5)
    specs = {s.name: s for s in topic_specs(cfg)}
    clips, alerts = specs["vigil.clips"], specs["vigil.alerts"]
    assert (clips.num_partitions, clips.topic_configs) == (5, alerts.topic_configs)
    with pytest.raises(ValidationError, match="clips: 'vigil.alerts' is the alerts topic"):
        KafkaTopics(clips="vigil.alerts")


def test_the_reviews_topic_is_created_like_the_alerts_and_is_never_the_alerts_topic():
    """The console's reviews topic likewise (docs/security.md: the console may not write alerts)."""
    cfg = KafkaConfig(detections_partitions=5)
    specs = {s.name: s for s in topic_specs(cfg)}
    reviews, alerts = specs["vigil.reviews"], specs["vigil.alerts"]
    assert (reviews.num_partitions, reviews.topic_configs) == (5, alerts.topic_configs)
    with pytest.raises(ValidationError, match="reviews: 'vigil.alerts' is the alerts topic"):
        KafkaTopics(reviews="vigil.alerts")
    with pytest.raises(ValidationError, match="reviews: 'vigil.clips' is the clips topic"):
        KafkaTopics(reviews="vigil.clips")
