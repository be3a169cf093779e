"""The recording bench's streams and arithmetic: the 1080p main stream and the 640x360 substream
made once from the footage with FFmpeg, what ``ffprobe`` says about them, and the figures derived
from what was measured (cores per camera, cameras per core, the disk budget over time)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.common.errors import UserError


class MediaError(UserError, RuntimeError):
    """FFmpeg missing, or a stream it could not make or read (the message names the file)."""


@dataclass(frozen=True)
class StreamSpec:
    """One stream the camera simulator serves: size, rate, GOP and bitrate (kbit/s)."""

    name: str
    width: int
    height: int
    fps: int = 25
    gop: int = 50
    kbps: int = 4000

    def file_name(self, source: Path) -> str:
        return (
            f"{source.stem}-{self.width}x{self.height}-{self.fps}fps-g{self.gop}-{self.kbps}k.mp4"
        )


MAIN = StreamSpec("main", 1920, 1080, kbps=4000)  # a typical IP camera's 1080p main stream
SUB = StreamSpec("sub", 640, 360, kbps=512)  # ... and its substream for detection


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise MediaError(f"{name} not found: install Debian's ffmpeg package (apt install ffmpeg)")
    return path


def encode_command(source: Path, spec: StreamSpec, out: Path) -> list[str]:
    """Debian's ffmpeg: H.264 (x264 veryfast, High, 4:2:0), a keyframe every ``gop`` frames
    exactly, the bitrate capped like a camera's (``-maxrate``), no audio."""
    k = spec.kbps
    return [
        tool("ffmpeg"),
        *("-nostdin", "-loglevel", "error", "-y", "-i", str(source), "-an"),
        *("-vf", f"scale={spec.width}:{spec.height}", "-r", str(spec.fps)),
        *("-c:v", "libx264", "-preset", "veryfast", "-profile:v", "high", "-pix_fmt", "yuv420p"),
        *("-g", str(spec.gop), "-keyint_min", str(spec.gop), "-sc_threshold", "0"),
        *("-b:v", f"{k}k", "-maxrate", f"{k}k", "-bufsize", f"{2 * k}k"),
        *("-movflags", "+faststart", str(out)),
    ]


def make_stream(source: Path, spec: StreamSpec, cache: Path) -> Path:
    """The stream ``spec`` of ``source``, encoded once into ``cache`` (reused while newer than
    ``source``)."""
    if not source.is_file():
        raise MediaError(f"{source}: no such footage file (set VIGIL_ASSETS to the assets folder)")
    out = cache / spec.file_name(source)
    if out.is_file() and out.stat().st_mtime >= source.stat().st_mtime:
        return out
    cache.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.stem}.{os.getpid()}.mp4")
    proc = subprocess.run(encode_command(source, spec, tmp), capture_output=True, text=True)
    if proc.returncode != 0 or not tmp.is_file():
        tmp.unlink(missing_ok=True)
        raise MediaError(f"{out.name}: ffmpeg failed ({proc.stderr.strip()[-300:]})")
    tmp.replace(out)
    return out


def parse_probe(text: str, where: str = "ffprobe") -> dict[str, Any]:
    """``ffprobe -show_streams -show_format -of json`` -> the first video stream's codec, size,
    frame rate, frames, duration (s) and bitrate (bits/s; the stream's, else the file's)."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise MediaError(f"{where}: not ffprobe's JSON ({e})") from None
    video = [s for s in data.get("streams", []) if s.get("codec_type") == "video"]
    if not video:
        raise MediaError(f"{where}: no video stream")
    v, fmt = video[0], data.get("format", {})
    num, _, den = str(v.get("avg_frame_rate", "0/1")).partition("/")
    fps = float(num) / float(den) if den and float(den) else float(num or 0)
    duration = float(v.get("duration") or fmt.get("duration") or 0)
    bit_rate = v.get("bit_rate") or fmt.get("bit_rate")
    return {
        "codec": v.get("codec_name"),
        "profile": v.get("profile"),
        "width": int(v.get("width", 0)),
        "height": int(v.get("height", 0)),
        "fps": round(fps, 3),
        "frames": int(v["nb_frames"]) if str(v.get("nb_frames", "")).isdigit() else None,
        "duration_s": duration,
        "bit_rate": int(bit_rate) if bit_rate is not None else None,
        "bytes": int(fmt["size"]) if "size" in fmt else None,
    }


def probe(path: Path) -> dict[str, Any]:
    cmd = [tool("ffprobe"), "-v", "error", "-show_streams", "-show_format", "-of", "json"]
    proc = subprocess.run([*cmd, str(path)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise MediaError(f"{path}: ffprobe failed ({proc.stderr.strip()[-300:]})")
    return parse_probe(proc.stdout, str(path))


# -- derived figures ---------------------------------------------------------------------------


def cores_per_camera(parts: Mapping[str, float]) -> dict[str, Any]:
    """A camera's cost as the sum of its measured parts (cores each: CPU seconds per second of
    stream), and the cameras one core carries at that cost."""
    total = sum(parts.values())
    return {
        "parts": {k: round(v, 5) for k, v in parts.items()},
        "cores": round(total, 5),
        "percent_of_core": round(100 * total, 2),
        "cameras_per_core": round(1 / total, 1) if total > 0 else None,
    }


def budget_series(samples: Sequence[tuple[float, int]], budget: int) -> dict[str, Any]:
    """Bytes on disk sampled over a run (seconds since start, bytes) against a budget: when the
    run first crossed it, the peak, and the largest excess over it (what grows between two
    retention passes, plus the segment being written, which retention never deletes)."""
    crossed = next((t for t, b in samples if b > budget), None)
    peak = max((b for _, b in samples), default=0)
    after = [b for t, b in samples if crossed is not None and t >= crossed]
    return {
        "budget_bytes": budget,
        "samples": len(samples),
        "first_over_budget_s": crossed,
        "peak_bytes": peak,
        "peak_over_budget_bytes": max(peak - budget, 0),
        "final_bytes": samples[-1][1] if samples else 0,
        "min_after_crossing_bytes": min(after) if after else None,
    }


def spread(values: Sequence[float], digits: int = 3) -> dict[str, Any]:
    """min / median / max of ``values`` (None when there are none)."""
    if not values:
        return {"n": 0, "min": None, "median": None, "max": None}
    s = sorted(values)
    mid = len(s) // 2
    median = s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) / 2
    return {
        "n": len(s),
        "min": round(s[0], digits),
        "median": round(median, digits),
        "max": round(s[-1], digits),
    }


# -- the sizing table with motion gating -------------------------------------------------------


@dataclass(frozen=True)
class SizingRow:
    """A measured sizing-table row: cameras per worker core, and the detector's CPU ms per
    frame measured beside it; ``scale`` = (A, B): that figure was taken at imgsz B and is scaled
    by this run's ratio of detector CPU at A over B."""

    label: str
    per_core: float
    det_ms: float
    scale: tuple[int, int] | None = None


def parse_sizing(text: str) -> list[SizingRow]:
    """``LABEL=PER_CORE@MS[*A/B],...`` -> rows; an error naming the entry otherwise."""
    rows = []
    for entry in (e.strip() for e in text.split(",")):
        if not entry:
            continue
        try:
            label, _, rest = entry.partition("=")
            per_core, _, ms = rest.partition("@")
            ms, _, ratio = ms.partition("*")
            scale = None
            if ratio:
                a, _, b = ratio.partition("/")
                scale = (int(a), int(b))
            row = SizingRow(label.strip(), float(per_core), float(ms), scale)
        except ValueError:
            row = None
        if row is None or not row.label or row.per_core <= 0 or row.det_ms <= 0:
            raise ValueError(f"sizing row {entry!r}: expected LABEL=PER_CORE@MS[*A/B]")
        rows.append(row)
    return rows


def gated_per_core(
    per_core: float, det_ms: float, detect_fraction: float, motion_ms: float, fps: float
) -> float:
    """Cameras per core with motion gating, from a row measured without it: each camera's
    cores (1 / per_core) lose the detector's share on the frames gating skips and gain the
    motion check on every frame taken (decoding, tracking and the messages stay)."""
    cores = 1 / per_core - (1 - detect_fraction) * fps * det_ms / 1000 + fps * motion_ms / 1000
    if cores <= 0:
        raise ValueError(
            f"{det_ms} ms per frame at {fps:g} fps is more than a camera's whole cost at "
            f"{per_core} cameras per core"
        )
    return round(1 / cores, 1)
