"""The ``detector:`` section: which weights, which backend, input size and thresholds."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from pipeline.common.config import StrictModel, expand_env

Precision = Literal["f32", "bf16", "int8", "auto"]


class DetectorConfig(StrictModel):
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
    # OpenVINO on CPU (other backends ignore it; docs/performance.md): f32 gives PyTorch's
    # detections; bf16 runs ~1.4x faster on CPUs with bf16 units but moves boxes by about a pixel;
    # int8 runs the NNCF-quantized model made by `vigil models quantize`, only once it passed the
    # accuracy gate (mAP within 1 point of f32 on held-out labelled frames), else f32 with a
    # warning; auto = the fastest precision that passed the gate for these weights on this CPU.
    precision: Precision = "f32"
    # Deprecated alias of `precision` (kept for old configs): setting either sets both; left out
    # of dumps, so a dumped config that is edited and validated again cannot disagree with itself.
    cpu_precision: Precision = Field("f32", exclude=True)
    tracker: Literal["bytetrack", "botsort", "none"] = "bytetrack"
    track_buffer_s: float = Field(3.0, gt=0, le=60)
    # Threads of PyTorch and OpenCV in the worker (detectors/host_threads.py): auto = 1 when
    # another engine runs the network (they only do NMS and resizing), defaults for torch on CPU.
    host_threads: Literal["auto"] | Annotated[int, Field(ge=1, le=256)] = "auto"

    @field_validator("weights")
    @classmethod
    def _expand(cls, v: str) -> str:
        return expand_env(v)

    @model_validator(mode="after")
    def _precision_alias(self) -> DetectorConfig:
        """``cpu_precision`` (old name) and ``precision`` name one setting; the backends read
        ``cpu_precision``, so both always hold the value."""
        given = self.model_fields_set
        if "precision" in given and "cpu_precision" in given:
            if self.precision != self.cpu_precision:
                raise ValueError(
                    f"precision {self.precision!r} and cpu_precision {self.cpu_precision!r} "
                    "disagree: cpu_precision is the old name of precision, set only precision"
                )
        elif "cpu_precision" in given:
            object.__setattr__(self, "precision", self.cpu_precision)
        else:
            object.__setattr__(self, "cpu_precision", self.precision)
        return self

    @field_validator("imgsz")
    @classmethod
    def _multiple_of_32(cls, v: int) -> int:
        if v % 32:
            raise ValueError(f"must be a multiple of 32 (the model stride), got {v}")
        return v
