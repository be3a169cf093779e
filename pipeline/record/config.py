"""The recording stage's settings: ``recordings:`` (global) and the per-camera ``record:`` model.

docs/recordings.md describes every key. The per-camera :class:`RecordConfig` is defined here, with
the stage that owns it; wiring it into the camera definitions comes with the shared camera layer.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from pipeline.common.config import StrictModel, expand_env


class RetainConfig(StrictModel):
    """How long segments are kept, per kind (days)."""

    continuous_days: float = Field(7.0, gt=0, description="continuous recordings")
    event_days: float = Field(30.0, gt=0, description="segments an alert's clip needs")


class RecordConfig(StrictModel):
    """One camera's ``record:`` settings."""

    enabled: bool = False
    mode: Literal["continuous", "events"] = Field(
        "continuous", description="continuous, or only around alerts and motion"
    )
    retain: RetainConfig = RetainConfig()
    pre_s: float = Field(5.0, ge=0, le=300, description="kept before an event")
    post_s: float = Field(5.0, ge=0, le=300, description="kept after an event")


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
    retention_interval_s: float = Field(
        300.0, ge=1, le=86400, description="how often a retention pass runs"
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
