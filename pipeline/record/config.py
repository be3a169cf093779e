"""The recording stage's global settings: ``recordings:``.

docs/recordings.md describes every key. The per-camera ``record:`` settings are part of the camera
definition (:class:`pipeline.cameras.settings.RecordConfig`).
"""

from __future__ import annotations

from pydantic import Field, field_validator, model_validator

from pipeline.common.config import StrictModel, expand_env


class RecordingsConfig(StrictModel):
    """``recordings:``: where segments go and how the recorders cut and reconnect."""

    dir: str = "${VIGIL_STATE:-.vigil}/recordings"
    max_disk_gb: float | None = Field(None, gt=0, description="disk budget; None = no budget")
    min_free_gb: float = Field(1.0, ge=0, description="recording pauses below this free space")
    segment_s: float = Field(10.0, ge=1, le=600, description="segment length (cut on keyframes)")
    open_timeout_s: float = Field(10.0, gt=0, le=120)
    read_timeout_s: float = Field(10.0, gt=0, le=120)
    backoff_initial_s: float = Field(0.5, gt=0, le=60)
    backoff_max_s: float = Field(10.0, gt=0, le=600)
    gap_tolerance_s: float = Field(
        0.25, ge=0, le=10, description="a break between segments longer than this is a gap"
    )
    clip_cache_days: float = Field(
        1.0, gt=0, le=3650, description="cached clips (.clips/) not asked for this long go"
    )
    retention_interval_s: float = Field(
        300.0, ge=1, le=86400, description="how often a retention pass runs"
    )
    group_id: str = Field(
        "vigil-record",
        min_length=1,
        description="the recorders' consumer group on the cameras topic (ingest has its own)",
    )
    session_timeout_ms: int = Field(
        10000, ge=1000, le=300_000, description="a recorder silent this long hands its cameras over"
    )
    in_run: bool = Field(
        True, description="`vigil run` records the cameras with record.enabled in its process"
    )

    @field_validator("dir")
    @classmethod
    def _expand_dir(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must not be empty")
        return expand_env(v)

    @model_validator(mode="after")
    def _backoff(self) -> RecordingsConfig:
        if self.backoff_max_s < self.backoff_initial_s:
            raise ValueError("backoff_max_s must be at least backoff_initial_s")
        return self
