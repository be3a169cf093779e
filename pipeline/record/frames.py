"""Decoded frames of a camera's recording over a time range, each with its time on the
``capture_ts`` clock: what retraining samples from recordings (``vigil dataset collect
--recordings``) and what a review takes from an alert's clip.

The recording stage owns reading its footage: segments come from the index and are opened only
through :func:`pipeline.record.index.open_segment` (the file derived from the camera and the
segment's start, never from a path held in Redis). A frame's time is the segment's start plus its
presentation time after the segment's first packet, the rule :mod:`pipeline.record.export` cuts
by. A segment that cannot be read is skipped with one log line; a segment cut in its last fragment
gives the frames before the cut. Frames are decoded one at a time and handed over as they come:
memory is one decoder's and one frame's, whatever the range.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from pipeline.common.contracts import validate_camera_id
from pipeline.record.index import SegmentIndex, open_segment
from pipeline.record.layout import segment_path
from pipeline.record.still import segment_at, timed_frame_in
from pipeline.record.stream import error_text

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RecordedFrame:
    camera_id: str
    ts: float  # seconds since 1970, the capture_ts clock
    image: np.ndarray  # BGR, as OpenCV and the detector take it
    segment_start: float  # the start of the segment it was decoded from


@dataclass
class FrameReadStats:
    segments: int = 0  # segments read
    skipped: int = 0  # segments that could not be read (each logged once)
    decoded: int = 0  # frames decoded inside the range
    yielded: int = 0  # frames handed over (every_s)


def _segment_frames(path: Path, seg_start: float) -> Iterator[tuple[float, av.VideoFrame]]:
    """``(time, frame)`` of every frame decoded from one segment file, in presentation order.
    OSError or FFmpegError when it cannot be opened; a decoding error ends it early (logged)."""
    with open_segment(path) as container:
        if not container.streams.video:
            raise OSError(f"{path}: no video stream")
        vs = container.streams.video[0]
        vs.thread_type = "AUTO"
        tb = vs.time_base
        ref: int | None = None
        try:
            for pkt in container.demux(vs):
                if ref is None and pkt.pts is not None:
                    ref = pkt.pts  # the first packet: the segment's start (export's rule)
                for frame in pkt.decode():  # an empty packet at the end flushes the decoder
                    if frame.pts is None or ref is None:
                        continue
                    yield seg_start + float((frame.pts - ref) * tb), frame
        except (av.FFmpegError, OSError) as e:  # a truncated last fragment
            log.warning("%s: read stopped early (%s)", path, error_text(e))


def iter_frames(
    index: SegmentIndex,
    root: Path,
    camera_id: str,
    ranges: Iterable[tuple[float, float]],
    *,
    every_s: float = 0.0,
    stats: FrameReadStats | None = None,
) -> Iterator[RecordedFrame]:
    """The recorded frames of ``camera_id`` whose time lies in one of ``ranges`` (``[t0, t1)``,
    seconds since 1970; overlapping ranges are merged), oldest first; with ``every_s``, only
    frames at least that far after the previous one handed over (the others are decoded, as the
    codec needs them, but never converted)."""
    validate_camera_id(camera_id)
    stats = stats if stats is not None else FrameReadStats()
    last = -np.inf
    for t0, t1 in merge_ranges(ranges):
        for seg in index.segments(camera_id, t0, t1):
            path = segment_path(Path(root), camera_id, seg.start)
            frames = _segment_frames(path, seg.start)
            try:
                with contextlib.closing(frames):
                    stats.segments += 1
                    for ts, frame in frames:
                        if ts < t0:
                            continue
                        if ts >= t1:
                            break
                        stats.decoded += 1
                        if ts - last < every_s - 1e-6:
                            continue
                        last = ts
                        stats.yielded += 1
                        yield RecordedFrame(
                            camera_id, ts, frame.to_ndarray(format="bgr24"), seg.start
                        )
            except (av.FFmpegError, OSError) as e:  # raised on opening: nothing was read
                stats.segments -= 1
                stats.skipped += 1
                log.warning("%s: cannot read (%s); segment skipped", path, error_text(e))


def frames_at(
    index: SegmentIndex,
    root: Path,
    camera_id: str,
    times: Sequence[float],
    tolerance_s: float = 0.5,
) -> list[RecordedFrame | None]:
    """For each of ``times``, the recorded frame nearest to it (within ``tolerance_s``), or
    None where nothing is recorded that close. Each is found like the rule preview's pictures
    (:mod:`pipeline.record.still`): a seek to the keyframe before it, then one GOP decoded."""
    out: list[RecordedFrame | None] = []
    for t in times:
        seg = segment_at(index, camera_id, t)
        found = None if seg is None else timed_frame_in(root, seg, t)
        if seg is None or found is None or abs(found[0] - t) > tolerance_s:
            out.append(None)
        else:
            out.append(RecordedFrame(camera_id, found[0], found[1], seg.start))
    return out


def merge_ranges(ranges: Iterable[tuple[float, float]]) -> list[tuple[float, float]]:
    """``ranges`` sorted, overlapping or touching ones merged, empty ones dropped."""
    out: list[tuple[float, float]] = []
    for t0, t1 in sorted((a, b) for a, b in ranges if b > a):
        if out and t0 <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], t1))
        else:
            out.append((t0, t1))
    return out
