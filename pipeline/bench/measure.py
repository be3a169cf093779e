"""Process figures: RSS, percentiles, the machine, Kafka acknowledgement timing."""

from __future__ import annotations

import contextlib
import os
import platform
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


def cpu_has_bf16() -> bool:
    try:
        import openvino as ov  # noqa: PLC0415 (torch/openvino: heavy)

        return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    except Exception:  # no OpenVINO or no CPU plugin: nothing to show
        return False


def rounded(v: float | None, digits: int = 1) -> float | None:
    return None if v is None else round(v, digits)


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return 0.0


def percentile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    return float(np.percentile(np.asarray(values, dtype=float), q))


def machine() -> dict[str, Any]:
    import torch  # noqa: PLC0415 (torch/openvino: heavy)

    cpu = platform.processor() or ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    info: dict[str, Any] = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "loadavg_start": list(os.getloadavg()),
    }
    for mod in ("ultralytics", "onnxruntime", "openvino", "tensorrt", "cv2"):
        with contextlib.suppress(Exception):
            info[mod] = __import__(mod).__version__
    return info


class AckTimer:
    """Wraps a KafkaProducer: records capture-to-acknowledgement latency of each send."""

    def __init__(self, producer) -> None:
        self.producer = producer
        self.recording = False
        self.latencies: list[float] = []
        self.acked = 0
        self.errors = 0

    def send(self, topic, key=None, value=None, timestamp_ms=None, **kw):
        fut = self.producer.send(topic, key=key, value=value, timestamp_ms=timestamp_ms, **kw)
        captured = (timestamp_ms or time.time() * 1000) / 1000.0
        fut.add_callback(self._ok, captured)
        fut.add_errback(self._failed)
        return fut

    def _ok(self, captured: float, _meta) -> None:
        if self.recording:
            self.acked += 1
            self.latencies.append(time.time() - captured)

    def _failed(self, _exc) -> None:
        self.errors += 1

    def start(self) -> None:
        self.latencies, self.acked, self.recording = [], 0, True

    def stop(self) -> None:
        self.recording = False

    def flush(self, timeout=None):
        return self.producer.flush(timeout=timeout)

    def close(self, timeout=None):
        return self.producer.close(timeout=timeout)


def reader_counts(r) -> tuple[int, int, float]:
    return r.stats.frames_decoded, r.stats.frames_dropped, r.stats.decode_cpu_s


def hist_state(hist) -> tuple[float, float]:
    """(sum, count) of an unlabelled prometheus Histogram."""
    total = count = 0.0
    for metric in hist.collect():
        for s in metric.samples:
            if s.name.endswith("_sum"):
                total = s.value
            elif s.name.endswith("_count"):
                count = s.value
    return total, count


def to_ms(v: float | None) -> float | None:
    return None if v is None else round(v * 1000, 1)
