"""The camera definitions the recorder service's parts need (retention's ``retain_of``, the
alert follower's ``record_of``), read from the camera registry and kept between reads."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from pipeline.cameras.registry import read_registry
from pipeline.cameras.settings import RecordConfig, RetainConfig
from pipeline.cameras.spec import CameraSpec
from pipeline.common.kafka import KafkaConfig
from pipeline.record.stream import error_text

log = logging.getLogger(__name__)


class CameraSettings:
    """Each camera's definition as the camera registry says, read again when older than
    ``max_age_s``: called with a camera id it is retention's ``retain_of`` (``record.retain``;
    the defaults for a camera not, or no longer, in the registry), and :meth:`record_of` is the
    alert follower's. A registry that cannot be read keeps the last answer (logged once per
    failing spell)."""

    def __init__(
        self,
        read: Callable[[], dict[str, CameraSpec]],
        max_age_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.read = read
        self.max_age_s = max_age_s
        self.clock = clock
        self._specs: dict[str, CameraSpec] = {}
        self._read_at: float | None = None
        self._failing = False
        self.default = RetainConfig()

    @classmethod
    def from_kafka(cls, kafka: KafkaConfig, max_age_s: float = 60.0) -> CameraSettings:
        """Reading the camera registry topic of ``kafka``."""
        return cls(lambda: read_registry(kafka), max_age_s)

    def __call__(self, camera_id: str) -> RetainConfig:
        spec = self.spec(camera_id)
        if spec is None:
            return self.default
        retain = spec.record.retain
        if spec.record.mode == "events":
            # every segment of a camera recorded in mode events is an event's: kept event_days
            return retain.model_copy(update={"continuous_days": retain.event_days})
        return retain

    def spec(self, camera_id: str) -> CameraSpec | None:
        """The camera's definition as last read (read again when older than ``max_age_s``)."""
        now = self.clock()
        if self._read_at is None or now - self._read_at >= self.max_age_s:
            self._refresh(now)
        return self._specs.get(camera_id)

    def record_of(self, camera_id: str) -> RecordConfig | None:
        """The camera's ``record:`` settings when it is recorded (enabled, ``record.enabled``),
        else None (the alert follower's ``record_of``)."""
        spec = self.spec(camera_id)
        return spec.record if spec is not None and spec.enabled and spec.record.enabled else None

    def _refresh(self, now: float) -> None:
        self._read_at = now
        try:
            self._specs = self.read()
        except Exception as e:  # noqa: BLE001 - go on with what was known
            if not self._failing:
                self._failing = True
                log.warning(
                    "recorder: camera registry unreadable (%s); using the last settings",
                    error_text(e),
                )
        else:
            if self._failing:
                self._failing = False
                log.info("recorder: camera registry readable again")
