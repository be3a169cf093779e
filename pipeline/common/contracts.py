"""What the stages hand each other: camera ids, frames, detections, the detection message schema.

ingest produces :class:`Frame` s, a detector turns them into :class:`Detection` s, ingest
publishes them as ``detection.v1`` messages (``schemas/detection.v1.json``, docs/messages.md)
that the alert service reads. Ids of cameras, rules and models share one pattern.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

if TYPE_CHECKING:  # type hints only: importing them loads the Kafka and Redis clients
    from pipeline.common.kafka import KafkaConfig
    from pipeline.common.redis import RedisConfig

# Camera, rule and model ids: safe in Redis keys, Kafka keys, file names and URLs.
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
CAMERA_ID = re.compile(ID_PATTERN)

DETECTION_SCHEMA_VERSION = 1
SCHEMA_DIR = Path(__file__).parent / "schemas"


def validate_camera_id(camera_id: str) -> str:
    if not isinstance(camera_id, str) or not CAMERA_ID.match(camera_id):
        raise ValueError(
            f"invalid camera id {camera_id!r}: use 1-64 characters of letters, digits, '_', '-', '.', "
            "starting with a letter or digit"
        )
    return camera_id


@dataclass(slots=True)
class Frame:
    camera_id: str
    seq: int
    epoch: int  # ms since 1970 when this reader started; (epoch, seq) only increases
    capture_ts: float
    image: np.ndarray

    @property
    def width(self) -> int:
        return int(self.image.shape[1])

    @property
    def height(self) -> int:
        return int(self.image.shape[0])


@dataclass(frozen=True, slots=True)
class Detection:
    """The detector's output, independent of the model library that produced it."""

    class_id: int
    label: str
    confidence: float
    box: tuple[float, float, float, float]  # normalised x1, y1, x2, y2 in [0, 1]
    track_id: int | None = None

    def to_dict(self) -> dict:
        d = {
            "class_id": self.class_id,
            "label": self.label,
            "confidence": round(float(self.confidence), 4),
            "box": [round(float(v), 5) for v in self.box],
        }
        if self.track_id is not None:
            d["track_id"] = int(self.track_id)
        return d


class Connections(Protocol):
    """Where Kafka and Redis are: what a stage needs of the root config to reach them
    (``pipeline.config.VigilConfig`` is one)."""

    kafka: KafkaConfig
    redis: RedisConfig


class StreamTracks(Protocol):
    """A detector's tracks, one set per camera (``detectors.tracking.StreamTrackers``): the
    worker drops a camera's when it leaves, and hands them to the next model on hot reload."""

    def drop(self, stream: str) -> None: ...


class BatchLimits(Protocol):
    """The detector's batching keys (``detector.max_batch``, ``detector.max_wait_ms``): how
    many frames one detector call takes, and how long a batch waits for more cameras."""

    max_batch: int
    max_wait_ms: float


class FrameDetector(Protocol):
    """What the ingest worker needs of a detector: one call path for every backend.

    ``submit`` starts a batch (at most ``config.max_batch`` frames) and returns a handle;
    ``wait`` blocks until the backend could start another batch next to it; ``collect`` returns
    per frame an ``(n, 6)`` array ``x1, y1, x2, y2, confidence, class`` in the frame's pixels;
    ``finish`` turns one frame's array into :class:`Detection` s, tracked per ``stream``. With
    ``overlaps`` true the batch runs in the background between ``submit`` and ``collect`` (the
    worker post-processes the previous batch meanwhile); otherwise ``submit`` has done the work.
    ``detectors.engine.Detector`` implements it.
    """

    name: str
    version: str
    names: dict[int, str]
    trackers: StreamTracks | None  # None: tracking off (``detector.tracker: none``)
    config: BatchLimits

    @property
    def overlaps(self) -> bool: ...

    def submit(self, frames: list[np.ndarray]) -> Any: ...

    def wait(self, job: Any, timeout_s: float = 60.0) -> bool: ...

    def collect(self, job: Any) -> list[np.ndarray]: ...

    def finish(
        self,
        frame: np.ndarray,
        boxes: np.ndarray,
        stream: str | None = None,
        frame_rate: float = 10.0,
    ) -> list[Detection]: ...


class FrameListener(Protocol):
    """Called with each published frame and its detections (collection, drift monitoring)."""

    def __call__(self, frame: Frame, detections: list[Detection]) -> None: ...


@cache
def load_schema(name: str = "detection.v1.json") -> dict[str, Any]:
    return json.loads((SCHEMA_DIR / name).read_text())


def validate_detection_message(msg: Any) -> None:
    """Raise ``jsonschema.ValidationError`` naming the first offending field."""
    import jsonschema  # noqa: PLC0415 (jsonschema: only tests and DLQ tooling validate)

    jsonschema.validate(msg, load_schema())
