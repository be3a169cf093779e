"""The ``onnxruntime`` backend (CPU): the ONNX export of the weights in an ONNX Runtime session."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from detectors.backends.base import Backend


class OnnxRuntimeBackend(Backend):
    key = "onnxruntime"
    precisions = {"cpu": ("f32",)}
    export_format = "onnx"
    auto_rank = 30  # after openvino on CPU, before torch (vigil bench, BENCHMARKS.md)
    requires = "onnxruntime"
    install_hint = "pip install onnxruntime"

    @classmethod
    def load(cls, source: Path, config, device: str, precision: str) -> OnnxRuntimeBackend:
        return cls(source)

    def __init__(self, path: Path, threads: int = 0) -> None:
        super().__init__("cpu")
        import onnxruntime as ort  # noqa: PLC0415 (heavy: loaded only when this backend is used)

        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            so.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.source = str(path)

    def run(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: x})[0]
