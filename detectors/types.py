"""The detector's output and the protocol the ingest worker drives it through.

Both are contracts between stages, so they are defined in ``pipeline.common.contracts``;
:class:`detectors.engine.Detector` implements :class:`FrameDetector`.
"""

from __future__ import annotations

from pipeline.common.contracts import Detection, FrameDetector

__all__ = ["Detection", "FrameDetector"]
