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
    from ultralytics.utils import YAML, IterableSimpleNamespace
    from ultralytics.utils.checks import check_yaml

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
            from ultralytics.trackers.bot_sort import BOTSORT
            from ultralytics.trackers.byte_tracker import BYTETracker

            cls = BYTETracker if self.kind == "bytetrack" else BOTSORT
            tracker = cls(args=_tracker_args(self.kind, frame_rate, self.buffer_s))
            self._trackers[stream] = tracker
        return tracker

    def drop(self, stream: str) -> None:
        self._trackers.pop(stream, None)

    def apply(self, stream: str, result, frame_rate: float):
        """Return ``result`` restricted to confirmed tracks, with their ids in ``boxes.id``."""
        tracker = self._get(stream, frame_rate)
        boxes = result.boxes
        tracks = tracker.update(boxes.cpu().numpy(), result.orig_img)
        if len(tracks) == 0:
            # Nothing confirmed yet: show no box rather than boxes without ids that would appear
            # a frame later with one.
            return result[:0]
        keep = tracks[:, -1].astype(int)  # index of the detection each track matched
        tracked = result[keep]
        tracked.update(
            boxes=torch.as_tensor(
                np.asarray(tracks[:, :-1], dtype=np.float32), device=boxes.data.device
            )
        )
        return tracked
