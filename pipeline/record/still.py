"""One picture from a camera's recording: the frame shown at a given time (the rule preview's
pictures once the live frames have expired).

The segment is found in the index, its file derived from its camera and start (never from a path
held in Redis) and opened as a local MP4 (:func:`pipeline.record.index.open_segment`), like the
clips. Only what one frame needs is decoded: the demuxer seeks to the keyframe at or before the
time, and frames are decoded from there until the one shown at that time, so a request decodes at
most one GOP (and never past its segment: :data:`MAX_DECODED` frames at most, for a camera whose
keyframes are far apart).

A frame's time is the segment's start plus its presentation time since the segment's first
packet: the clock of the detection messages' ``capture_ts`` (docs/recordings.md, "Time").
"""

from __future__ import annotations

import contextlib
import logging
import math
from pathlib import Path

import av
import numpy as np

from pipeline.common.contracts import validate_camera_id
from pipeline.record.index import SegmentIndex, open_segment
from pipeline.record.layout import segment_path
from pipeline.record.segment import Segment
from pipeline.record.stream import error_text

log = logging.getLogger(__name__)

#: The most frames one request decodes (a GOP of 10 s at 30 fps): the work stays bounded even
#: for a camera that sends a keyframe every few seconds only.
MAX_DECODED = 300


def frame_at(index: SegmentIndex, root: Path, camera_id: str, t: float) -> np.ndarray | None:
    """The frame of ``camera_id``'s recording shown at ``t`` (seconds since 1970, the
    ``capture_ts`` clock), as BGR pixels: the frame whose time is nearest ``t`` in the segment
    that covers ``t``. None when no segment covers ``t`` (not recorded, a gap, footage deleted)
    or its file cannot be read (one log line)."""
    seg = segment_at(index, camera_id, t)
    return None if seg is None else frame_in(root, seg, t)


def segment_at(index: SegmentIndex, camera_id: str, t: float) -> Segment | None:
    """The indexed segment of ``camera_id`` that covers ``t``, if any (the index only: no file
    is opened). ValueError when ``camera_id`` is not a camera id."""
    camera_id = validate_camera_id(camera_id)
    if not math.isfinite(t) or t < 0:
        return None
    # the segments overlapping [t, t + 1 ms]: the one covering t, if any
    covering = [s for s in index.segments(camera_id, t, t + 0.001) if s.start <= t < s.end]
    return covering[0] if covering else None


def frame_in(root: Path, seg: Segment, t: float) -> np.ndarray | None:
    """The frame of ``seg`` (a segment under ``root``, its file derived from its camera and
    start) shown at ``t``; None, and one log line, when its file cannot be read."""
    found = timed_frame_in(root, seg, t)
    return None if found is None else found[1]


def timed_frame_in(root: Path, seg: Segment, t: float) -> tuple[float, np.ndarray] | None:
    """:func:`frame_in` with the frame's own time (the ``capture_ts`` clock)."""
    path = segment_path(root, validate_camera_id(seg.camera_id), seg.start)
    try:
        with contextlib.ExitStack() as stack:
            container = stack.enter_context(open_segment(path))
            found = _decode_at(container, t - seg.start)
    except (av.FFmpegError, OSError, ValueError) as e:
        # FFmpeg's errors are ValueErrors too: theirs name the file (error_text does not)
        why = error_text(e) if isinstance(e, av.FFmpegError | OSError) else str(e)
        log.warning("%s: cannot read a frame (%s)", path, why)
        return None
    return None if found is None else (seg.start + found[0], found[1])


def _decode_at(container, offset_s: float) -> tuple[float, np.ndarray] | None:
    """The frame shown ``offset_s`` after the first packet of ``container``'s video, with its
    own offset (seconds after that packet)."""
    if not container.streams.video:
        raise ValueError("no video stream")
    vs = container.streams.video[0]
    tb = vs.time_base
    first = next((p.pts for p in container.demux(vs) if p.pts is not None and p.size), None)
    if first is None:
        raise ValueError("no frame")
    target = first + int(offset_s / tb)
    # the keyframe at or before the target (the first one when the target is before it)
    container.seek(max(target, first), stream=vs, backward=True, any_frame=False)
    best = None  # (distance to the target, frame)
    try:
        for decoded, frame in enumerate(container.decode(vs), 1):
            if frame.pts is not None:
                gap = abs(frame.pts - target)
                if best is None or gap < best[0]:
                    best = (gap, frame)
                elif frame.pts > target:
                    break  # frames come in display order: the next ones are further away
            if decoded >= MAX_DECODED:
                break
    except av.FFmpegError:
        if best is None:
            raise
        # a truncated last fragment (a killed recorder): the frame found before it stands
    if best is None:
        return None
    frame = best[1]
    return float((frame.pts - first) * tb), frame.to_ndarray(format="bgr24")
