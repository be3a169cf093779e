"""A camera's own settings, part of its definition (:class:`~pipeline.cameras.spec.CameraSpec`):
``motion:`` (over ``ingest.motion``) and ``record:`` (docs/recordings.md). The stages' global
settings (``ingest:``, ``recordings:``) stay with the stages."""

from __future__ import annotations

from typing import Literal, TypeVar

from pydantic import BaseModel, Field

from pipeline.common.config import StrictModel

M = TypeVar("M", bound=BaseModel)


class MotionOverride(StrictModel):
    """Per-camera ``motion:``; keys left out come from ``ingest.motion``."""

    enabled: bool | None = None
    threshold: int | None = Field(None, ge=1, le=255)
    min_area: float | None = Field(None, gt=0, le=1)
    force_every_s: float | None = Field(None, gt=0, le=3600)
    width: int | None = Field(None, ge=32, le=1920)
    alpha: float | None = Field(None, gt=0, le=1)
    object_margin: float | None = Field(None, ge=0, le=1)
    object_fraction: float | None = Field(None, gt=0, le=1)

    def apply(self, base: M) -> M:
        """``base`` (ingest's ``MotionConfig``) with the keys set here over it."""
        return base.model_copy(update=self.model_dump(exclude_none=True))


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
