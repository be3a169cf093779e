"""Batched object detection on BGR frames, returning library-independent :class:`Detection` s."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from detectors.backends import (
    ULTRALYTICS_PRECISIONS,
    Backend,
    check_precision,
    choose_backend,
    create_backend,
)
from detectors.config import DetectorConfig
from detectors.loading import (
    WeightsError,
    file_sha256,
    load_model,
    precision_kwargs,
    resolve_weights,
    select_device,
)
from detectors.preprocess import Letterboxer, Placement, scale_boxes
from detectors.stream_trackers import StreamTrackers
from detectors.types import Detection

MAX_DET = 300  # ultralytics' default per image


def resolve_classes(classes: Sequence[str | int] | None, names: dict[int, str]) -> list[int] | None:
    """Class filter as ids; accepts labels (case-insensitive) or ids, rejects unknown ones clearly."""
    if not classes:
        return None
    by_label = {label.lower(): i for i, label in names.items()}
    ids: list[int] = []
    for c in classes:
        if isinstance(c, int) or (isinstance(c, str) and c.strip().isdigit()):
            i = int(c)
            if i not in names:
                raise WeightsError(f"class id {i} is not in the model (valid ids: 0-{max(names)})")
        else:
            i = by_label.get(str(c).strip().lower(), -1)
            if i < 0:
                valid = ", ".join(names[k] for k in sorted(names))
                raise WeightsError(f"unknown class {c!r} for this model; valid names: {valid}")
        if i not in ids:
            ids.append(i)
    return ids


def _model_name(source: Path | str) -> str:
    name = Path(str(source).rstrip("/")).name
    for suffix in (".pt", ".onnx", ".engine", ".torchscript", ".tflite", ".xml", "_openvino_model"):
        name = name.removesuffix(suffix)
    return name or str(source)


@dataclass(slots=True, eq=False)
class Submitted:
    """A batch started by :meth:`Detector.submit`, to hand to :meth:`Detector.collect`."""

    slot: int
    handle: Any
    places: list[Placement]


class Detector:
    """One loaded model plus the thresholds from :class:`DetectorConfig`.

    With PyTorch weights, a batch runs through :mod:`detectors.backends` (``detector.backend``:
    torch, onnxruntime, openvino, tensorrt): one letterboxed canvas for the whole batch
    (:mod:`detectors.preprocess`), one forward pass, ultralytics' NMS, boxes scaled back per frame.
    Already exported weights run through ultralytics' ``predict`` (backend ``ultralytics``).
    ``detect`` holds a lock around a batch (reused buffers, predictor state); one detection thread
    is the intended use.
    """

    def __init__(self, config: DetectorConfig | None = None, *, warmup: bool = True) -> None:
        self.config = config or DetectorConfig()
        self.device = select_device(self.config.device)
        source = resolve_weights(self.config.weights)
        self.model = load_model(self.config.weights, self.device)
        self.name = _model_name(source)
        if isinstance(source, Path) and source.is_file():
            self.version = file_sha256(source)[:12]
        else:
            import ultralytics  # noqa: PLC0415 (heavy: only for its version, when not loaded yet)

            self.version = f"ultralytics-{ultralytics.__version__}"
        self.names: dict[int, str] = {int(k): str(v) for k, v in dict(self.model.names).items()}
        self.classes = resolve_classes(self.config.classes, self.names)
        self._lock = threading.Lock()
        native = isinstance(getattr(self.model, "model", None), torch.nn.Module)
        precision = self.config.precision
        self.backend_name = choose_backend(self.config.backend, self.device, native, precision)
        self.backend: Backend | None = None
        if self.backend_name == "ultralytics":
            runs = check_precision("ultralytics", ULTRALYTICS_PRECISIONS, precision, self.device)
            self.half = runs == "f16"
        else:
            self.backend = create_backend(self.backend_name, self.model, self.config, self.device)
            self.half = self.backend.half
        self._precision = precision_kwargs(self.half)
        if self.backend is not None:
            stride = int(max(getattr(self.model.model, "stride", torch.tensor([32.0])).tolist()))
            # two: a batch can be letterboxed while the previous one still runs (submit/collect)
            self._boxers = [
                Letterboxer(self.config.imgsz, max(stride, 32), True, self.backend.allocator())
                for _ in range(2)
            ]
            self._in_flight: list[Submitted | None] = [None, None]
            self._next_slot = 0
        self.trackers = (
            StreamTrackers(self.config.tracker, self.config.track_buffer_s)
            if self.config.tracker != "none"
            else None
        )
        if warmup:
            try:
                self.detect([np.zeros((self.config.imgsz, self.config.imgsz, 3), np.uint8)])
            except (RuntimeError, ValueError, TypeError, OSError) as e:
                msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                raise WeightsError(f"cannot run weights {source}: {msg}") from None

    def detect(
        self,
        frames: list[np.ndarray],
        streams: Sequence[str] | None = None,
        frame_rates: Sequence[float] | None = None,
        raw_out: list[np.ndarray] | None = None,
    ) -> list[list[Detection]]:
        """Detections per frame (BGR ``HxWx3`` uint8), boxes normalised to [0, 1].

        Batches of up to ``max_batch`` frames go through one forward pass. With ``streams``
        (one camera id per frame, frames of a camera in order) and tracking on, each detection
        carries that camera's track id. ``raw_out`` receives each frame's untracked detections
        (``(n, 6)`` pixel ``x1, y1, x2, y2, conf, class``), which :meth:`finish` can track again
        (motion gating re-feeds them to the tracker for frames it skips).
        """
        if not frames:
            return []
        for i, f in enumerate(frames):
            if not isinstance(f, np.ndarray) or f.ndim != 3 or f.shape[2] != 3:
                shape = getattr(f, "shape", type(f).__name__)
                raise ValueError(f"frame {i} must be a BGR HxWx3 array, got {shape}")
        step = self.config.max_batch
        out: list[list[Detection]] = []
        for start in range(0, len(frames), step):
            if self.backend is not None:
                out.extend(
                    self._detect_batch(
                        frames[start : start + step], start, streams, frame_rates, raw_out
                    )
                )
                continue
            results = self._predict(frames[start : start + step])
            if raw_out is not None:
                raw_out.extend(r.boxes.data.float().cpu().numpy()[:, :6] for r in results)
            if streams is not None and self.trackers is not None:
                for k, result in enumerate(results, start):
                    rate = frame_rates[k] if frame_rates is not None else 10.0
                    results[k - start] = self.trackers.apply(streams[k], result, rate)
            out.extend(self._convert(r) for r in results)
        return out

    def _detect_batch(self, frames, offset, streams, frame_rates, raw_out) -> list[list[Detection]]:
        boxes = self.infer(frames)
        if raw_out is not None:
            raw_out.extend(boxes)
        out = []
        for k, (frame, b) in enumerate(zip(frames, boxes, strict=True), offset):
            stream = streams[k] if streams is not None else None
            rate = frame_rates[k] if frame_rates is not None else 10.0
            out.append(self.finish(frame, b, stream, rate))
        return out

    def finish(
        self,
        frame: np.ndarray,
        boxes: np.ndarray,
        stream: str | None = None,
        frame_rate: float = 10.0,
        trackers: StreamTrackers | None = None,
    ) -> list[Detection]:
        """:meth:`infer` output of one frame -> Detections, tracked when ``stream`` is given
        (with ``trackers``, default the detector's own)."""
        trackers = trackers or self.trackers
        if stream is None or trackers is None:
            return self._from_array(boxes, frame.shape)
        tracks = trackers.track(stream, boxes, frame, frame_rate)
        return self._from_array(tracks[:, [0, 1, 2, 3, 5, 6]], frame.shape, tracks[:, 4])

    def infer(self, frames: Sequence[np.ndarray]) -> list[np.ndarray]:
        """One batch through the backend: per frame an ``(n, 6)`` float32 array of
        ``x1, y1, x2, y2, confidence, class`` in the frame's own pixels (no tracking)."""
        return self.collect(self.submit(frames))

    @property
    def overlaps(self) -> bool:
        """Whether a submitted batch runs in the background (a backend of
        :mod:`detectors.backends`): the worker then post-processes the previous batch meanwhile.
        On the ultralytics path :meth:`submit` runs the batch before it returns."""
        return self.backend is not None

    def submit(self, frames: Sequence[np.ndarray]) -> Submitted:
        """Letterbox a batch (at most ``max_batch`` frames) and start it on the backend.

        At most two batches are in flight: :meth:`collect` the older one before the third
        submit. The worker submits the next batch and then post-processes the previous one,
        so the backend computes while Python does NMS, tracking and publishing.
        """
        if len(frames) > self.config.max_batch:
            raise ValueError(f"{len(frames)} frames > max_batch {self.config.max_batch}")
        if self.backend is None:  # ultralytics predict: synchronous, the result is the handle
            results = self._predict(list(frames))
            return Submitted(-1, [r.boxes.data.float().cpu().numpy()[:, :6] for r in results], [])
        with self._lock:
            free = [s for s in (self._next_slot, 1 - self._next_slot) if not self._in_flight[s]]
            if not free:
                raise RuntimeError("two batches in flight already: collect() one first")
            slot = free[0]
            boxer = self._boxers[slot]
            canvas, places = boxer.letterbox(frames)
            handle = self.backend.start(self.backend.prepare(canvas, boxer))
            job = Submitted(slot, handle, places)
            self._in_flight[slot] = job
            self._next_slot = 1 - slot
        return job

    def wait(self, job: Submitted, timeout_s: float = 60.0) -> bool:
        """Block until the backend can start another batch at once next to ``job`` (OpenVINO:
        one of its streams is done with ``job``); False on timeout. The worker takes its next
        frames only then: the freshest frames the detector can start on without a queue, and
        no stream idles while the last frames of ``job`` finish.
        """
        if self.backend is None:
            return True
        return self.backend.wait(job.handle, timeout_s)

    def collect(self, job: Submitted) -> list[np.ndarray]:
        """Wait for a submitted batch; per frame an ``(n, 6)`` array like :meth:`infer`."""
        from ultralytics.utils.nms import non_max_suppression  # noqa: PLC0415 (heavy: torch + ultralytics)

        if self.backend is None:
            return job.handle
        with self._lock:
            if self._in_flight[job.slot] is not job:
                raise RuntimeError("this batch was collected already")
            try:
                pred = self.backend.finish(job.handle)
                dets = non_max_suppression(
                    pred, self.config.conf, self.config.iou, self.classes, max_det=MAX_DET
                )
            finally:
                self._in_flight[job.slot] = None
            counts = [len(d) for d in dets]
            flat = torch.cat(dets).float().cpu().numpy() if sum(counts) else None  # one sync
        out = []
        start = 0
        for n, place in zip(counts, job.places, strict=True):
            if not n:
                out.append(np.zeros((0, 6), np.float32))
                continue
            b = flat[start : start + n].copy()
            start += n
            scale_boxes(b, place)
            out.append(b)
        return out

    def _from_array(
        self, boxes: np.ndarray, shape: tuple[int, ...], track_ids: np.ndarray | None = None
    ) -> list[Detection]:
        h, w = shape[:2]
        ids = track_ids.astype(int).tolist() if track_ids is not None else [None] * len(boxes)
        dets = []
        for (x1, y1, x2, y2, p, c), tid in zip(boxes.tolist(), ids, strict=True):
            c = int(c)
            dets.append(
                Detection(
                    class_id=c,
                    label=self.names.get(c, str(c)),
                    confidence=float(p),
                    box=(
                        min(max(x1 / w, 0.0), 1.0),
                        min(max(y1 / h, 0.0), 1.0),
                        min(max(x2 / w, 0.0), 1.0),
                        min(max(y2 / h, 0.0), 1.0),
                    ),
                    track_id=tid,
                )
            )
        return dets

    def _predict(self, frames: list[np.ndarray]) -> list:
        with self._lock:
            results = self.model.predict(
                list(frames),
                imgsz=self.config.imgsz,
                conf=self.config.conf,
                iou=self.config.iou,
                classes=self.classes,
                device=self.device,
                verbose=False,
                **self._precision,
            )
        return list(results)

    def _convert(self, result) -> list[Detection]:
        boxes = result.boxes
        if boxes is None or len(boxes) == 0:
            return []
        xyxyn = np.clip(boxes.xyxyn.cpu().numpy().astype(float), 0.0, 1.0)
        confs = boxes.conf.cpu().numpy().astype(float)
        cls = boxes.cls.cpu().numpy().astype(int)
        ids = boxes.id.cpu().numpy().astype(int) if boxes.id is not None else None
        return [
            Detection(
                class_id=int(c),
                label=self.names.get(int(c), str(int(c))),
                confidence=float(p),
                box=(float(b[0]), float(b[1]), float(b[2]), float(b[3])),
                track_id=int(ids[k]) if ids is not None else None,
            )
            for k, (b, p, c) in enumerate(zip(xyxyn, confs, cls, strict=True))
        ]
