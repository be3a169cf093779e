"""The ``ingest:`` section: worker identity, camera defaults, reconnects, motion gating, the
console's live view."""

from __future__ import annotations

from typing import Protocol

from pydantic import Field

from pipeline.common.config import StrictModel
from pipeline.common.contracts import BatchLimits, Connections
from pipeline.ingest.motion import MotionConfig


class ReconnectConfig(StrictModel):
    """Backoff between attempts to reach a lost camera (exponential, with jitter). A low cap
    keeps a short outage short: the gap is the outage plus at most ``max_s`` (and the open)."""

    initial_s: float = Field(0.5, gt=0)
    max_s: float = Field(2.0, gt=0)
    jitter: float = Field(0.2, ge=0, le=1)


class IngestConfig(StrictModel):
    worker_id: str | None = None
    group_id: str = "vigil-ingest"
    default_fps: float = Field(5.0, gt=0, le=120)
    open_timeout_s: float = Field(10.0, gt=0)
    read_timeout_s: float = Field(10.0, gt=0)
    # FFmpeg decoder threads per camera; 0 = one per core (OpenCV's default). 1: a worker decodes
    # many cameras in parallel anyway, frame threading costs ~10 % more CPU here and delays each
    # frame by one frame per extra thread.
    decode_threads: int = Field(1, ge=0, le=64)
    # How long FFmpeg probes a new stream before decoding (analyzeduration). Opens of one process
    # run one at a time (OpenCV), so this is what each camera adds to a worker's start-up.
    probe_s: float = Field(0.5, gt=0, le=30)
    reconnect: ReconnectConfig = ReconnectConfig()
    session_timeout_ms: int = Field(10000, ge=6000)
    # A frame older than this when the detector gets to it is dropped and counted (stale).
    max_frame_age_s: float = Field(2.0, gt=0, le=60)
    # Motion gating defaults for every camera (cameras[].motion overrides them key by key).
    motion: MotionConfig = MotionConfig()
    # Newest JPEG per camera kept in Redis for the console's live view, frames per second and
    # camera (by capture time); 0 = off (no live frames and no camera status for the console).
    live_jpeg_fps: float = Field(2.0, ge=0, le=30)


class IngestSettings(Connections, Protocol):
    """What an ingest worker needs of the root config (``pipeline.config.VigilConfig`` is one):
    Kafka, Redis, this section, and the detector's batching keys (``max_batch``, ``max_wait_ms``)."""

    ingest: IngestConfig
    detector: BatchLimits
