"""The ``openvino`` backend (CPU): one static-shape model compiled per input shape (kept in a
small LRU), uint8 BGR input converted inside the graph, batches run as parallel single-frame
requests in the background (see :class:`OpenVinoBackend`)."""

from __future__ import annotations

import collections
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from detectors.backends.base import Backend, BackendError, as_output, check_precision
from detectors.precision_record import resolve

if TYPE_CHECKING:
    import torch

    from detectors.preprocess import Letterboxer


class _Running:
    """A batch in flight on OpenVINO's request queue."""

    __slots__ = ("done", "error", "left", "lock", "out", "room", "spare")

    def __init__(self, out: list, streams: int) -> None:
        self.out = out
        self.left = len(out)
        self.lock = threading.Lock()
        self.done = threading.Event()
        # set once a stream has nothing left of this batch: the next batch can start there
        self.room = threading.Event()
        self.spare = max(0, streams - 1)
        if self.left <= self.spare:
            self.room.set()
        self.error: str | None = None


def anchors_last(model) -> bool:
    """Whether the model's output is ``(1, 4 + classes, anchors)``, the raw head NMS reads.
    End-to-end models (YOLOv10, YOLO26: ``(1, 300, 6)``, already suppressed) are not."""
    shape = model.output(0).get_partial_shape()
    if not shape.is_static or len(shape) != 3:
        return False
    _, channels, anchors = shape.to_shape()
    return channels > 4 and anchors != 6 and anchors > channels


def _stack_candidates(outs: list[np.ndarray]) -> np.ndarray:
    """Per-frame ``(C, n_i)`` candidates -> ``(B, C, max n_i)``, padded with zero scores (never
    above a threshold, so NMS ignores the padding)."""
    if len({o.shape[1] for o in outs}) == 1:
        return np.stack(outs)
    batch = np.zeros((len(outs), outs[0].shape[0], max(o.shape[1] for o in outs)), np.float32)
    for i, o in enumerate(outs):
        batch[i, :, : o.shape[1]] = o
    return batch


class OpenVinoBackend(Backend):
    """OpenVINO on CPU. A batch runs in throughput mode, as parallel single-frame requests on
    the plugin's streams (2 on a 2-core machine): that kept the cores busier than one batched
    request in latency mode (20-35 % more frames/s in our measurements). A lone frame runs in
    latency mode (all cores on one request). :meth:`start` only queues the requests (enough of
    them for two batches), so the next batch runs while the worker finishes the previous one."""

    key = "openvino"
    # f32 gives PyTorch's detections; bf16 (opt-in) moves boxes by about a pixel; int8 runs the
    # model `vigil models quantize` made, once it passed the accuracy gate (else f32)
    precisions = {"cpu": ("f32", "bf16", "int8")}
    export_format = "openvino"
    auto_rank = 20  # first on CPU when installed (vigil bench, BENCHMARKS.md)
    requires = "openvino"
    install_hint = "pip install openvino"
    MAX_SHAPES = 8
    FINISH_TIMEOUT_S = 60.0

    @classmethod
    def runs(cls, requested: str | None, device: str) -> str:
        """``auto`` stays ``auto``: the fastest precision the accuracy gate passed for these
        weights on this CPU, looked up when the model loads (:func:`resolve`); unset is f32."""
        if requested == "auto":
            check_precision(cls.key, cls.precisions, None, device)  # the device, at least
            return "auto"
        return check_precision(cls.key, cls.precisions, requested, device)

    @classmethod
    def load(cls, source: Path, config, device: str, precision: str) -> OpenVinoBackend:
        return cls(source, max_batch=config.max_batch, precision=precision, min_score=config.conf)

    def __init__(
        self,
        folder: Path,
        threads: int = 0,
        max_batch: int = 8,
        precision: str = "f32",
        min_score: float | None = None,
    ) -> None:
        super().__init__("cpu")
        import openvino as ov  # noqa: PLC0415 (heavy: loaded only when this backend is used)

        self.requested_precision = precision
        # int8 / auto: the INT8 model or hint that passed the accuracy gate here, else f32
        folder, precision, self.model_precision = resolve(Path(folder), precision)
        self._ov = ov
        self._core = ov.Core()
        xml = next(Path(folder).glob("*.xml"), None)
        if xml is None:
            raise BackendError(f"no OpenVINO model (.xml) in {folder}")
        self._model = self._core.read_model(str(xml))
        # f32 unless asked: on CPUs with bf16 units OpenVINO would default to bfloat16, which
        # moves small boxes by about a pixel (not PyTorch's detections within the tolerance)
        self._config: dict[str, Any] = {
            "PERFORMANCE_HINT": "THROUGHPUT",
            "INFERENCE_PRECISION_HINT": precision,
        }
        self.precision = self.model_precision  # what runs: f32, bf16 or int8
        if threads:
            self._config["INFERENCE_NUM_THREADS"] = threads
        self._queues: collections.OrderedDict[tuple, Any] = collections.OrderedDict()
        self._max_batch = max(1, int(max_batch))
        self._min_score = min_score
        self.source = str(folder)

    def _compiled(self, hw: tuple[int, int], hint: str) -> tuple[Any, tuple[int, ...], int]:
        """``(async queue or request, output shape, jobs)`` for input size ``hw`` (cached)."""
        key = (*hw, hint)
        entry = self._queues.get(key)
        if entry is not None:
            self._queues.move_to_end(key)
            return entry
        model = self._model.clone()
        model.reshape({model.inputs[0].get_any_name(): [1, 3, *hw]})
        model = self._uint8_bgr_input(model)
        if self._min_score is not None and anchors_last(model):
            model = self._with_best_score(model)
        compiled = self._core.compile_model(
            model, "CPU", {**self._config, "PERFORMANCE_HINT": hint}
        )
        shape = tuple(compiled.output(0).get_shape())
        if hint == "LATENCY":
            entry = (compiled.create_infer_request(), shape, 1)
        else:
            streams = max(1, int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")))
            jobs = max(streams, 2 * self._max_batch)  # two batches queued: start() never blocks
            queue = self._ov.AsyncInferQueue(compiled, jobs)
            queue.set_callback(self._done)
            entry = (queue, shape, streams)
        self._queues[key] = entry
        if len(self._queues) > self.MAX_SHAPES:
            self._queues.popitem(last=False)
        return entry

    def _uint8_bgr_input(self, model):
        """The letterbox canvas goes in as it is (uint8 BGR, NHWC): OpenVINO converts it to
        RGB floats in [0, 1] inside the compiled graph. That skips a float copy of every frame
        in Python (4x the bytes) and measured ~3 % less CPU per frame than float input; the
        outputs differ from float input by float rounding only (<= 1e-3 px)."""
        from openvino.preprocess import ColorFormat, PrePostProcessor  # noqa: PLC0415 (heavy: openvino)

        ov = self._ov
        ppp = PrePostProcessor(model)
        tensor = ppp.input().tensor()
        tensor.set_element_type(ov.Type.u8).set_layout(ov.Layout("NHWC"))
        tensor.set_color_format(ColorFormat.BGR)
        ppp.input().model().set_layout(ov.Layout("NCHW"))
        steps = ppp.input().preprocess()
        steps.convert_element_type(ov.Type.f32).convert_color(ColorFormat.RGB).scale(255.0)
        return ppp.build()

    def _with_best_score(self, model):
        """A second output: every anchor's best class score, computed inside the graph.

        Only anchors whose best score is above the detector's confidence threshold leave
        OpenVINO (:meth:`_kept`): exactly the candidates NMS starts from (ultralytics keeps an
        anchor when its best class score is ``> conf``, and the order is kept), so the result
        is the same, without copying the whole ``(4 + classes) x anchors`` output of every
        frame (5 MB at 640x384) and taking its maximum in Python."""
        from openvino import opset13 as ops  # noqa: PLC0415 (heavy: openvino)

        out = model.get_results()[0].input_value(0)
        scores = ops.slice(out, [4], [np.iinfo(np.int64).max], [1], [1])
        model.add_results([ops.result(ops.reduce_max(scores, [1], False))])
        return model

    def _kept(self, request) -> np.ndarray:
        """``(4 + classes, candidates)`` of one finished request (a copy: the request's
        buffers are reused)."""
        out = request.get_output_tensor(0).data[0]
        if self._min_score is None or len(request.model_outputs) < 2:
            return out.copy()
        best = request.get_output_tensor(1).data[0]
        return out[:, np.flatnonzero(best > self._min_score)]

    def prepare(self, canvas: np.ndarray, boxer: Letterboxer) -> np.ndarray:
        return canvas  # see _uint8_bgr_input

    def _done(self, request, userdata: tuple[_Running, int]) -> None:
        running, index = userdata
        try:
            running.out[index] = self._kept(request)
        except Exception as e:  # reported by finish(), on the worker's thread
            running.error = f"{type(e).__name__}: {e}"
        with running.lock:
            running.left -= 1
            if running.left <= running.spare:
                running.room.set()
            if running.left == 0:
                running.done.set()

    def start(self, x: np.ndarray) -> _Running | np.ndarray:
        """``x``: a letterbox canvas, ``(B, H, W, 3)`` uint8 BGR."""
        hw = (int(x.shape[1]), int(x.shape[2]))
        if x.shape[0] == 1:
            req, _, _ = self._compiled(hw, "LATENCY")
            req.infer({0: x}, share_inputs=True, share_outputs=True)
            return self._kept(req)[None]
        queue, _, streams = self._compiled(hw, "THROUGHPUT")
        running = _Running([None] * x.shape[0], streams)
        for i in range(x.shape[0]):
            queue.start_async({0: x[i : i + 1]}, userdata=(running, i), share_inputs=True)
        return running

    def wait(self, handle: _Running | np.ndarray, timeout_s: float) -> bool:
        return handle.room.wait(timeout_s) if isinstance(handle, _Running) else True

    def finish(self, handle: _Running | np.ndarray) -> torch.Tensor:
        if isinstance(handle, _Running):
            if not handle.done.wait(self.FINISH_TIMEOUT_S):
                raise RuntimeError(
                    f"OpenVINO inference did not finish in {self.FINISH_TIMEOUT_S:g} s"
                )
            if handle.error:
                raise RuntimeError(f"OpenVINO inference failed: {handle.error}")
            handle = _stack_candidates(handle.out)
        return as_output(handle)

    def run(self, x: np.ndarray) -> torch.Tensor:
        return self.finish(self.start(x))
