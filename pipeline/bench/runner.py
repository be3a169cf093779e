"""The bench run: settings, helpers shared by the sections, and the order they run in."""

from __future__ import annotations

import argparse
import functools
import gc
import logging
import os
import sys
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import yaml
from pydantic import ValidationError

from detectors import host_threads
from detectors.config import DetectorConfig
from pipeline.bench.accuracy import AccuracySection
from pipeline.bench.alert_latency import AlertLatencySection
from pipeline.bench.detector_only import DetectorSection
from pipeline.bench.gating import GatingSection
from pipeline.bench.measure import cpu_has_bf16, machine
from pipeline.bench.pipeline_runs import PipelineSection
from pipeline.bench.precision import PrecisionSection
from pipeline.bench.report import ratios
from pipeline.common.assets import CAMERA_FILES, footage
from pipeline.common.config import ConfigError, expand_env, format_validation_error

if TYPE_CHECKING:
    from pipeline.config import VigilConfig

log = logging.getLogger(__name__)


def detector_settings(path: str | None) -> dict[str, Any]:
    """The config's ``detector`` section alone, validated: the detector sections need nothing
    else, so they run without the Kafka, Redis and console packages the whole config imports
    (a bare GPU machine, deploy/gpu/bench_gpu.sh). :attr:`Bench.base` loads the whole file."""
    data: Any = {}
    if path:
        try:
            data = yaml.safe_load(expand_env(Path(path).read_text())) or {}
        except OSError as e:
            raise ConfigError(f"cannot read config file {path}: {e}") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"malformed YAML in {path}: {e}") from None
    section = data.get("detector") if isinstance(data, dict) else None
    try:
        return DetectorConfig.model_validate(section or {}).model_dump()
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, f"{path} (detector)")) from None


class Bench(
    AccuracySection,
    DetectorSection,
    PipelineSection,
    AlertLatencySection,
    GatingSection,
    PrecisionSection,
):
    """One ``vigil bench`` run: each section is a mixin of its own module."""

    def __init__(self, args: argparse.Namespace) -> None:

        self.args = args
        det = detector_settings(args.config)
        det.update(imgsz=args.imgsz)
        if args.weights:
            det["weights"] = args.weights
        if args.device:
            det["device"] = args.device
        self.det_dict = det
        self.files = [footage(name) for name in CAMERA_FILES]
        for f in self.files:
            if not f.is_file():
                raise FileNotFoundError(
                    f"{f} missing: set VIGIL_ASSETS to the shared assets folder"
                )
        self.result: dict[str, Any] = {
            "command": "vigil bench " + " ".join(sys.argv[2:] if len(sys.argv) > 2 else []),
            "machine": machine(),
            "settings": {
                "weights": det["weights"],
                "imgsz": args.imgsz,
                "conf": det["conf"],
                "iou": det["iou"],
                "classes": det["classes"],
                "camera_fps": args.camera_fps,
                "duration_s": args.duration,
                "warmup_s": args.warmup,
            },
        }
        self.tag = uuid.uuid4().hex[:6]
        self._pools: dict[int, list[np.ndarray]] = {}

        self._stock_threads = host_threads.current()  # what the naive baseline runs with
        whole = {"pipeline", "gating", "alerts"} - set(args.skip)
        if whole or getattr(args, "precisions", None) or getattr(args, "capacity", False):
            _ = self.base  # sections that need the whole config: check it before anything runs

    @functools.cached_property
    def base(self) -> VigilConfig:
        """The whole config (Kafka, Redis, rules, ...), loaded by the sections that need it."""
        from pipeline.config import VigilConfig, load_config  # noqa: PLC0415 (Kafka/Redis clients: loaded by the sections that use them)

        return load_config(self.args.config) if self.args.config else VigilConfig()

    # -- helpers --
    def detector(self, backend: str, **over):
        from detectors.engine import Detector  # noqa: PLC0415 (imports torch: loaded only when needed)

        if backend == "openvino-int8":  # the gate's INT8 model (pipeline.bench.precision)
            return self.precision_detector("int8", **over)[0]
        from detectors.backends import backend_classes  # noqa: PLC0415 (with the detector)

        d = dict(self.det_dict, backend=backend)
        if backend == "openvino":  # plain openvino is f32, whatever the config asks
            d.update(precision="f32")
        if backend == "openvino-bf16":  # precision: bf16 (not the default)
            d.update(backend="openvino", precision="bf16")
        cls = backend_classes().get(d["backend"])
        if cls is not None and not cls.supports(d.get("precision")):
            d.update(precision=None)  # the config's precision is another backend's: its default
        d.update(over)
        return Detector(DetectorConfig.model_validate(d))

    def threads_for(self, det=None) -> None:
        """Host thread pools as a worker running ``det`` sets them; stock ones for None (the
        naive baseline: ultralytics' defaults, untouched)."""

        host_threads.restore(self._stock_threads)
        if det is not None:
            host_threads.apply(
                self.det_dict.get("host_threads", "auto"), det.backend_name, det.device
            )

    def emit(self, text: str = "") -> None:
        print(text, flush=True)

    def backends(self) -> list[str]:
        from detectors.backends import available_backends  # noqa: PLC0415 (imports torch: loaded only when needed)
        from detectors.loading import select_device  # noqa: PLC0415 (imports torch: loaded only when needed)

        have = available_backends(select_device(self.det_dict["device"]))
        if "openvino" in have and cpu_has_bf16():
            have.insert(have.index("openvino") + 1, "openvino-bf16")  # shown, never auto-chosen
        if self.args.backends:
            if "openvino" in have:  # only when asked: it quantizes first if no INT8 model exists
                have.append("openvino-int8")
            want = [b.strip() for b in self.args.backends.split(",") if b.strip()]
            return [b for b in want if b in have or b == "ultralytics"]
        return have

    # -- all --
    def run(self) -> dict[str, Any]:
        sections = [
            s
            for s in ("accuracy", "detector", "pipeline", "gating", "alerts")
            if s not in self.args.skip
        ]
        if getattr(self.args, "precisions", None):
            sections.append("precision")
        if getattr(self.args, "capacity", False):
            sections.append("capacity")
        for s in sections:
            t0 = time.monotonic()
            {
                "accuracy": self.accuracy,
                "detector": self.detector_only,
                "pipeline": self.pipeline,
                "gating": self.gating,
                "alerts": self.alert_latency,
                "precision": self.precision,
                "capacity": self.capacity,
            }[s]()
            log.info("bench section %s took %.0f s", s, time.monotonic() - t0)
            gc.collect()
        self.result["ratios"] = ratios(self.result)
        self.result["machine"]["loadavg_end"] = list(os.getloadavg())
        if self.result["ratios"]:
            self.emit("\n## Ratios (same run)")
            for k, v in self.result["ratios"].items():
                self.emit(f"- {k}: {v}")
        return self.result
