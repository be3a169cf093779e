"""Motion gating in the worker: which frames skip the detector, and what they carry over.

With ``ingest.motion`` (``cameras[].motion`` overriding it key by key) a frame without new motion
(:mod:`pipeline.ingest.motion`) is not detected: it is published with its camera's last detector
result, tracked again so tracks stay alive as if the detector had seen the same boxes (it would
have). Motion the last result explains (objects standing still) is not new motion.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from pipeline.common.contracts import Detection, Frame, FrameDetector
from pipeline.ingest.motion import Decision, MotionConfig, MotionDetector


class MotionGating:
    """Per camera: its motion detector and its last detector result.

    ``settings(camera_id)`` gives the camera's motion settings, asked once, when the camera's
    first frame comes; gating is off for a camera whose settings are not ``enabled``.
    ``watched(camera_id)``: whether the camera's motion is wanted even so (a recording in mode
    events starts on motion): its frames are checked for motion but all go to the detector.
    """

    def __init__(
        self,
        settings: Callable[[str], MotionConfig],
        watched: Callable[[str], bool] = lambda _cid: False,
    ) -> None:
        self._settings = settings
        self._watched = watched
        self._motion: dict[str, MotionDetector | None] = {}  # None: no motion check
        self._watch_only: set[str] = set()  # checked for motion, never gated
        # camera -> (untracked detections of its last detector run, (h, w), detector)
        self._last_raw: dict[str, tuple[np.ndarray, tuple[int, int], object]] = {}
        self._last_by: dict[str, object] = {}  # camera -> detector that produced its last result
        self._last_dets: dict[str, list[Detection]] = {}  # for detectors without raw output

    def is_on(self, camera_id: str) -> bool:
        """Whether the camera's frames are gated (unknown yet: assume they may be)."""
        return self._motion.get(camera_id, True) is not None and camera_id not in self._watch_only

    def decide(self, frame: Frame, current: object) -> Decision | None:
        """Motion decision for ``frame``; None when gating is off for its camera. ``current``
        is the worker's detector now: a result of another model is not carried over."""
        cid = frame.camera_id
        if cid not in self._motion:
            mcfg = self._settings(cid)
            watch = not mcfg.enabled and self._watched(cid)
            self._motion[cid] = MotionDetector(mcfg) if mcfg.enabled or watch else None
            if watch:
                self._watch_only.add(cid)
        gate = self._motion[cid]
        if gate is None:
            return None
        if cid in self._watch_only:
            decision = gate.check(frame.image, frame.capture_ts)
            decision.detect = True
            return decision
        last = self._last_raw.get(cid)
        if last is not None:
            boxes, (h, w), _ = last
            scale = np.array([w, h, w, h], np.float32)
            objects = [tuple(b) for b in (boxes[:, :4] / scale).tolist()]
        else:
            objects = [d.box for d in self._last_dets.get(cid, ())]
        decision = gate.check(frame.image, frame.capture_ts, objects)
        if not decision.detect and self._last_by.get(cid) is not current:
            decision.detect = True  # the model changed (hot reload): its own result is needed
        return decision

    def remember(
        self, frame: Frame, dets: list[Detection], raw: np.ndarray | None, det: FrameDetector
    ) -> None:
        """The detector's result for a gated camera's frame: what later frames carry over."""
        cid = frame.camera_id
        if cid in self._watch_only:
            return  # never carried over
        self._last_dets[cid] = dets
        self._last_by[cid] = det
        if raw is not None:
            self._last_raw[cid] = (raw, frame.image.shape[:2], det)

    def carry_over(self, det: FrameDetector, frame: Frame, fps: float) -> list[Detection]:
        """Detections for a frame without motion: the camera's last detector result, tracked
        again by ``det`` (the caller holds the detector's lock)."""
        last = self._last_raw.get(frame.camera_id)
        if last is not None:
            return det.finish(frame.image, last[0], frame.camera_id, fps)
        return self._last_dets.get(frame.camera_id, [])

    def forget(self, camera_id: str) -> None:
        """The camera left this worker (or changed): its detector and results go."""
        for state in (self._motion, self._last_raw, self._last_by, self._last_dets):
            state.pop(camera_id, None)
        self._watch_only.discard(camera_id)
