"""The ``detector:`` section: which weights, which backend, input size and thresholds."""

from __future__ import annotations

import warnings
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from detectors.backends import (
    Precision,
    backend_choices,
    backend_classes,
    describe_precisions,
    device_kind,
)
from pipeline.common.config import StrictModel, expand_env

_NO = (False, 0, "false", "False", "no", "off", "0")


class DetectorConfig(StrictModel):
    weights: str = "${VIGIL_ASSETS}/models/yolov5n.pt"
    device: str = "auto"
    imgsz: int = Field(640, ge=32, le=4096)
    conf: float = Field(0.25, ge=0.0, le=1.0)
    iou: float = Field(0.45, ge=0.0, le=1.0)
    classes: list[str | int] | None = None
    max_batch: int = Field(8, ge=1, le=256)
    # Inference backend (detectors/backends/): one of the registered backends' keys, or auto =
    # the fastest available here that runs `precision` (openvino > onnxruntime > torch on CPU,
    # tensorrt > torch on CUDA); exports are cached next to the weights.
    backend: str = "auto"
    # How long the worker waits for more cameras' frames to fill a batch once one frame is due.
    max_wait_ms: float = Field(5.0, ge=0, le=1000)
    # f32 | f16 | bf16 | int8 | auto, checked against what the backend runs (docs/performance.md).
    # Unset: the backend's own default, f16 on CUDA (torch, TensorRT) and f32 elsewhere. auto:
    # that too, except OpenVINO, where auto is the fastest precision that passed the accuracy
    # gate for these weights on this CPU. bf16 (OpenVINO) runs ~1.4x faster on CPUs with bf16
    # units but moves boxes by about a pixel; int8 (OpenVINO) runs the NNCF-quantized model made
    # by `vigil models quantize`, only once it passed the gate (mAP within 1 point of f32 on
    # held-out labelled frames), else f32 with a warning. The old keys `half` and
    # `cpu_precision` are read into this one (with a warning).
    precision: Precision | None = None
    tracker: Literal["bytetrack", "botsort", "none"] = "bytetrack"
    track_buffer_s: float = Field(3.0, gt=0, le=60)
    # Threads of PyTorch and OpenCV in the worker (detectors/host_threads.py): auto = 1 when
    # another engine runs the network (they only do NMS and resizing), defaults for torch on CPU.
    host_threads: Literal["auto"] | Annotated[int, Field(ge=1, le=256)] = "auto"

    @field_validator("weights")
    @classmethod
    def _expand(cls, v: str) -> str:
        return expand_env(v)

    @model_validator(mode="before")
    @classmethod
    def _old_precision_keys(cls, data: Any) -> Any:
        """``cpu_precision`` and ``half``, the old precision keys, read into ``precision`` with
        one warning each. ``cpu_precision`` is the old name of ``precision``. ``half`` was the
        fp16 switch for CUDA, next to a ``precision`` that only OpenVINO read: ``half: false``
        is f32; ``half: true`` with ``precision`` unset or f32 (every dumped config) is the
        backend's default (f16 on CUDA, f32 elsewhere, as it ran); another ``precision`` wins."""
        if not isinstance(data, dict) or not {"half", "cpu_precision"} & data.keys():
            return data
        data = dict(data)
        if "cpu_precision" in data:
            old = data.pop("cpu_precision")
            _deprecated(f"detector.cpu_precision is deprecated: write precision: {old}")
            if data.get("precision") not in (None, old):
                raise ValueError(
                    f"precision {data['precision']!r} and cpu_precision {old!r} disagree: "
                    "cpu_precision is the old name of precision, set only precision"
                )
            data["precision"] = old
        if "half" in data:
            half = data.pop("half") not in _NO
            if data.get("precision") not in (None, "f32"):
                now = f"ignored, precision {data['precision']} is what runs; remove half"
            elif half:
                data["precision"] = None
                now = (
                    "precision left unset runs f16 on CUDA and f32 elsewhere, as half: true did; "
                    "remove half (and a precision: f32 next to it, which now means f32 on CUDA too)"
                )
            else:
                data["precision"] = "f32"
                now = "write precision: f32 instead of half: false"
            _deprecated(f"detector.half is deprecated: {now}")
        return data

    @field_validator("backend")
    @classmethod
    def _known_backend(cls, v: str) -> str:
        v = v.strip().lower()
        if v not in backend_choices():
            raise ValueError(f"unknown backend {v!r}; use one of {', '.join(backend_choices())}")
        return v

    @model_validator(mode="after")
    def _backend_runs_precision(self) -> DetectorConfig:
        """A precision the named backend never runs (on this device, when it is named) is an
        error here; ``auto`` and exported weights are checked when the detector is built."""
        backend = backend_classes().get(self.backend)
        if backend is None or self.precision in (None, "auto"):
            return self
        kind = None if self.device.strip().lower() == "auto" else device_kind(self.device)
        if kind is not None and kind not in backend.precisions:
            return self  # the device is refused when the backend is chosen, with its reason
        if not backend.supports(self.precision, kind):
            where = f" on {kind}" if kind else ""
            raise ValueError(
                f"backend {self.backend!r} cannot run precision {self.precision!r}{where}: it "
                f"runs {describe_precisions(backend.precisions)}"
            )
        return self

    @field_validator("imgsz")
    @classmethod
    def _multiple_of_32(cls, v: int) -> int:
        if v % 32:
            raise ValueError(f"must be a multiple of 32 (the model stride), got {v}")
        return v


def _deprecated(message: str) -> None:
    warnings.warn(message, FutureWarning, stacklevel=4)
