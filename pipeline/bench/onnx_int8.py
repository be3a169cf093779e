"""Does INT8 pay on ONNX Runtime? (issue 16: "and ONNX Runtime if it pays")

Side by side, batch 1, the same letterboxed footage frames, rounds interleaved, all cores:
ONNX Runtime f32, ONNX Runtime INT8 quantized by NNCF (QDQ, preset mixed, the calibration
`vigil models quantize` uses) and by ONNX Runtime's own ``quantize_static`` (QOperator,
per-channel), OpenVINO f32 and OpenVINO INT8 (the gate's model when there is one, else made now).
Wall and process CPU ms per frame.

    python3 -m pipeline.bench.onnx_int8 [--weights W] [--imgsz 640] [--rounds 5]

Only a measurement: Vigil's ``precision: int8`` stays OpenVINO-only while this says ONNX
Runtime's INT8 is not faster than its f32 (BENCHMARKS.md has the figures).
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from detectors import precision_record as pr
from detectors import quantize as q
from detectors.backends.export import export_root, exported_model
from pipeline.common.assets import assets_dir, model

Run = Callable[[np.ndarray], object]


def _onnx_runner(path: Path) -> Run:
    import onnxruntime as ort  # noqa: PLC0415 (heavy)

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x})


def _openvino_runner(xml: Path) -> Run:
    import openvino as ov  # noqa: PLC0415 (heavy)

    compiled = ov.Core().compile_model(
        str(xml), "CPU", {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}
    )
    request = compiled.create_infer_request()
    return lambda x: request.infer({0: x})


def _nncf_onnx_int8(onnx_f32: Path, calib: list[np.ndarray], out: Path) -> None:
    import nncf  # noqa: PLC0415 (heavy)
    import onnx  # noqa: PLC0415 (heavy)

    graph = onnx.load(str(onnx_f32))
    name = graph.graph.input[0].name
    dataset = nncf.Dataset(calib, lambda x: {name: x})
    qmodel = nncf.quantize(
        graph, dataset, preset=nncf.QuantizationPreset.MIXED, subset_size=len(calib)
    )
    onnx.save(qmodel, str(out))


def _ort_static_int8(onnx_f32: Path, calib: list[np.ndarray], out: Path) -> None:
    import onnx  # noqa: PLC0415 (heavy)
    from onnxruntime.quantization import (  # noqa: PLC0415 (heavy)
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process  # noqa: PLC0415

    name = onnx.load(str(onnx_f32)).graph.input[0].name

    class Frames(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter({name: x} for x in calib)

        def get_next(self):
            return next(self.items, None)

    pre = out.with_name(out.stem + "-pre.onnx")
    quant_pre_process(str(onnx_f32), str(pre), skip_symbolic_shape=True)
    quantize_static(
        str(pre),
        str(out),
        Frames(),
        quant_format=QuantFormat.QOperator,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
    )


def _openvino_int8(weights: Path, ov_f32: Path, imgsz: int, clips: list[Path]) -> Path:
    rec = pr.read_record(pr.record_path(export_root(weights), imgsz))
    if rec and rec.int8_dir and Path(rec.int8_dir, "model.xml").is_file():
        return Path(rec.int8_dir) / "model.xml"
    calib = q.calibration_from_frames(
        q.footage_frames(clips, q.DEFAULT_IMAGES), imgsz, source="footage"
    )
    return q.quantize_openvino(weights, ov_f32, calib).folder / "model.xml"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", default=str(model("yolov5n.pt")))
    p.add_argument("--imgsz", type=int, default=640)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--frames", type=int, default=32, help="timed frames per round and model")
    p.add_argument("--calibration", type=int, default=100, help="calibration frames")
    args = p.parse_args(argv)
    logging.getLogger("nncf").setLevel(logging.WARNING)
    from detectors.loading import load_model  # noqa: PLC0415 (imports torch)

    # the file the detector exports from (a legacy YOLOv5 checkpoint is converted into the cache)
    weights, imgsz = Path(load_model(args.weights, device="cpu").ckpt_path), args.imgsz
    clips = sorted((assets_dir() / "footage").glob("*.mp4"))

    def inputs(n: int, phase: float) -> list[np.ndarray]:
        canvases = q.letterbox_frames(q.footage_frames(clips, n, phase=phase), imgsz)
        return [x[None] if x.ndim == 3 else x for x in q._calibration_items(canvases)]

    calib, frames = inputs(args.calibration, 0.0), inputs(args.frames, 0.5)
    onnx_f32 = exported_model(weights, "onnx", imgsz=imgsz)
    ov_f32 = exported_model(weights, "openvino", imgsz=imgsz)
    runs: dict[str, Run] = {}
    with tempfile.TemporaryDirectory(prefix="vigil-onnx-int8-") as tmp:
        nncf_int8, ort_int8 = Path(tmp, "nncf-int8.onnx"), Path(tmp, "ort-int8.onnx")
        for label, make, out in (
            ("NNCF (QDQ, mixed)", _nncf_onnx_int8, nncf_int8),
            ("quantize_static (QOperator, per-channel)", _ort_static_int8, ort_int8),
        ):
            t0 = time.perf_counter()
            make(onnx_f32, calib, out)
            print(f"ONNX INT8 by {label}: {time.perf_counter() - t0:.0f} s")
        runs["onnxruntime f32"] = _onnx_runner(onnx_f32)
        runs["onnxruntime int8 (NNCF QDQ)"] = _onnx_runner(nncf_int8)
        runs["onnxruntime int8 (quantize_static QOperator)"] = _onnx_runner(ort_int8)
        runs["openvino f32"] = _openvino_runner(next(ov_f32.glob("*.xml")))
        runs["openvino int8"] = _openvino_runner(_openvino_int8(weights, ov_f32, imgsz, clips))
        for run in runs.values():  # warm-up
            for x in frames[:4]:
                run(x)
        totals = {k: [0.0, 0.0, 0] for k in runs}
        for _ in range(args.rounds):
            for k, run in runs.items():
                wall, cpu = time.perf_counter(), time.process_time()
                for x in frames:
                    run(x)
                totals[k][0] += time.perf_counter() - wall
                totals[k][1] += time.process_time() - cpu
                totals[k][2] += len(frames)
    base = totals["onnxruntime f32"][0] / totals["onnxruntime f32"][2]
    print(
        f"\nimgsz {imgsz}, batch 1, {args.rounds} rounds x {args.frames} frames, {pr.machine_id()}"
    )
    print("| runtime | wall ms/frame | CPU ms/frame | frames/s | vs ONNX Runtime f32 |")
    print("|---|---|---|---|---|")
    for k, (wall, cpu, n) in totals.items():
        print(
            f"| {k} | {1000 * wall / n:.1f} | {1000 * cpu / n:.1f} | {n / wall:.1f} | "
            f"{base / (wall / n):.2f}x |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
