"""The retraining sections: ``collection:`` (which live frames to keep) and ``models:`` (registry,
promotion gate, drift)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator

from detectors.config import DetectorConfig
from pipeline.common.config import (
    StrictModel,
    deep_merge,
    expand_env,
    format_validation_error,
    validation_messages,
)
from pipeline.common.contracts import ID_PATTERN
from pipeline.common.errors import UsageError


class UncertainPolicy(StrictModel):
    """Active learning: frames with a detection whose confidence lies in [low, high]."""

    enabled: bool = True
    low: float = Field(0.25, ge=0.0, le=1.0)
    high: float = Field(0.5, ge=0.0, le=1.0)

    @field_validator("high")
    @classmethod
    def _band(cls, v: float, info) -> float:
        low = info.data.get("low")
        if low is not None and v < low:
            raise ValueError(f"must be >= low ({low}), got {v}")
        return v


class MotionPolicy(StrictModel):
    """Frames where the picture changed (frame difference) but the detector found nothing."""

    enabled: bool = True
    check_interval_s: float = Field(2.0, gt=0, description="compare frames this far apart")
    threshold: float = Field(0.02, gt=0, le=1, description="fraction of changed pixels")


class CollectionPolicy(StrictModel):
    """When a camera's frame is worth keeping for retraining (any enabled reason is enough)."""

    periodic_s: float | None = Field(300.0, gt=0, description="one frame every N s; null: off")
    alerts: bool = True
    uncertain: UncertainPolicy = UncertainPolicy()
    motion: MotionPolicy = MotionPolicy()
    min_interval_s: float = Field(
        5.0, ge=0, description="at most one frame per camera this often (alerts excepted)"
    )
    max_images: int = Field(2000, ge=1, description="per-camera quota")
    dedup_distance: int = Field(
        6, ge=0, le=64, description="near-duplicate: perceptual hashes this close (bits; 0: off)"
    )
    dedup_pixel_delta: int = Field(
        12, ge=0, le=255, description="... and no thumbnail cell changed by more (grey levels)"
    )


class ReviewConfig(StrictModel):
    """What an operator's review of an alert adds to the dataset (``collection.dir``)."""

    frames: int = Field(
        1,
        ge=1,
        le=20,
        description="frames per reviewed alert: its triggering frame and, above 1, frames of its "
        "clip spread over the alert (recorded cameras only; unlabelled)",
    )
    min_span_s: float = Field(
        2.0,
        gt=0,
        le=60,
        description="the clip frames of a shorter alert are spread over this span around its "
        "triggering frame",
    )


class CollectionConfig(StrictModel):
    """Sampling of live frames into a YOLO dataset folder (detectors.retrain.sampling)."""

    enabled: bool = False
    dir: str = "${VIGIL_STATE:-.vigil}/collected"
    policy: CollectionPolicy = CollectionPolicy()
    cameras: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="camera id -> policy keys that differ from `policy`"
    )
    disk_budget_mb: float = Field(2048.0, gt=0)
    queue_size: int = Field(16, ge=1, le=1024)
    jpeg_quality: int = Field(92, ge=50, le=100)
    alerts_group_id: str | None = Field(
        None, description="Kafka group reading alerts for alert frames; default <group>-collect"
    )

    @field_validator("dir")
    @classmethod
    def _expand_dir(cls, v: str) -> str:
        return expand_env(v)

    @field_validator("cameras")
    @classmethod
    def _camera_policies(cls, v: dict[str, dict[str, Any]], info) -> dict[str, dict[str, Any]]:
        base = (info.data.get("policy") or CollectionPolicy()).model_dump()
        for cid, override in v.items():
            if not isinstance(override, dict):
                raise ValueError(f"camera {cid!r}: expected a mapping of policy keys")
            try:
                CollectionPolicy.model_validate(deep_merge(base, override))
            except ValidationError as e:
                raise ValueError(
                    format_validation_error(e, f"camera {cid!r}", one_line=True)
                ) from None
        return v

    def policy_for(self, camera_id: str) -> CollectionPolicy:
        override = self.cameras.get(camera_id)
        if not override:
            return self.policy
        return CollectionPolicy.model_validate(deep_merge(self.policy.model_dump(), override))


class PromotionConfig(StrictModel):
    """When ``vigil retrain`` may replace the production model."""

    metric: Literal["map50", "map50_95"] = "map50"
    margin: float = Field(0.01, ge=0, le=1, description="candidate must beat production by this")
    monitored_classes: list[str] = Field(default_factory=lambda: ["person"])
    class_tolerance: float = Field(
        0.02, ge=0, le=1, description="largest AP drop allowed on a monitored class"
    )
    min_reviewed_labels: int = Field(
        50,
        ge=1,
        description="score both models on the held-out split's reviewed images (operator "
        "verdicts) once they hold this many labels; fewer: on all held-out labels",
    )


class DriftConfig(StrictModel):
    """Per-camera drift of live detections away from the model's reference profile."""

    enabled: bool = True
    window_s: float = Field(3600.0, gt=0, description="statistics window per camera")
    min_frames: int = Field(200, ge=1, description="frames needed before a verdict")
    threshold: float = Field(0.25, gt=0, description="drift score that makes retraining due")
    publish_interval_s: float = Field(30.0, gt=0)


class ModelsConfig(StrictModel):
    """Model registry (Redis + files) and hot reload of the production model."""

    registry: bool = Field(False, description="ingest workers follow the registry's production")
    store: str = Field(
        "${VIGIL_STATE:-.vigil}/models", description="folder or fsspec URL for model files"
    )
    name: str = Field("detector", pattern=ID_PATTERN)
    poll_interval_s: float = Field(5.0, gt=0, description="fallback when a pub/sub notice is lost")
    signing_key_file: str | None = Field(
        "${VIGIL_STATE:-.vigil}/model-signing.key",
        description="HMAC key that signs promotions; workers load only entries signed with it "
        "(promoting creates it on first use; null: hot reload and promotion refused)",
    )
    promotion: PromotionConfig = PromotionConfig()
    drift: DriftConfig = DriftConfig()

    @field_validator("store")
    @classmethod
    def _expand_store(cls, v: str) -> str:
        return expand_env(v)

    @field_validator("signing_key_file")
    @classmethod
    def _expand_key_file(cls, v: str | None) -> str | None:
        return expand_env(v) if v else None


def detector_settings(what: str, **settings: Any) -> DetectorConfig:
    """The detector a retraining tool runs (a teacher, a model under evaluation) from the
    settings its user gave; :class:`UsageError` naming them when they cannot be used."""
    try:
        return DetectorConfig(**settings)
    except ValidationError as e:  # an imgsz that is not a multiple of 32, a conf above 1...
        parts = [f"{loc}: {msg}" for loc, msg in validation_messages(e)]
        raise UsageError(f"invalid {what} settings: " + "; ".join(parts)) from None
