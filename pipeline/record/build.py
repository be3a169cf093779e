"""The recorder service with all its parts (retention, the alert and motion followers, the
events' holds), from the configuration's sections: ``vigil record``, ``vigil run`` and ``vigil
demo`` build it here, each with the sections of its own config."""

from __future__ import annotations

from collections.abc import Collection

from pipeline.cameras.spec import Endpoint
from pipeline.common.kafka import KafkaConfig
from pipeline.common.redis import RedisConfig
from pipeline.record.alert_follower import AlertFollower
from pipeline.record.camera_settings import CameraSettings
from pipeline.record.config import RecordingsConfig
from pipeline.record.holds import HoldStore
from pipeline.record.index import SegmentIndex
from pipeline.record.motion_follower import MotionFollower
from pipeline.record.retention import Retention, RetentionLoop
from pipeline.record.service import RecorderService


def build_recorder_service(
    kafka: KafkaConfig,
    recordings: RecordingsConfig,
    redis: RedisConfig,
    *,
    forbidden_endpoints: Collection[Endpoint] = (),
    recorder_id: str | None = None,
) -> RecorderService:
    """A recorder service (give it the recorder's Redis ACL user in ``redis``)."""
    retention = Retention.from_config(recordings, redis, CameraSettings.from_kafka(kafka))
    return RecorderService(
        kafka,
        recordings,
        SegmentIndex.from_config(redis),
        recorder_id=recorder_id,
        forbidden_endpoints=forbidden_endpoints,
        retention=RetentionLoop(retention, recordings.retention_interval_s),
        follower=build_alert_follower(kafka, recordings, redis),
        holds=HoldStore.from_config(redis),
        motion=MotionFollower(
            kafka,
            HoldStore.from_config(redis),
            CameraSettings.from_kafka(kafka, max_age_s=10.0).record_of,
            group_id=f"{recordings.group_id}-motion",
            session_timeout_ms=recordings.session_timeout_ms,
        ),
    )


def build_alert_follower(
    kafka: KafkaConfig, recordings: RecordingsConfig, redis: RedisConfig
) -> AlertFollower:
    """The recorder's alert follower: holds for the alerts of recorded cameras, in a group of
    its own on the alerts topic."""
    return AlertFollower(
        kafka,
        HoldStore.from_config(redis),
        CameraSettings.from_kafka(kafka, max_age_s=10.0).record_of,
        group_id=f"{recordings.group_id}-alerts",
        session_timeout_ms=recordings.session_timeout_ms,
        index=SegmentIndex.from_config(redis),
    )
