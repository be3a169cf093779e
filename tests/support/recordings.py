"""Recordings in tests: FFmpeg's own ``ffprobe``/``ffmpeg`` (Debian's package) as the player that
judges segments and exports, and a recorder run in a child process (to be SIGKILLed)."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import cv2
import numpy
import numpy as np
import pytest
import redis

from alerts.events import AlertEvent
from alerts.store import AlertStore, AlertWrite
from pipeline.camera_sim import CameraSim
from pipeline.common.assets import REPO_ROOT
from pipeline.common.redis import RedisKeys
from pipeline.record.index import SegmentIndex
from pipeline.record.layout import relative_path
from pipeline.record.segmenter import Recorder, Segment
from tests.support.assets import footage_path
from tests.support.config import REDIS_URL
from tests.support.net import free_port
from tests.support.redis import cleanup
from tests.support.waiting import wait_for


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} not found: install Debian's ffmpeg (deploy/local/setup.sh does)")
    return path


def ffprobe_duration(path: Path | str) -> float:
    """The container's duration as ffprobe reports it (s)."""
    p = subprocess.run(
        [_tool("ffprobe"), "-v", "error", "-show_entries", "format=duration", "-of", "json", path],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 0, f"ffprobe {path}: {p.stderr}"
    return float(json.loads(p.stdout)["format"]["duration"])


def ffprobe_size(path: Path | str) -> tuple[int, int]:
    """The video's width and height as ffprobe reports them."""
    p = subprocess.run(
        [_tool("ffprobe"), "-v", "error", "-select_streams", "v:0", "-show_entries"]
        + ["stream=width,height", "-of", "json", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 0, f"ffprobe {path}: {p.stderr}"
    stream = json.loads(p.stdout)["streams"][0]
    return int(stream["width"]), int(stream["height"])


def ffprobe_packets(path: Path | str) -> list[tuple[float, bool]]:
    """``(pts_time, keyframe)`` of every video packet, in file order."""
    p = subprocess.run(
        [
            _tool("ffprobe"),
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-show_entries",
            "packet=pts_time,flags",
            "-of",
            "json",
            path,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 0, f"ffprobe {path}: {p.stderr}"
    return [
        (float(pk["pts_time"]), pk["flags"].startswith("K"))
        for pk in json.loads(p.stdout)["packets"]
    ]


def make_mp4(
    path: Path, width: int, height: int, seconds: float = 2.0, source: str = "testsrc"
) -> Path:
    """A small H.264 fragmented MP4 like a segment (10 fps, a keyframe a second), made by
    FFmpeg's test source (``source``: a lavfi video source, e.g. ``color=c=gray`` for a still
    picture); ``width`` x ``height`` tells it apart from other files."""
    path.parent.mkdir(parents=True, exist_ok=True)
    p = subprocess.run(
        [
            _tool("ffmpeg"),
            "-nostdin",
            "-v",
            "error",
            "-f",
            "lavfi",
            "-i",
            f"{source}{':' if '=' in source else '='}size={width}x{height}:rate=10",
            "-t",
            str(seconds),
            "-c:v",
            "libx264",
            "-g",
            "10",
            "-movflags",
            "frag_keyframe+empty_moov+default_base_moof",
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 0, f"ffmpeg {path}: {p.stderr}"
    return path


def ffmpeg_frames(path: Path | str, wanted: set[int]) -> dict[int, np.ndarray]:
    """The frames numbered ``wanted`` (0: the first shown) of a video, decoded by FFmpeg's own
    ``ffmpeg`` (BGR, every frame in presentation order, none dropped or repeated)."""
    width, height = ffprobe_size(path)
    size = width * height * 3
    p = subprocess.Popen(
        [_tool("ffmpeg"), "-nostdin", "-v", "error", "-i", str(path), "-fps_mode", "passthrough"]
        + ["-f", "rawvideo", "-pix_fmt", "bgr24", "-"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert p.stdout is not None
    out: dict[int, np.ndarray] = {}
    n = 0
    try:
        while len(out) < len(wanted):
            buf = p.stdout.read(size)
            if len(buf) < size:
                break
            if n in wanted:
                out[n] = np.frombuffer(buf, np.uint8).reshape(height, width, 3)
            n += 1
    finally:
        p.kill()
        p.wait()
    return out


def block_diff(a: np.ndarray, b: np.ndarray) -> int:
    """How far apart two pictures of the same size are: the largest difference between their
    48x27 area averages in grey (JPEG noise averages out, a person who moved does not)."""

    def blocks(img: np.ndarray) -> np.ndarray:
        grey = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
        return cv2.resize(grey, (48, 27), interpolation=cv2.INTER_AREA).astype(np.int16)

    return int(np.abs(blocks(a) - blocks(b)).max())


def copy_recording_as(
    rec: Recording, root: Path, index: SegmentIndex, camera: str
) -> list[Segment]:
    """The recording's files copied under ``root`` as camera ``camera``'s and indexed in
    ``index`` (keys of the test's own); returns its segments."""
    shutil.copytree(rec.root / rec.camera, root / camera)
    segments = [
        dataclasses.replace(s, camera_id=camera, path=relative_path(camera, s.start))
        for s in rec.segments
    ]
    index.replace(camera, segments)
    return segments


def make_unrecordable(path: Path, kind: str) -> Path:
    """A short stream MP4 segments cannot hold, made by FFmpeg: ``flv`` (Sorenson Spark video,
    which the MP4 format has no place for) or ``audio`` (no video at all), in Matroska."""
    source = {"flv": ["-f", "lavfi", "-i", "testsrc=size=160x120:rate=10", "-c:v", "flv"]}.get(
        kind, ["-f", "lavfi", "-i", "sine=frequency=440"]
    )
    p = subprocess.run(
        [_tool("ffmpeg"), "-nostdin", "-v", "error", "-y", *source, "-t", "1", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 0, f"ffmpeg {path}: {p.stderr}"
    return path


def decode_errors(path: Path | str) -> str:
    """What ``ffmpeg -v error -i PATH -f null -`` says while decoding every frame ('' = none)."""
    p = subprocess.run(
        [_tool("ffmpeg"), "-nostdin", "-v", "error", "-i", path, "-f", "null", "-"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    return p.stderr.strip() + ("" if p.returncode == 0 else f" (exit {p.returncode})")


# A recorder alone in a child process: prints READY once it records, runs until killed.
_CHILD = textwrap.dedent(
    """
    import sys, time
    from pipeline.record.segmenter import Recorder
    camera, url, root, segment_s = sys.argv[1:5]
    rec = Recorder(camera, url, root, segment_s=float(segment_s), read_timeout_s=3, settle_s=0.3)
    rec.start()
    while rec.stats.state != "recording":
        time.sleep(0.05)
    print("READY", flush=True)
    time.sleep(3600)
    """
)


def start_child_recorder(
    camera: str, url: str, root: Path, segment_s: float
) -> subprocess.Popen[str]:
    """A recorder process (this checkout's code), once it has started its first segment."""
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    proc = subprocess.Popen(
        [sys.executable, "-c", _CHILD, camera, url, str(root), str(segment_s)],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("READY"):
        proc.kill()
        pytest.fail(f"child recorder did not start: {line!r} {proc.stderr.read()[-2000:]}")
    return proc


#: 768x432 H.264 at 10 fps, one keyframe a second, B frames: the recorded footage
CLIP = "one-by-one-person-detection.mp4"
CLIP_FRAME_S = 0.1
CLIP_GOP_S = 1.0


@dataclass
class Recording:
    """One camera-sim stream recorded into segments and indexed (tests read, never change it)."""

    root: Path
    camera: str
    segment_s: float
    index: SegmentIndex
    segments: list[Segment]  # as the recorder reported them, oldest first
    lag_s: list[float]  # the recorder's packet lags (arrival - stamped time)
    began: float  # time.time() before the recorder started
    ended: float  # time.time() after it stopped
    redis_url: str
    key_prefix: str


def copy_recording(rec: Recording, root: Path, index: SegmentIndex) -> SegmentIndex:
    """The recording's files copied under ``root`` and its segments indexed in ``index`` (keys
    of the test's own): a test that writes (the clip cache) or changes the index works on it,
    never on the shared recording."""
    shutil.copytree(rec.root / rec.camera, root / rec.camera)
    index.replace(rec.camera, rec.segments)
    return index


def store_alert(
    store: AlertStore,
    camera: str,
    started_at: float,
    ended_at: float | None,
    alert_id: str | None = None,
    source: bytes | None = None,
) -> str:
    """An alert of ``camera`` written into Redis as the alert service writes it: its started
    event (with ``source``, the triggering frame's JPEG, when given), then its ended event when
    ``ended_at`` is given. Returns its id."""
    aid = alert_id or uuid.uuid4().hex[:20]
    ev = AlertEvent(
        id=aid,
        camera_id=camera,
        rule_id="clip-zone",
        rule_type="zone_intrusion",
        status="started",
        severity="high",
        started_at=started_at,
        updated_at=started_at,
        frame_seq=1,
        epoch=1,
        label="person",
        box=(0.1, 0.1, 0.3, 0.6),
        confidence=0.9,
    )
    store.write_alert(AlertWrite(ev.to_dict(), started_at, source=source))
    if ended_at is not None:
        end = ev.ended(ended_at, 2, 1, "left the zone")
        store.write_alert(AlertWrite(end.to_dict(), ended_at))
    return aid


def record_camera(
    root: Path, seconds: float = 25.0, segment_s: float = 10.0
) -> Iterator[Recording]:
    """Record ``seconds`` of :data:`CLIP` served by ``vigil camera-sim``; yields the recording,
    then deletes its Redis keys."""
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.RedisError as e:
        pytest.fail(f"Redis is not reachable at {REDIS_URL} ({e}): run `make infra-up`")
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    index = SegmentIndex(client, RedisKeys(prefix))
    segments: list[Segment] = []
    frames = int(seconds / CLIP_FRAME_S)
    with CameraSim([footage_path(CLIP)], port=free_port()) as sim:
        began = time.time()
        rec = Recorder(
            "cam1",
            next(iter(sim.urls.values())),
            root,
            segment_s=segment_s,
            read_timeout_s=5,
            on_segment=lambda s: (segments.append(s), index.add(s)),
        ).start()
        wait_for(lambda: rec.stats.packets >= frames or not rec.alive, timeout=seconds + 30)
        rec.stop()
        ended = time.time()
    assert rec.stats.packets >= frames, f"recorded {rec.stats.packets} packets: {rec.stats}"
    try:
        yield Recording(
            root,
            "cam1",
            segment_s,
            index,
            segments,
            list(rec.stats.lag_s),
            began,
            ended,
            REDIS_URL,
            prefix,
        )
    finally:
        cleanup(client, prefix)


def fake_segment(
    root: Path,
    index: SegmentIndex,
    camera: str,
    start: float,
    size: int = 1000,
    duration: float = 10.0,
) -> Segment:
    """A file laid out as a segment holding ``size`` filler bytes, and its index entry: enough for
    retention, which goes by names, sizes and the index, never by the media inside."""
    rel = relative_path(camera, start)
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\0" * size)
    seg = Segment(camera, rel, start, start + duration, size, int(duration * 10))
    index.add(seg)
    return seg


def make_jumping_stream(path: Path, offsets_s: list[float], part_s: float = 1.0) -> Path:
    """An MPEG-TS stream (160x120 H.264, 10 fps, a keyframe each 0.5 s) of ``part_s`` pieces
    whose time stamps start at each of ``offsets_s`` in turn: a camera's clock jumping (a
    reboot, a wrapped counter) between the pieces."""
    parts = []
    for i, offset in enumerate(offsets_s):
        part = path.with_name(f"{path.stem}.{i}.ts")
        p = subprocess.run(
            [_tool("ffmpeg"), "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i"]
            + ["testsrc=size=160x120:rate=10", "-t", str(part_s), "-c:v", "libx264", "-g", "5"]
            + ["-bf", "0", "-output_ts_offset", str(offset), "-f", "mpegts", str(part)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert p.returncode == 0, f"ffmpeg {part}: {p.stderr}"
        parts.append(part.read_bytes())
    path.write_bytes(b"".join(parts))
    return path


def recorded_frame(rec: Recording, t: float) -> numpy.ndarray:
    """The grey picture the recording shows at wall time ``t`` (the ``capture_ts`` clock), decoded
    with PyAV from the segment files themselves: the frame of the segment holding ``t`` whose time
    (segment start + its PTS from the first packet's) is the last at or before ``t``."""
    seg = next((s for s in rec.segments if s.start <= t < s.end), None)
    assert seg is not None, f"{t} is not inside the recording"
    best = None
    with av.open(str(rec.root / seg.path)) as container:
        vs = container.streams.video[0]
        ref = next(p.pts for p in container.demux(vs) if p.pts is not None)
        container.seek(0)
        for frame in container.decode(vs):
            at = seg.start + float((frame.pts - ref) * vs.time_base)
            if at <= t + 1e-3:
                best = frame
            elif best is not None:
                break
    assert best is not None, f"no frame at or before {t} in {seg.path}"
    return best.to_ndarray(format="gray")


def shrink(gray: numpy.ndarray, factor: int = 4) -> numpy.ndarray:
    """``gray`` averaged over ``factor`` x ``factor`` blocks (as floats)."""
    h, w = (gray.shape[0] // factor) * factor, (gray.shape[1] // factor) * factor
    g = gray[:h, :w].astype(numpy.float64)
    return g.reshape(h // factor, factor, w // factor, factor).mean(axis=(1, 3))
