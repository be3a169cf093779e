"""Inference backends for the batched detector: PyTorch, ONNX Runtime, OpenVINO, TensorRT.

Each backend runs the *same* network on a letterboxed batch and returns the raw head output
``(batch, 4 + nc, anchors)`` as a torch tensor; the detector does NMS and box scaling itself, so
every backend gives the same detections (tests/test_backends.py checks it on the footage).

* ``torch``: the ultralytics ``nn.Module`` itself (conv+bn fused). On CUDA: half precision, a
  pinned host buffer for the uint8 canvas, colour/scale on the GPU, one synchronisation per batch
  (when the detections are copied back).
* ``onnxruntime`` / ``openvino`` (CPU): exported with ultralytics' own exporter (dynamic shapes),
  cached next to the weights in ``<stem>.exports/<format>-<imgsz>-<precision>-b<batch>/`` with a
  ``vigil-export.json`` that records the weights' sha256; a different sha256 (new weights), a
  different ultralytics version or exporter settings trigger a fresh export. OpenVINO compiles
  one static-shape model per input shape it sees (about 0.1 s each, kept in a small LRU): static
  shapes run about 10 % faster than the dynamic model on CPU.
* ``tensorrt`` (NVIDIA): an fp16 engine with a dynamic batch up to ``max_batch``, run through
  ultralytics' ``AutoBackend``.

``backend: auto`` takes the first available of ``tensorrt, torch`` on CUDA and
``openvino, onnxruntime, torch`` on CPU, the order measured by ``vigil bench`` (BENCHMARKS.md).
Weights that are already an exported file (``.onnx``, ``*_openvino_model/``, ``.engine``) run
through ultralytics' ``predict`` (backend ``ultralytics``).
"""

from __future__ import annotations

import collections
import contextlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
import threading
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from detectors.loading import WeightsError, file_sha256
from detectors.preprocess import Allocator, Letterboxer

log = logging.getLogger(__name__)

BACKENDS = ("torch", "onnxruntime", "openvino", "tensorrt")
CHOICES = ("auto", *BACKENDS, "ultralytics")
AUTO_ORDER = {"cuda": ("tensorrt", "torch"), "cpu": ("openvino", "onnxruntime", "torch")}
#: Bump when the export settings below change, so cached exports are rebuilt.
EXPORT_VERSION = 1
EXPORT_FORMATS = {"onnxruntime": "onnx", "openvino": "openvino", "tensorrt": "engine"}
_INSTALL_HINT = {
    "onnxruntime": "pip install onnxruntime",
    "openvino": "pip install openvino",
    "tensorrt": "install TensorRT for your CUDA version (pip install tensorrt)",
}
_MODULE = {"onnxruntime": "onnxruntime", "openvino": "openvino", "tensorrt": "tensorrt"}


class BackendError(WeightsError):
    """A backend that cannot be used here; the message says why and how to get it."""


# -- choosing ------------------------------------------------------------------------------------


def backend_unavailable(name: str, device: str) -> str | None:
    """Why ``name`` cannot run on ``device`` (None when it can)."""
    cuda = device.startswith("cuda")
    if name == "torch":
        return None
    if name == "tensorrt" and not cuda:
        return "TensorRT needs an NVIDIA GPU (device cuda)"
    if name in ("onnxruntime", "openvino") and device != "cpu":
        return f"Vigil runs {name} on the CPU only; use device: cpu (or backend: torch/tensorrt)"
    if importlib.util.find_spec(_MODULE[name]) is None:
        return f"{name} is not installed ({_INSTALL_HINT[name]})"
    return None


def available_backends(device: str) -> list[str]:
    return [b for b in BACKENDS if backend_unavailable(b, device) is None]


def choose_backend(requested: str, device: str, native_weights: bool) -> str:
    """The backend to use for ``requested`` (``auto`` or a name); ``BackendError`` if impossible.

    ``native_weights``: the weights are a PyTorch checkpoint (not an already exported file).
    """
    requested = (requested or "auto").lower()
    if requested not in CHOICES:
        raise BackendError(f"unknown backend {requested!r}; use one of {', '.join(CHOICES)}")
    if requested == "ultralytics":
        return requested
    if not native_weights:
        if requested == "auto":
            return "ultralytics"
        raise BackendError(
            f"backend {requested!r} needs PyTorch (.pt) weights; these are already exported, "
            "use backend: auto (runs them through ultralytics) or give the .pt file"
        )
    if requested == "auto":
        kind = "cuda" if device.startswith("cuda") else "cpu"
        for name in AUTO_ORDER[kind]:
            if backend_unavailable(name, device) is None:
                return name
        return "torch"
    why = backend_unavailable(requested, device)
    if why:
        raise BackendError(f"backend {requested!r} cannot be used: {why}")
    return requested


# -- export cache --------------------------------------------------------------------------------


def _writable(folder: Path) -> bool:
    return folder.is_dir() and os.access(folder, os.W_OK | os.X_OK)


def export_root(weights: Path) -> Path:
    """``<weights dir>/<stem>.exports``, or a per-sha256 folder in the cache when read-only."""
    if _writable(weights.parent):
        return weights.parent / f"{weights.stem}.exports"
    from detectors.loading import cache_dir

    return cache_dir() / "exports" / file_sha256(weights)[:16]


def _export_meta(weights: Path, fmt: str, imgsz: int, half: bool, batch: int) -> dict[str, Any]:
    import ultralytics

    return {
        "vigil_export": EXPORT_VERSION,
        "weights_sha256": file_sha256(weights),
        "format": fmt,
        "imgsz": imgsz,
        "half": half,
        "batch": batch,
        "dynamic": True,
        "ultralytics": ultralytics.__version__,
    }


def _artifact(folder: Path, stem: str, fmt: str) -> Path:
    if fmt == "openvino":
        return folder / f"{stem}_openvino_model"
    return folder / f"{stem}.{'engine' if fmt == 'engine' else 'onnx'}"


def exported_model(
    weights: Path, fmt: str, *, imgsz: int, half: bool = False, batch: int = 1, device: str = "cpu"
) -> Path:
    """The exported model for ``weights`` (exporting it now if the cache is missing or stale)."""
    weights = Path(weights)
    if fmt != "engine":
        batch = 1  # ONNX / OpenVINO exports have a dynamic batch: one file serves every size
    meta = _export_meta(weights, fmt, imgsz, half, batch)
    folder = export_root(weights) / f"{fmt}-{imgsz}-{'fp16' if half else 'fp32'}-b{batch}"
    artifact = _artifact(folder, weights.stem, fmt)
    sidecar = folder / "vigil-export.json"
    with contextlib.suppress(OSError, ValueError):
        if artifact.exists() and json.loads(sidecar.read_text()) == meta:
            return artifact
    folder.parent.mkdir(parents=True, exist_ok=True)
    log.info("exporting %s to %s (imgsz %d, batch %d) -> %s", weights, fmt, imgsz, batch, folder)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        src = tmp / weights.name
        shutil.copy2(weights, src)  # ultralytics writes its output next to the file it loads
        _run_export(src, fmt, imgsz=imgsz, half=half, batch=batch, device=device)
        src.unlink()
        (tmp / "vigil-export.json").write_text(json.dumps(meta, indent=1))
        old = folder.with_name(folder.name + f".old-{os.getpid()}")
        if folder.exists():
            folder.rename(old)
        try:
            tmp.rename(folder)
        except OSError:  # another process finished the same export first: use theirs
            if not folder.exists():
                raise
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if not artifact.exists():
        raise BackendError(f"export to {fmt} produced no {artifact.name} in {folder}")
    return artifact


def _run_export(src: Path, fmt: str, *, imgsz: int, half: bool, batch: int, device: str) -> None:
    from detectors.engine import _precision_kwargs
    from detectors.loading import _open

    model = _open(src, str(src))
    kw: dict[str, Any] = dict(format=fmt, imgsz=imgsz, dynamic=True, batch=batch, verbose=False)
    kw["device"] = "cpu" if fmt in ("onnx", "openvino") else device
    if fmt == "onnx":
        kw["simplify"] = False  # onnxslim is optional; ONNX Runtime optimises the graph itself
    kw.update(_precision_kwargs(half))
    from ultralytics.utils import LOGGER

    level = LOGGER.level
    LOGGER.setLevel(logging.WARNING)  # the exporter prints a banner and usage hints
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit.trace deprecation
            model.export(**kw)
    except Exception as e:  # the exporter raises anything from its toolchains
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise BackendError(f"cannot export {src.name} to {fmt}: {msg}") from None
    finally:
        LOGGER.setLevel(level)


# -- backends ------------------------------------------------------------------------------------


def _as_output(y: Any) -> torch.Tensor:
    """The ``(B, 4 + nc, N)`` prediction out of whatever a model returns."""
    while isinstance(y, (list, tuple)):
        y = y[0]
    if isinstance(y, dict):
        y = next(iter(y.values()))
    return torch.from_numpy(y) if isinstance(y, np.ndarray) else y


class Backend:
    """Runs the network on letterboxed uint8 batches; see the module docstring."""

    name = "?"

    def __init__(self, device: str, half: bool = False) -> None:
        self.device = device
        self.half = half
        self.source = ""  # what was loaded (for logs and the bench)

    def allocator(self) -> Allocator | None:
        """How the letterbox canvas is allocated (pinned memory for a CUDA upload)."""
        return None

    def prepare(self, canvas: np.ndarray, boxer: Letterboxer) -> Any:
        return boxer.to_input(canvas)

    def run(self, x: Any) -> torch.Tensor:
        raise NotImplementedError

    def start(self, x: Any) -> Any:
        """Begin running a prepared batch; :meth:`finish` returns its output. The worker starts
        the next batch before it post-processes the previous one, so backends that can run in
        the background (OpenVINO) keep the cores busy meanwhile. ``x`` must stay untouched
        until then. Default: run now."""
        return self.run(x)

    def wait(self, handle: Any, timeout_s: float) -> bool:
        """Block until the backend has room for another batch next to ``handle`` (one of its
        streams has nothing left of it); False on timeout. Default: at once (synchronous)."""
        return True

    def finish(self, handle: Any) -> torch.Tensor:
        return _as_output(handle)


class TorchBackend(Backend):
    name = "torch"

    def __init__(self, model, device: str, half: bool = False) -> None:
        super().__init__(device, half and device.startswith("cuda"))
        net = model.model
        if not isinstance(net, torch.nn.Module):
            raise BackendError("backend torch needs PyTorch (.pt) weights")
        if hasattr(net, "fuse"):
            net = net.fuse(verbose=False) if _takes_verbose(net.fuse) else net.fuse()
        net = net.to(device).eval()
        for p in net.parameters():
            p.requires_grad_(False)
        self.net = net.half() if self.half else net.float()
        self.source = f"{getattr(model, 'ckpt_path', '') or 'in-memory model'}"
        self._cuda = device.startswith("cuda")
        self._pinned: dict[int, torch.Tensor] = {}  # data pointer -> pinned letterbox buffer

    def allocator(self) -> Allocator | None:
        if not self._cuda:
            return None

        def pinned(n: int) -> np.ndarray:
            buf = torch.empty(n, dtype=torch.uint8, pin_memory=True)
            self._pinned[buf.data_ptr()] = buf
            return buf.numpy()

        return pinned

    def prepare(self, canvas: np.ndarray, boxer: Letterboxer) -> torch.Tensor:
        if not self._cuda:
            return torch.from_numpy(boxer.to_input(canvas))
        # uint8 upload from pinned memory (4x fewer bytes than float), then colour/scale on GPU
        src = torch.from_numpy(canvas)
        pinned = self._pinned.get(canvas.ctypes.data)
        if pinned is not None:
            src = pinned[: canvas.size].view(canvas.shape)  # the pinned tensor itself
        x = src.to(self.device, non_blocking=True)
        x = x.permute(0, 3, 1, 2).flip(1)
        return (x.half() if self.half else x.float()).mul_(1.0 / 255.0)

    def run(self, x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return _as_output(self.net(x))


def _takes_verbose(fn) -> bool:
    import inspect

    try:
        return "verbose" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"

    def __init__(self, path: Path, threads: int = 0) -> None:
        super().__init__("cpu")
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            so.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.source = str(path)

    def run(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: x})[0]


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

    name = "openvino"
    MAX_SHAPES = 8
    FINISH_TIMEOUT_S = 60.0

    def __init__(
        self,
        folder: Path,
        threads: int = 0,
        max_batch: int = 8,
        precision: str = "f32",
        min_score: float | None = None,
    ) -> None:
        super().__init__("cpu")
        import openvino as ov

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
        self.precision = precision
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
        from openvino.preprocess import ColorFormat, PrePostProcessor

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
        from openvino import opset13 as ops

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
        return _as_output(handle)

    def run(self, x: np.ndarray) -> torch.Tensor:
        return self.finish(self.start(x))


class TensorRTBackend(TorchBackend):
    """TensorRT engine through ultralytics' AutoBackend; input prepared like the CUDA torch path."""

    name = "tensorrt"

    def __init__(self, path: Path, device: str) -> None:
        Backend.__init__(self, device, True)
        from ultralytics.nn.autobackend import AutoBackend

        self.net = AutoBackend(str(path), device=torch.device(device), fp16=True, verbose=False)
        self.source = str(path)
        self._cuda = True
        self._pinned = {}

    def run(self, x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return _as_output(self.net(x))


def create_backend(name: str, model, config, device: str) -> Backend:
    """Build backend ``name`` (already chosen) for an ultralytics ``model`` loaded from a .pt."""
    if name == "torch":
        return TorchBackend(model, device, config.half)
    weights = getattr(model, "ckpt_path", None)
    if not weights or not Path(weights).is_file():
        raise BackendError(f"backend {name!r} needs the weights file to export from")
    fmt = EXPORT_FORMATS[name]
    half = name == "tensorrt"
    batch = config.max_batch
    path = exported_model(
        Path(weights), fmt, imgsz=config.imgsz, half=half, batch=batch, device=device
    )
    if name == "onnxruntime":
        return OnnxRuntimeBackend(path)
    if name == "openvino":
        return OpenVinoBackend(
            path,
            max_batch=config.max_batch,
            precision=getattr(config, "cpu_precision", "f32"),
            min_score=config.conf,
        )
    return TensorRTBackend(path, device)
