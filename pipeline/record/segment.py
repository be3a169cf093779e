"""A segment: the finished one (:class:`Segment`, what the index holds) and the one being written
(:class:`SegmentOutput`: a fragmented MP4 that FFmpeg's muxer fills packet by packet)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import av

#: Fragmented MP4: the header first (empty ``moov``), then one ``moof``+``mdat`` per keyframe.
MOVFLAGS = "frag_keyframe+empty_moov+default_base_moof"


@dataclass(frozen=True, slots=True)
class Segment:
    """A finished segment: times in seconds since 1970 on the ``capture_ts`` clock."""

    camera_id: str
    path: Path  # relative to the recordings dir: <camera>/<date>/<hour>/<start ms>.mp4
    start: float  # presentation time of its first frame (a keyframe)
    end: float  # end of its last frame (its start + duration)
    bytes: int
    frames: int

    @property
    def duration(self) -> float:
        return self.end - self.start


def shown_end(frames: list[tuple[float, float]], decoded_until: float) -> float:
    """Where a recording cut between two keyframes ends: ``frames`` are ``(shown at, ends at)``
    and ``decoded_until`` the latest decoding time. A frame shown up to one frame after that
    time counts; one shown later was sent early (a B frame's reference) and the frames before
    it never came. Exact for streams without B frames and with one frame of reordering; with
    deeper reordering a complete GOP may come out a frame or two short."""
    return max(
        (end for at, end in frames if at <= decoded_until + (end - at) + 1e-6),
        default=decoded_until,
    )


class SegmentOutput:
    """The segment being written."""

    def __init__(self, path: Path, rel: Path, start: float, template, base: int) -> None:
        self.path, self.rel, self.start, self.base = path, rel, start, base
        self.container = av.open(
            str(path),
            "w",
            format="mp4",
            # each fragment reaches the file as soon as the muxer writes it
            container_options={"movflags": MOVFLAGS, "flush_packets": "1"},
        )
        self.stream = self.container.add_stream_from_template(template)
        self.max_end = start  # end of the latest frame shown, wall clock
        # Cut between keyframes (a stop, an outage), a stream with B frames has sent frames
        # shown after some that never came: the segment then ends with the frames shown by the
        # latest decoding time plus a frame (:func:`shown_end`, the rule the rebuild applies).
        self.complete_end = start  # end of the GOPs finished by a keyframe
        self.gop: list[tuple[float, float]] = []  # (shown at, ends at) since the last keyframe
        self.decoded_until = start  # wall time of the latest packet's decoding time

        self.last_dts: int | None = None
        self.frames = 0

    def end(self, at_keyframe: bool) -> float:
        if at_keyframe:
            return self.max_end
        return max(self.complete_end, shown_end(self.gop, self.decoded_until))
