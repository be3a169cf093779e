"""Cutting ``[t0, t1]`` of a camera's recording into one MP4, by remuxing (no decoding).

The cut starts at the keyframe at or before ``t0`` (a player needs it to show ``t0``) and takes
every packet whose decoding time is before ``t1``: a frame that ``t1``'s frames depend on is never
left out, so the cut plays without decoding errors; it may end a few frames after ``t1`` (those
decoded before ``t1`` but shown after it, B frames' references). The clip's timeline is the wall
clock: a gap in the recording stays a gap in the clip (a player holds the last frame), so a time in
the clip is ``start + offset`` on the ``capture_ts`` clock; the result lists the gaps.

Each segment's file is derived from its camera and start (``layout.segment_path``), never from a
path held in the index (Redis data: hostile input), and opened only as a local MP4 file
(``index.open_segment``).
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

import av

from pipeline.common.contracts import validate_camera_id
from pipeline.common.errors import InputError, InputNotFound, UsageError
from pipeline.record.index import (
    DEFAULT_GAP_TOLERANCE_S,
    SegmentIndex,
    find_gaps,
    open_segment,
)
from pipeline.record.layout import segment_path
from pipeline.record.segment import Segment
from pipeline.record.stream import error_text

log = logging.getLogger(__name__)


class NothingRecorded(InputError):
    """No recording of the camera in the range asked for."""


def iso(t: float) -> str:
    """``t`` (seconds since 1970) as UTC ISO 8601 with milliseconds."""
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class ExportResult:
    path: Path
    start: float  # wall time of the first frame shown (the keyframe at or before t0)
    end: float  # end of the last frame
    frames: int
    segments: int
    gaps: list[tuple[float, float]] = field(default_factory=list)  # parts of [t0, t1] not recorded
    # wall time of the file's time 0 (its first packet's decoding time): a player showing time
    # ``v`` of the file shows the frame of ``origin + v`` (the first frame is at ``start``)
    origin: float | None = None

    @property
    def duration(self) -> float:
        return self.end - self.start


class _Writer:
    """The output file, opened at the first packet (its stream copied from that segment's)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.container = None
        self.stream = None
        self.tb = None
        self.zero = 0.0  # wall time of the first packet's decoding time: the file's 0
        self.last_dts: int | None = None
        self.start: float | None = None
        self.end = 0.0
        self.frames = 0

    def write(self, template, pkt, wall_pts: float, wall_dts: float, dur_s: float) -> None:
        if self.container is None:
            try:
                self.container = av.open(
                    str(self.path), "w", format="mp4", container_options={"movflags": "+faststart"}
                )
            except (av.FFmpegError, OSError) as e:
                raise InputError(f"{self.path}: cannot write ({error_text(e)})") from None
            self.stream = self.container.add_stream_from_template(template)
            self.tb = template.time_base
            self.zero = wall_dts
            self.start = wall_pts
        dts = round((wall_dts - self.zero) / self.tb)
        if self.last_dts is not None and dts <= self.last_dts:
            dts = self.last_dts + 1  # strictly increasing, also across segment boundaries
        pts = max(round((wall_pts - self.zero) / self.tb), dts)
        pkt.pts, pkt.dts, pkt.time_base = pts, dts, self.tb
        pkt.stream = self.stream
        try:
            self.container.mux(pkt)
        except (av.FFmpegError, OSError) as e:  # a write error, not the segment's: say so
            raise InputError(f"{self.path}: cannot write ({error_text(e)})") from None
        self.last_dts = dts
        self.frames += 1
        self.end = max(self.end, wall_pts + dur_s)

    def close(self) -> None:
        if self.container is not None:
            self.container.close()


def check_output(out: Path) -> Path:
    """``out``, or an error naming it when its folder is missing or not writable."""
    out = Path(out)
    if not out.parent.is_dir():
        raise InputNotFound(f"{out}: folder {out.parent} does not exist")
    if out.is_dir() or not os.access(out.parent, os.W_OK):
        raise InputError(f"{out}: cannot write there")
    return out


def _held(
    seg: Segment, path: Path, held: float, done: bool, stopped: str | None, tolerance_s: float
) -> Segment:
    """``seg`` as far as its file holds frames: a file cut short (a damaged disk, a copy cut
    off) or unreadable past some fragment covers less than its index entry says, and the rest
    is a gap of the cut (one log line). ``done``: the cut ended inside it (read no further)."""
    if done or held >= seg.end - tolerance_s:
        return seg
    log.warning(
        "%s: holds frames up to %s only (indexed up to %s%s); the rest is a gap",
        path,
        iso(held),
        iso(seg.end),
        f"; read stopped: {stopped}" if stopped else "",
    )
    return replace(seg, end=max(seg.start, held))


def cut(
    root: Path,
    segments: list[Segment],
    t0: float,
    t1: float,
    out: Path,
    tolerance_s: float = DEFAULT_GAP_TOLERANCE_S,
) -> ExportResult:
    """Remux ``[t0, t1]`` of ``segments`` (files under ``root``, oldest first) into ``out``."""
    out = check_output(out)
    writer = _Writer(out)
    used: list[Segment] = []
    gop: list = []  # before the cut starts: the packets since the last keyframe at or before t0
    started = False
    done = False
    try:
        for seg in segments:
            # the file is derived from (camera, start), never from an index entry's path field
            path = segment_path(root, validate_camera_id(seg.camera_id), seg.start)
            with contextlib.ExitStack() as stack:
                try:
                    container = stack.enter_context(open_segment(path))
                except (av.FFmpegError, OSError) as e:
                    log.warning("%s: cannot read (%s); its time is a gap", path, error_text(e))
                    continue
                if not container.streams.video:
                    log.warning("%s: no video stream; its time is a gap", path)
                    continue
                vs = container.streams.video[0]
                tb = vs.time_base
                frame_s = 1.0 / float(vs.average_rate) if vs.average_rate else 0.1
                ref: int | None = None
                held = seg.start  # end of the frames the file holds (its index entry may say more)
                stopped = None  # why the read ended before the file's end
                try:
                    for pkt in container.demux(vs):
                        if pkt.is_corrupt:  # cut off by the file's end, or damaged: frames
                            stopped = "a damaged or incomplete frame"  # after it need it
                            break
                        if pkt.pts is None or pkt.size == 0:
                            continue
                        if ref is None:
                            ref = pkt.pts
                        dts = pkt.dts if pkt.dts is not None else pkt.pts
                        wall_pts = seg.start + float((pkt.pts - ref) * tb)
                        wall_dts = seg.start + float((dts - ref) * tb)
                        if wall_dts >= t1:
                            done = True
                            break
                        dur_s = float(pkt.duration * tb) if pkt.duration else frame_s
                        held = max(held, wall_pts + dur_s)
                        item = (vs, pkt, wall_pts, wall_dts, dur_s)
                        if not started:
                            if pkt.is_keyframe and wall_pts <= t0:
                                gop = [item]
                                continue
                            if not pkt.is_keyframe:
                                if gop:
                                    gop.append(item)
                                continue  # no keyframe yet: nothing before it can be shown
                            started = True  # a keyframe after t0: the cut starts
                            for g in gop:
                                writer.write(*g)
                            gop = []
                        writer.write(*item)
                except (av.FFmpegError, OSError) as e:  # cut short, or garbage in a fragment
                    stopped = error_text(e)
                used.append(_held(seg, path, held, done, stopped, tolerance_s))
                if not started and gop:  # the range ends inside the first GOP
                    started = True
                    for g in gop:
                        writer.write(*g)
                    gop = []
            if done:
                break
    except BaseException:
        writer.close()
        out.unlink(missing_ok=True)
        raise
    writer.close()
    if writer.start is None:
        out.unlink(missing_ok=True)
        raise NothingRecorded(
            f"no readable recording between {iso(t0)} and {iso(t1)} (the indexed files are "
            "missing or unreadable; `vigil recordings reindex` updates the index)"
        )
    return ExportResult(
        out,
        writer.start,
        writer.end,
        writer.frames,
        len(used),
        find_gaps(used, t0, t1, tolerance_s),
        writer.zero,
    )


def export(
    index: SegmentIndex,
    root: Path,
    camera_id: str,
    t0: float,
    t1: float,
    out: Path,
    tolerance_s: float = DEFAULT_GAP_TOLERANCE_S,
) -> ExportResult:
    """Cut ``[t0, t1]`` of ``camera_id``'s indexed recording into ``out``."""
    if not t1 > t0:
        raise UsageError(f"--to ({iso(t1)}) must be after --from ({iso(t0)})")
    check_output(out)
    segments = index.segments(camera_id, t0, t1)
    if not segments:
        raise NothingRecorded(
            f"camera {camera_id}: nothing recorded between {iso(t0)} and {iso(t1)}"
        )
    return cut(root, segments, t0, t1, out, tolerance_s)
