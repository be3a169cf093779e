"""The shared footage as the bench's cameras and detectors see it."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np

log = logging.getLogger(__name__)


def sample_frames(path: str | Path, count: int) -> list[np.ndarray]:
    """``count`` frames spread over the whole file."""

    cap = cv2.VideoCapture(str(path))
    total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) or count
    want = {int(i * total / count) for i in range(count)}
    frames, i = [], 0
    while len(frames) < len(want):
        ok, frame = cap.read()
        if not ok:
            break
        if i in want:
            frames.append(frame)
        i += 1
    cap.release()
    return frames


def replay_frames(path: str | Path, fps: float) -> list[tuple[float, np.ndarray]]:
    """(seconds since start, frame) of a file as a camera reader at ``fps`` would take them."""

    cap = cv2.VideoCapture(str(path))
    native = cap.get(cv2.CAP_PROP_FPS) or 25.0
    out, i, next_due = [], 0, 0.0
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        t = i / native
        if t + 1e-9 >= next_due:
            out.append((t, frame))
            next_due += 1.0 / fps
        i += 1
    cap.release()
    return out


def retimed(path: Path, fps: float, cache: Path) -> Path:
    """A copy of ``path`` that plays every frame once at ``fps`` (H.264 4:2:0, cached).

    4:2:0 like the footage and like every IP camera: left to itself, x264enc takes the BGR
    frames as 4:4:4 (High 4:4:4 profile), which decodes and converts about twice as slowly.
    """

    cap = cv2.VideoCapture(str(path))
    native = cap.get(cv2.CAP_PROP_FPS)
    if native and abs(native - fps) < 0.5:
        return path
    out = cache / f"{path.stem}-{fps:g}fps-420.mp4"
    if out.is_file() and out.stat().st_mtime >= path.stat().st_mtime:
        return out
    gst = shutil.which("gst-launch-1.0")
    if gst is None:
        log.warning("gst-launch-1.0 not found: serving %s at its own rate", path.name)
        return path
    out.parent.mkdir(parents=True, exist_ok=True)
    w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
    tmp = out.with_suffix(f".tmp{os.getpid()}.mp4")
    cmd = [gst, "-q", "fdsrc", "fd=0", "!", "rawvideoparse", f"width={w}", f"height={h}"]
    cmd += ["format=bgr", f"framerate={round(fps * 1000)}/1000", "!", "videoconvert", "!"]
    cmd += ["video/x-raw,format=I420", "!"]
    cmd += ["x264enc", "speed-preset=veryfast", f"key-int-max={round(2 * fps)}", "tune=zerolatency"]
    cmd += ["!", "h264parse", "!", "mp4mux", "!", "filesink", f"location={tmp}"]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE)
    assert proc.stdin is not None
    try:
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            proc.stdin.write(np.ascontiguousarray(frame).tobytes())
    finally:
        proc.stdin.close()
        rc = proc.wait()
        cap.release()
    if rc != 0 or not tmp.is_file():
        tmp.unlink(missing_ok=True)
        log.warning("re-timing %s failed (gst-launch exit %s): serving it as it is", path, rc)
        return path
    tmp.replace(out)
    return out
