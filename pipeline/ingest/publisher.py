"""Detection messages to Kafka: keyed by camera, acknowledgements counted, outages logged once.

Sends are buffered by the producer, so a lost Kafka shows first as silence (messages waiting,
nothing acknowledged: :meth:`DetectionPublisher.check`) and only at ``delivery.timeout.ms`` as
failures. Detections are realtime data: while Kafka is away a full buffer drops them (counted),
it does not stop the detection loop.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from pipeline.common.contracts import Frame
from pipeline.common.lifecycle import OutageLog
from pipeline.ingest import metrics


class DetectionPublisher:
    """Publishes to ``topic`` through ``producer`` (a ``KafkaProducer``, set before the first
    message). ``logger`` writes the outage lines: the worker's, so they keep its name."""

    def __init__(
        self,
        topic: str,
        bootstrap_servers: str,
        logger: logging.Logger,
        motion_topic: str | None = None,
    ) -> None:
        self.topic = topic
        self.motion_topic = motion_topic
        self.producer: Any = None
        self.log = logger
        self.published = 0
        self.publish_errors = 0
        self.unacked = 0  # sent, neither acknowledged nor failed yet
        self._last_ack = time.monotonic()
        self.kafka_state = OutageLog(logger, f"Kafka at {bootstrap_servers} (detections)")

    def publish(self, frame: Frame, msg: dict) -> None:
        """Send ``msg`` (the detection message of ``frame``), keyed and timestamped by it."""
        sent_at = time.time()

        def ok(_meta) -> None:
            self.published += 1
            self.unacked -= 1
            self._last_ack = time.monotonic()
            self.kafka_state.up()
            now = time.time()
            metrics.PUBLISH_SECONDS.observe(now - sent_at)
            metrics.CAPTURE_TO_PUBLISH_SECONDS.observe(now - frame.capture_ts)

        def failed(exc: Exception) -> None:
            self.publish_errors += 1
            self.unacked -= 1
            metrics.PUBLISH_ERRORS.inc()
            self.kafka_state.down(f"detection messages are not delivered ({type(exc).__name__})")
            self.log.debug(
                "camera %s: message seq %d not delivered: %s", frame.camera_id, frame.seq, exc
            )

        if self.unacked <= 0:
            self._last_ack = time.monotonic()  # silence counts from the oldest message waiting
        self.unacked += 1
        try:
            fut = self.producer.send(
                self.topic,
                key=frame.camera_id,
                value=msg,
                timestamp_ms=int(frame.capture_ts * 1000),
            )
        except Exception as exc:  # buffer full while Kafka is away: realtime data, drop and count
            failed(exc)
            return
        fut.add_callback(ok)
        fut.add_errback(failed)

    def publish_motion(self, camera_id: str, msg: dict) -> None:
        """Send a motion spell message (``pipeline.common.motion_spells``) on the motion topic,
        keyed by camera. Like detections, realtime: one that cannot be sent is counted and
        dropped (the next renewal says the same, later)."""
        if self.motion_topic is None:
            return

        def failed(exc: Exception) -> None:
            metrics.PUBLISH_ERRORS.inc()
            self.log.debug("camera %s: motion message not delivered: %s", camera_id, exc)

        try:
            fut = self.producer.send(self.motion_topic, key=camera_id, value=msg)
        except Exception as exc:  # noqa: BLE001 - buffer full while Kafka is away
            failed(exc)
            return
        fut.add_errback(failed)

    def check(self, now: float, silent_s: float = 5.0) -> None:
        """Kafka is lost for this worker when messages wait and nothing was acknowledged for
        ``silent_s`` (sends are buffered: their failures only come at delivery.timeout.ms)."""
        if self.unacked > 0 and now - self._last_ack > silent_s:
            self.kafka_state.down(
                f"no acknowledgement for {now - self._last_ack:.0f} s, "
                f"{self.unacked} detection messages waiting",
                failed_operation=False,
            )

    def close(self, timeout_s: float) -> None:
        """Deliver what was accepted (up to ``timeout_s``) and close the producer."""
        if self.producer is not None:
            self.producer.flush(timeout=timeout_s)
            self.producer.close(timeout=timeout_s)
