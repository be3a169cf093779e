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
    """

    def __init__(self, settings: Callable[[str], MotionConfig]) -> None:
        self._settings = settings
        self._motion: dict[str, MotionDetector | None] = {}  # None: gating off for the camera
        # camera -> (untracked detections of its last detector run, (h, w), detector)
        self._last_raw: dict[str, tuple[np.ndarray, tuple[int, int], object]] = {}
        self._last_by: dict[str, object] = {}  # camera -> detector that produced its last result
        self._last_dets: dict[str, list[Detection]] = {}  # for detectors without raw output

    def is_on(self, camera_id: str) -> bool:
        """Whether the camera's frames are gated (unknown yet: assume they may be)."""
        return self._motion.get(camera_id, True) is not None

    def decide(self, frame: Frame, current: object) -> Decision | None:
        """Motion decision for ``frame``; None when gating is off for its camera. ``current``
        is the worker's detector now: a result of another model is not carried over."""
        cid = frame.camera_id
        if cid not in self._motion:
            mcfg = self._settings(cid)
            self._motion[cid] = MotionDetector(mcfg) if mcfg.enabled else None
        gate = self._motion[cid]
        if gate is None:
            return None
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
