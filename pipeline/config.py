"""One YAML file describes the whole deployment: Kafka, Redis, detector, cameras and rules.

Validation is strict (unknown keys are errors) so a typo never silently falls back to a default;
every error names the offending key path and the file.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from pipeline.assets import assets_dir
from pipeline.camera import CameraSpec
from pipeline.motion import MotionConfig


class ConfigError(ValueError):
    """A config file that cannot be used; the message names the file and the key."""


_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def expand_env(text: str) -> str:
    """Expand ``${VAR}`` and ``${VAR:-default}``; ``VIGIL_ASSETS`` defaults to the shared assets."""

    def repl(m: re.Match[str]) -> str:
        name, default = m.group(1), m.group(2)
        if name in os.environ:
            return os.environ[name]
        if default is not None:
            return default
        if name == "VIGIL_ASSETS":
            return str(assets_dir())
        raise ConfigError(f"environment variable ${{{name}}} is not set and has no default")

    return _VAR.sub(repl, text)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


class KafkaTopics(_Strict):
    cameras: str = "vigil.cameras"
    detections: str = "vigil.detections"
    alerts: str = "vigil.alerts"
    detections_dlq: str = "vigil.detections.dlq"
    control: str = "vigil.control"


class KafkaConfig(_Strict):
    bootstrap_servers: str = "127.0.0.1:9092"
    client_id: str = "vigil"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    username: str | None = None
    password: SecretStr | None = None
    request_timeout_ms: int = Field(15000, ge=1000)
    bootstrap_timeout_ms: int = Field(15000, ge=1000)
    topics: KafkaTopics = KafkaTopics()
    detections_partitions: int = Field(6, ge=1)
    cameras_partitions: int = Field(16, ge=1)
    replication_factor: int = Field(1, ge=1)
    compression: Literal["gzip", "snappy", "lz4", "zstd", "none"] = "gzip"
    linger_ms: int = Field(5, ge=0)

    def client_kwargs(self) -> dict[str, Any]:
        """Connection settings shared by producers, consumers and the admin client."""
        kw: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap_servers.split(","),
            "security_protocol": self.security_protocol,
            "request_timeout_ms": self.request_timeout_ms,
            "bootstrap_timeout_ms": self.bootstrap_timeout_ms,
        }
        if self.sasl_mechanism:
            kw["sasl_mechanism"] = self.sasl_mechanism
            kw["sasl_plain_username"] = self.username
            kw["sasl_plain_password"] = self.password.get_secret_value() if self.password else None
        return kw


class RedisConfig(_Strict):
    url: SecretStr = SecretStr("redis://127.0.0.1:6379/0")
    key_prefix: str = "vigil:"
    socket_timeout_s: float = Field(5.0, gt=0)
    stream_maxlen: int = Field(100_000, ge=100)
    camera_stream_maxlen: int = Field(10_000, ge=100)
    snapshot_ttl_s: int = Field(7 * 24 * 3600, ge=60)
    frame_ttl_s: int = Field(120, ge=5, description="recent frames kept for snapshots")
    store_frames: bool = True


class DetectorConfig(_Strict):
    weights: str = "${VIGIL_ASSETS}/models/yolov5n.pt"
    device: str = "auto"
    imgsz: int = Field(640, ge=32, le=4096)
    conf: float = Field(0.25, ge=0.0, le=1.0)
    iou: float = Field(0.45, ge=0.0, le=1.0)
    classes: list[str | int] | None = None
    max_batch: int = Field(8, ge=1, le=256)
    # Inference backend (detectors/backends.py): auto = fastest available here (openvino >
    # onnxruntime > torch on CPU, tensorrt > torch on CUDA); exports are cached next to the weights.
    backend: Literal["auto", "torch", "onnxruntime", "openvino", "tensorrt", "ultralytics"] = "auto"
    # How long the worker waits for more cameras' frames to fill a batch once one frame is due.
    max_wait_ms: float = Field(5.0, ge=0, le=1000)
    half: bool = Field(True, description="fp16 on CUDA (ignored on CPU)")
    # OpenVINO on CPU: bf16 runs ~1.4x faster on CPUs with bf16 units but moves boxes by about a
    # pixel (one small box of 100 fell below IoU 0.9 against PyTorch, BENCHMARKS.md); f32 gives
    # PyTorch's detections. Other backends ignore it.
    cpu_precision: Literal["f32", "bf16"] = "f32"
    tracker: Literal["bytetrack", "botsort", "none"] = "bytetrack"
    track_buffer_s: float = Field(3.0, gt=0, le=60)
    # Threads of PyTorch and OpenCV in the worker (detectors/host_threads.py): auto = 1 when
    # another engine runs the network (they only do NMS and resizing), defaults for torch on CPU.
    host_threads: Literal["auto"] | Annotated[int, Field(ge=1, le=256)] = "auto"

    @field_validator("weights")
    @classmethod
    def _expand(cls, v: str) -> str:
        return expand_env(v)

    @field_validator("imgsz")
    @classmethod
    def _multiple_of_32(cls, v: int) -> int:
        if v % 32:
            raise ValueError(f"must be a multiple of 32 (the model stride), got {v}")
        return v


class ReconnectConfig(_Strict):
    initial_s: float = Field(0.5, gt=0)
    max_s: float = Field(30.0, gt=0)
    jitter: float = Field(0.2, ge=0, le=1)


class IngestConfig(_Strict):
    worker_id: str | None = None
    group_id: str = "vigil-ingest"
    default_fps: float = Field(5.0, gt=0, le=120)
    open_timeout_s: float = Field(10.0, gt=0)
    read_timeout_s: float = Field(10.0, gt=0)
    # FFmpeg decoder threads per camera; 0 = one per core (OpenCV's default). 1: a worker decodes
    # many cameras in parallel anyway, frame threading costs ~10 % more CPU here and delays each
    # frame by one frame per extra thread.
    decode_threads: int = Field(1, ge=0, le=64)
    reconnect: ReconnectConfig = ReconnectConfig()
    session_timeout_ms: int = Field(10000, ge=6000)
    # A frame older than this when the detector gets to it is dropped and counted (stale).
    max_frame_age_s: float = Field(2.0, gt=0, le=60)
    # Motion gating defaults for every camera (cameras[].motion overrides them key by key).
    motion: MotionConfig = MotionConfig()


class UncertainPolicy(_Strict):
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


class MotionPolicy(_Strict):
    """Frames where the picture changed (frame difference) but the detector found nothing."""

    enabled: bool = True
    check_interval_s: float = Field(2.0, gt=0, description="compare frames this far apart")
    threshold: float = Field(0.02, gt=0, le=1, description="fraction of changed pixels")


class CollectionPolicy(_Strict):
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


class CollectionConfig(_Strict):
    """Sampling of live frames into a YOLO dataset folder (detectors.collect)."""

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
                CollectionPolicy.model_validate(_deep_merge(base, override))
            except ValidationError as e:
                errs = "; ".join(
                    f"{'.'.join(str(p) for p in x['loc'])}: {x['msg']}" for x in e.errors()
                )
                raise ValueError(f"camera {cid!r}: {errs}") from None
        return v

    def policy_for(self, camera_id: str) -> CollectionPolicy:
        override = self.cameras.get(camera_id)
        if not override:
            return self.policy
        return CollectionPolicy.model_validate(_deep_merge(self.policy.model_dump(), override))


def _deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in override.items():
        out[k] = (
            _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
        )
    return out


class PromotionConfig(_Strict):
    """When ``vigil retrain`` may replace the production model."""

    metric: Literal["map50", "map50_95"] = "map50"
    margin: float = Field(0.01, ge=0, le=1, description="candidate must beat production by this")
    monitored_classes: list[str] = Field(default_factory=lambda: ["person"])
    class_tolerance: float = Field(
        0.02, ge=0, le=1, description="largest AP drop allowed on a monitored class"
    )


class DriftConfig(_Strict):
    """Per-camera drift of live detections away from the model's reference profile."""

    enabled: bool = True
    window_s: float = Field(3600.0, gt=0, description="statistics window per camera")
    min_frames: int = Field(200, ge=1, description="frames needed before a verdict")
    threshold: float = Field(0.25, gt=0, description="drift score that makes retraining due")
    publish_interval_s: float = Field(30.0, gt=0)


class ModelsConfig(_Strict):
    """Model registry (Redis + files) and hot reload of the production model."""

    registry: bool = Field(False, description="ingest workers follow the registry's production")
    store: str = Field(
        "${VIGIL_STATE:-.vigil}/models", description="folder or fsspec URL for model files"
    )
    name: str = Field("detector", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    poll_interval_s: float = Field(5.0, gt=0, description="fallback when a pub/sub notice is lost")
    promotion: PromotionConfig = PromotionConfig()
    drift: DriftConfig = DriftConfig()

    @field_validator("store")
    @classmethod
    def _expand_store(cls, v: str) -> str:
        return expand_env(v)


class VigilConfig(_Strict):
    kafka: KafkaConfig = KafkaConfig()
    redis: RedisConfig = RedisConfig()
    detector: DetectorConfig = DetectorConfig()
    ingest: IngestConfig = IngestConfig()
    collection: CollectionConfig = CollectionConfig()
    models: ModelsConfig = ModelsConfig()
    cameras: list[CameraSpec] = []
    # Rules and the alert service are validated by alerts.config; kept opaque here so the
    # ingest side does not depend on the alert side (data flows one way).
    alerts: dict[str, Any] = {}

    @field_validator("cameras")
    @classmethod
    def _unique_ids(cls, cams: list[CameraSpec]) -> list[CameraSpec]:
        seen: set[str] = set()
        for cam in cams:
            if cam.id in seen:
                raise ValueError(f"duplicate camera id {cam.id!r}")
            seen.add(cam.id)
        return cams


def _format_errors(err: ValidationError, source: str) -> str:
    lines = [f"invalid config {source}:"]
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "<root>"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling; see examples/demo.yaml)"
        lines.append(f"  {loc}: {msg}")
    return "\n".join(lines)


def parse_config(data: Any, source: str = "<config>") -> VigilConfig:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"invalid config {source}: top level must be a mapping, got {type(data).__name__}"
        )
    try:
        return VigilConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_format_errors(e, source)) from None


def load_config(path: str | Path) -> VigilConfig:
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"config file {path} not found") from None
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e}") from None
    try:
        data = yaml.safe_load(expand_env(text))
    except yaml.YAMLError as e:
        raise ConfigError(f"malformed YAML in {path}: {e}") from None
    return parse_config(data, str(path))
