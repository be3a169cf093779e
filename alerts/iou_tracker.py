"""A small IoU tracker for detections that arrive without a track id (ingest tracker off).

Greedy matching per class on IoU, highest overlap first with ties broken by list order, so the
same input always gives the same ids. Time is the frames' capture time (``max_age_s`` is in
seconds, not frames, because processed frame rates vary). Ids are negative (-1, -2, ...) so they
never collide with the ingest worker's ByteTrack ids, which are positive.
"""

from __future__ import annotations

from typing import Any

from alerts.events import Det
from pipeline.common.geometry import box_iou

# Per track: [track_id, label, box, last_ts]
_TID, _LABEL, _BOX, _TS = range(4)


class IouTracker:
    def __init__(self, iou_threshold: float = 0.3, max_age_s: float = 5.0):
        self.iou_threshold = iou_threshold
        self.max_age_s = max_age_s
        self._tracks: list[list[Any]] = []
        self._next = 1

    def update(self, dets: list[Det], ts: float) -> None:
        """Give every detection without a ``track_id`` one (in place)."""
        tracks = [t for t in self._tracks if ts - t[_TS] <= self.max_age_s]
        todo = [d for d in dets if d.track_id is None]
        if todo:
            pairs = []
            thr = self.iou_threshold
            for i, d in enumerate(todo):
                for j, t in enumerate(tracks):
                    if t[_LABEL] == d.label:
                        v = box_iou(t[_BOX], d.box)
                        if v >= thr:
                            pairs.append((-v, i, j))
            pairs.sort()
            used_d: set[int] = set()
            used_t: set[int] = set()
            for _, i, j in pairs:
                if i in used_d or j in used_t:
                    continue
                used_d.add(i)
                used_t.add(j)
                t, d = tracks[j], todo[i]
                t[_BOX], t[_TS] = d.box, ts
                d.track_id = t[_TID]
            for i, d in enumerate(todo):
                if i not in used_d:
                    d.track_id = -self._next
                    self._next += 1
                    tracks.append([d.track_id, d.label, d.box, ts])
        self._tracks = tracks

    def snapshot(self) -> dict[str, Any]:
        return {"tracks": self._tracks, "next": self._next}

    def restore(self, state: dict[str, Any]) -> None:
        self._tracks = [[t[0], t[1], tuple(t[2]), t[3]] for t in state.get("tracks", [])]
        self._next = int(state.get("next", 1))
