"""Stable track ids per camera with ultralytics' own trackers (ByteTrack / BoT-SORT).

Tracking runs in the ingest worker, right after the batched detector call, because that is where
every frame of a camera passes in order; one tracker per camera keeps cameras independent even
though their frames share a batch. Why ultralytics' trackers: Kalman + two-stage association is
well tested there, and the same tracker the user knows from ``model.track`` gives the same ids.
"""

from __future__ import annotations

import numpy as np
import torch

TRACKERS = ("bytetrack", "botsort")


def _tracker_args(kind: str, frame_rate: float, buffer_s: float):
    from ultralytics.utils import YAML, IterableSimpleNamespace  # noqa: PLC0415 (ultralytics: heavy)
    from ultralytics.utils.checks import check_yaml  # noqa: PLC0415 (ultralytics: heavy)

    args = IterableSimpleNamespace(**YAML.load(check_yaml(f"{kind}.yaml")))
    args.track_buffer = max(
        1, int(round(buffer_s * frame_rate))
    )  # lost tracks survive buffer_s seconds
    if kind == "botsort":
        args.with_reid = False  # a ReID model would have to be downloaded
        args.gmc_method = "none"
    return args


class StreamTrackers:
    """One tracker per stream id (camera); ``apply`` rewrites a result to its tracked boxes."""

    def __init__(self, kind: str = "bytetrack", buffer_s: float = 3.0) -> None:
        if kind not in TRACKERS:
            raise ValueError(
                f"unknown tracker {kind!r}; use one of {', '.join(TRACKERS)} or 'none'"
            )
        self.kind = kind
        self.buffer_s = buffer_s
        self._trackers: dict[str, object] = {}

    def _get(self, stream: str, frame_rate: float):
        tracker = self._trackers.get(stream)
        if tracker is None:
            from ultralytics.trackers.bot_sort import BOTSORT  # noqa: PLC0415 (ultralytics: heavy)
            from ultralytics.trackers.byte_tracker import BYTETracker  # noqa: PLC0415 (ultralytics: heavy)

            cls = BYTETracker if self.kind == "bytetrack" else BOTSORT
            tracker = cls(args=_tracker_args(self.kind, frame_rate, self.buffer_s))
            self._trackers[stream] = tracker
        return tracker

    def drop(self, stream: str) -> None:
        self._trackers.pop(stream, None)

    def track(
        self, stream: str, boxes: np.ndarray, frame: np.ndarray | None, frame_rate: float
    ) -> np.ndarray:
        """Track one frame's ``(n, 6)`` ``x1, y1, x2, y2, conf, class`` detections (pixels).

        Returns the confirmed tracks as ``(m, 8)`` ``x1, y1, x2, y2, track id, conf, class,
        detection index``, nothing while no track is confirmed (a box without an id would appear
        a frame later with one).
        """
        tracks = self._get(stream, frame_rate).update(TrackerInput.of(boxes), frame)
        return np.asarray(tracks, dtype=np.float32).reshape(-1, 8)

    def apply(self, stream: str, result, frame_rate: float):
        """Return an ultralytics ``result`` restricted to confirmed tracks, ids in ``boxes.id``."""
        boxes = result.boxes
        tracks = self.track(stream, boxes.data.cpu().numpy()[:, :6], result.orig_img, frame_rate)
        if len(tracks) == 0:
            return result[:0]
        tracked = result[tracks[:, -1].astype(int)]
        tracked.update(boxes=torch.as_tensor(tracks[:, :-1], device=boxes.data.device))
        return tracked


class TrackerInput:
    """What ultralytics' trackers read from a result (``xywh``, ``conf``, ``cls``, boolean
    indexing), straight from a numpy array: building a ``Results`` with torch tensors for every
    frame only to hand the tracker these three arrays cost more than the tracking itself."""

    __slots__ = ("cls", "conf", "xywh")

    def __init__(self, xywh: np.ndarray, conf: np.ndarray, cls: np.ndarray) -> None:
        self.xywh, self.conf, self.cls = xywh, conf, cls

    @classmethod
    def of(cls, boxes: np.ndarray) -> TrackerInput:
        from ultralytics.utils.ops import xyxy2xywh  # noqa: PLC0415 (ultralytics: heavy)

        boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 6)
        return cls(xyxy2xywh(boxes[:, :4]), boxes[:, 4], boxes[:, 5])

    def __len__(self) -> int:
        return len(self.conf)

    def __getitem__(self, index) -> TrackerInput:
        return TrackerInput(self.xywh[index], self.conf[index], self.cls[index])
