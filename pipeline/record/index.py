"""The index of recorded segments in Redis, and its rebuild from the files alone.

Per camera, a sorted set ``<prefix>recordings:<camera>`` (member and score: the segment's start in
epoch ms) and one hash per segment ``<prefix>recording:<camera>:<start ms>`` (``start``, ``end``:
seconds since 1970 on the ``capture_ts`` clock; ``path``: relative to ``recordings.dir``;
``bytes``; ``frames``). Segments of one camera never overlap, so the segments overlapping
``[t0, t1]`` are the last one starting at or before ``t0`` and those starting inside the range.

The index is Redis data, so it is read as hostile input: whoever can write to Redis must not make
Vigil read (or serve) a file outside ``recordings.dir``. The file of an indexed segment is always
derived from its camera and start (:func:`pipeline.record.layout.relative_path`), never taken from
the ``path`` field (written for people and tools, never read back), and opened only as a regular
local file demuxed as MP4 (:func:`open_segment`); entries whose times are not finite numbers in
order are skipped.

The files are the truth: :func:`rebuild` reads every segment under ``recordings.dir`` (start from
its name, duration from its packets) and replaces the index with what it found.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import stat
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import av
import redis

from pipeline.common.contracts import validate_camera_id
from pipeline.common.redis import RedisConfig, RedisKeys, redis_client
from pipeline.record.layout import parse_segment, relative_path, segment_files, start_ms
from pipeline.record.segment import Segment, shown_end
from pipeline.record.stream import error_text

log = logging.getLogger(__name__)

DEFAULT_GAP_TOLERANCE_S = 0.25
_BATCH = 500


def _text(v: bytes | str) -> str:
    return v.decode() if isinstance(v, bytes) else v


class SegmentIndex:
    """Read and write the segment index through one Redis client."""

    def __init__(self, client: redis.Redis, keys: RedisKeys) -> None:
        self.client = client
        self.keys = keys

    @classmethod
    def from_config(cls, cfg: RedisConfig) -> SegmentIndex:
        return cls(redis_client(cfg), RedisKeys(cfg.key_prefix))

    # -- writing -----------------------------------------------------------------------------
    def _queue_add(self, pipe, seg: Segment) -> None:
        ms = start_ms(seg.start)
        pipe.hset(
            self.keys.recording(seg.camera_id, ms),
            mapping={
                "start": repr(seg.start),
                "end": repr(seg.end),
                "path": str(seg.path),
                "bytes": seg.bytes,
                "frames": seg.frames,
            },
        )
        pipe.zadd(self.keys.recordings(seg.camera_id), {str(ms): ms})

    def add(self, seg: Segment) -> None:
        """Index one finished segment (the recorder's ``on_segment``)."""
        pipe = self.client.pipeline(transaction=False)
        self._queue_add(pipe, seg)
        pipe.execute()

    def remove(self, camera_id: str, ms: int) -> None:
        """Forget one segment (its file deleted by retention)."""
        pipe = self.client.pipeline(transaction=False)
        pipe.unlink(self.keys.recording(camera_id, ms))
        pipe.zrem(self.keys.recordings(camera_id), str(ms))
        pipe.execute()

    def clear(self, camera_id: str) -> None:
        """Forget every segment of the camera (the files stay)."""
        key = self.keys.recordings(camera_id)
        members = [_text(m) for m in self.client.zrange(key, 0, -1)]
        for i in range(0, len(members), _BATCH):
            self.client.unlink(
                *(self.keys.recording(camera_id, int(m)) for m in members[i : i + _BATCH])
            )
        self.client.unlink(key)

    def replace(self, camera_id: str, segments: Iterable[Segment]) -> int:
        """The camera's index becomes exactly ``segments``; returns how many."""
        self.clear(camera_id)
        n = 0
        pipe = self.client.pipeline(transaction=False)
        for seg in segments:
            self._queue_add(pipe, seg)
            n += 1
            if n % _BATCH == 0:
                pipe.execute()
        pipe.execute()
        return n

    # -- reading -----------------------------------------------------------------------------
    def cameras(self) -> list[str]:
        """The cameras that have an index."""
        prefix = self.keys.recordings("")
        found = {
            _text(k)[len(prefix) :]
            for k in self.client.scan_iter(match=self.keys.recordings("*"), count=1000)
        }
        return sorted(found)

    def ends(self, camera_id: str) -> dict[int, float | None]:
        """Every indexed segment of the camera: its start (ms) and its end (s), None where the
        entry holds no usable end. Read as hostile data: only numbers come back."""
        members = []
        for m in self.client.zrange(self.keys.recordings(camera_id), 0, -1):
            try:
                members.append(int(_text(m)))
            except (ValueError, UnicodeDecodeError):
                continue
        out: dict[int, float | None] = {}
        for i in range(0, len(members), _BATCH):
            pipe = self.client.pipeline(transaction=False)
            for ms in members[i : i + _BATCH]:
                pipe.hget(self.keys.recording(camera_id, ms), "end")
            for ms, end in zip(members[i : i + _BATCH], pipe.execute(), strict=True):
                try:
                    value = float(_text(end)) if end is not None else None
                except (ValueError, UnicodeDecodeError):
                    value = None
                out[ms] = value if value is not None and math.isfinite(value) else None
        return out

    def segments(self, camera_id: str, t0: float, t1: float) -> list[Segment]:
        """The segments overlapping ``[t0, t1]`` (seconds), oldest first."""
        validate_camera_id(camera_id)
        key = self.keys.recordings(camera_id)
        ms0, ms1 = start_ms(t0), start_ms(t1)
        before = self.client.zrevrangebyscore(key, ms0, "-inf", start=0, num=1)
        inside = self.client.zrangebyscore(key, f"({ms0}", ms1)
        members = [ms for ms in (_member(m) for m in (*before, *inside)) if ms is not None]
        pipe = self.client.pipeline(transaction=False)
        for ms in members:
            pipe.hgetall(self.keys.recording(camera_id, ms))
        out = []
        for ms, h in zip(members, pipe.execute(), strict=True):
            if not h:
                continue  # the set names a segment whose hash is gone: reindex repairs it
            seg = _segment(camera_id, ms, h)
            if seg is None:
                log.warning("camera %s: index entry %d is not usable; skipped", camera_id, ms)
                continue
            if seg.start < t1 and seg.end > t0:
                out.append(seg)
        return out

    def gaps(
        self,
        camera_id: str,
        t0: float,
        t1: float,
        tolerance_s: float = DEFAULT_GAP_TOLERANCE_S,
    ) -> list[tuple[float, float]]:
        """The stretches of ``[t0, t1]`` no segment covers (longer than ``tolerance_s``)."""
        return find_gaps(self.segments(camera_id, t0, t1), t0, t1, tolerance_s)


def _member(m: bytes | str) -> int | None:
    """A sorted set member as a start in ms, or None when it is not one."""
    try:
        text = _text(m)
    except UnicodeDecodeError:
        return None
    return int(text) if text.isascii() and text.isdigit() and len(text) <= 16 else None


def _segment(camera_id: str, ms: int, raw: dict) -> Segment | None:
    """The segment an index hash describes, its file derived from (camera, start) alone; None
    when its fields are not usable (not numbers, not finite, out of order, a start that is not
    the entry's own)."""
    try:
        h = {_text(k): _text(v) for k, v in raw.items()}
        start, end = float(h["start"]), float(h["end"])
        size, frames = int(h.get("bytes", 0)), int(h.get("frames", 0))
        if not (math.isfinite(start) and math.isfinite(end) and start <= end):
            return None
        if start_ms(start) != ms:
            return None
        path = relative_path(camera_id, start)  # never the hash's own "path"
    except (KeyError, ValueError, OverflowError, OSError, UnicodeDecodeError):
        return None
    return Segment(camera_id, path, start, end, size, frames)


@contextlib.contextmanager
def open_segment(path: Path) -> Iterator[av.container.InputContainer]:
    """A segment file opened for demuxing as what it must be: a regular local file (never a
    FIFO, a device, a URL or any other protocol FFmpeg knows), read as MP4 (never probed, so a
    file that looks like a playlist is not followed). OSError or FFmpegError when it is not.

    Nothing planted in ``recordings.dir`` leads outside it: neither the file nor the camera, day
    and hour folders above it (``layout.py``; the recorder makes them, never as links) may be
    a symbolic link (``recordings.dir`` itself may be one)."""
    linked = [p for p in (path, *list(path.parents)[:3]) if p.is_symlink()]
    if linked:
        raise OSError(f"{linked[0]}: a symbolic link inside the recordings, not followed")
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(path, flags)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"{path}: not a regular file")
        f = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    with f:
        container = av.open(f, format="mp4")
        try:
            yield container
        finally:
            container.close()


def find_gaps(
    segments: Iterable[Segment],
    t0: float,
    t1: float,
    tolerance_s: float = DEFAULT_GAP_TOLERANCE_S,
) -> list[tuple[float, float]]:
    """The stretches of ``[t0, t1]`` that ``segments`` (oldest first) leave uncovered."""
    gaps = []
    cursor = t0
    for seg in segments:
        if seg.start - cursor > tolerance_s:
            gaps.append((cursor, min(seg.start, t1)))
        cursor = max(cursor, seg.end)
        if cursor >= t1:
            break
    if t1 - cursor > tolerance_s:
        gaps.append((cursor, t1))
    return gaps


def probe_file(path: Path) -> tuple[float, int]:
    """``(duration s, frames)`` of a segment file from its packets (no decoding), up to its last
    complete fragment; ValueError saying why when it holds no readable frame (corrupt, or cut
    before its first fragment)."""
    with contextlib.ExitStack() as stack:
        try:
            container = stack.enter_context(open_segment(path))
        except (av.FFmpegError, OSError) as e:
            raise ValueError(error_text(e)) from None
        return _probe(container)


def _probe(container) -> tuple[float, int]:
    if not container.streams.video:
        raise ValueError("no video stream")
    vs = container.streams.video[0]
    tb = vs.time_base
    first: int | None = None
    decoded_until = 0
    shown: list[tuple[float, float]] = []  # the last GOP's frames: (shown at, ends at)
    end = 0
    frames = 0
    try:
        for pkt in container.demux(vs):
            if pkt.is_corrupt:  # cut off by the file's end (a kill, a full disk) or damaged
                break
            if pkt.pts is None or pkt.size == 0:
                continue
            if first is None:
                first = pkt.pts
            if pkt.is_keyframe and shown:
                end = max(end, max(e for _, e in shown))  # a GOP ended by a keyframe
                shown = []
            frames += 1
            shown.append((pkt.pts, pkt.pts + (pkt.duration or 0)))
            decoded_until = max(decoded_until, pkt.dts if pkt.dts is not None else pkt.pts)
    except (av.FFmpegError, OSError):
        pass  # a truncated last fragment: the frames before it count
    if first is None:
        raise ValueError("no complete fragment")
    # the file's last GOP may have been cut by a stop or a kill: the recorder's rule
    end = max(end, shown_end(shown, decoded_until))
    return float((end - first) * tb), frames


@dataclass
class RebuildReport:
    indexed: dict[str, int] = field(default_factory=dict)  # camera -> segments
    skipped: list[tuple[Path, str]] = field(default_factory=list)  # file, why

    @property
    def total(self) -> int:
        return sum(self.indexed.values())


def scan(root: Path) -> tuple[dict[str, list[Segment]], list[tuple[Path, str]]]:
    """Every segment file under ``root`` (per camera, oldest first) and the files skipped, each
    skipped file logged once."""
    root = Path(root)
    found: dict[str, list[Segment]] = defaultdict(list)
    skipped: list[tuple[Path, str]] = []
    for path in segment_files(root):
        parsed = parse_segment(root, path)
        if parsed is None:
            why = "not <camera>/<YYYY-MM-DD>/<HH>/<start ms>.mp4"
        else:
            try:
                duration, frames = probe_file(path)
            except (ValueError, OSError) as e:
                why = f"not playable ({e})"
            else:
                camera, start = parsed
                seg = Segment(
                    camera,
                    path.relative_to(root),
                    start,
                    start + duration,
                    path.stat().st_size,
                    frames,
                )
                found[camera].append(seg)
                continue
        log.warning("%s: skipped: %s", path, why)
        skipped.append((path, why))
    return dict(found), skipped


def rebuild(root: Path, index: SegmentIndex) -> RebuildReport:
    """Replace the index with the segments found under ``root``: the cameras found get exactly
    their files, the cameras indexed without files left get an empty index."""
    found, skipped = scan(root)
    report = RebuildReport(skipped=skipped)
    for camera in sorted(set(index.cameras()) | set(found)):
        report.indexed[camera] = index.replace(camera, found.get(camera, []))
    return report
