"""Collecting frames for retraining over recorded footage (``vigil dataset collect``).

:func:`collect_videos` applies the live sampling policies (:mod:`detectors.retrain.sampling`) to
video files, one camera per file, on a timeline that starts when the recording did.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from detectors.retrain.config import CollectionPolicy
from detectors.retrain.dataset import safe_name
from detectors.retrain.sampling import Collector
from pipeline.common.errors import InputError, InputNotFound, UsageError


@dataclass
class VideoCollectReport:
    camera: str
    frames_read: int = 0
    frames_analyzed: int = 0
    saved: int = 0


def _video_start(path: Path, frames: int, fps: float) -> float:
    """Capture time of the first frame: the file's mtime minus its duration."""
    return path.stat().st_mtime - (frames / fps if fps > 0 else 0.0)


def collect_videos(
    videos: Sequence[str | Path],
    out: str | Path,
    policy: CollectionPolicy,
    *,
    detector=None,
    analyze_fps: float = 2.0,
    camera_ids: Sequence[str] | None = None,
    start_ts: float | None = None,
    disk_budget_mb: float = 2048.0,
    jpeg_quality: int = 92,
    progress: Callable[[str, int, int], None] | None = None,
) -> tuple[Collector, list[VideoCollectReport]]:
    """Sample recorded footage into a dataset folder with the live policies.

    Each video is one camera (id: ``camera_ids`` or the file name). Frames are analysed at
    ``analyze_fps`` (detector + sampler) on a timeline that starts at ``start_ts`` (default: the
    file's modification time minus its duration). Without a detector nothing is "uncertain" and
    motion alone qualifies a frame.
    """
    if camera_ids is not None and len(camera_ids) != len(videos):
        raise UsageError(f"{len(camera_ids)} camera id(s) (--camera) for {len(videos)} video(s)")
    for v in videos:
        if not Path(v).is_file():
            raise InputNotFound(f"video {v} not found")
    try:
        collector = Collector(
            out, policy, disk_budget_mb=disk_budget_mb, jpeg_quality=jpeg_quality, source="offline"
        )
    except OSError as e:
        raise InputError(f"cannot create the dataset folder {out}: {e.strerror or e}") from None
    reports = []
    batch = getattr(getattr(detector, "config", None), "max_batch", 8)
    try:
        for k, video in enumerate(videos):
            path = Path(video)
            cam = camera_ids[k] if camera_ids is not None else safe_name(path.stem)
            cap = cv2.VideoCapture(str(path))
            if not cap.isOpened():
                raise InputError(f"cannot open {path} as a video (unsupported or corrupt)")
            fps = cap.get(cv2.CAP_PROP_FPS) or 0.0
            fps = fps if 0 < fps < 240 else 25.0
            total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
            t0 = start_ts if start_ts is not None else _video_start(path, total, fps)
            step = max(1, round(fps / analyze_fps)) if analyze_fps > 0 else 1
            rep = VideoCollectReport(cam)
            pending: list[tuple[np.ndarray, float, int]] = []

            def flush(pending=pending, cam=cam, rep=rep, path=path) -> None:
                if not pending:
                    return
                dets = (
                    detector.detect([p[0] for p in pending])
                    if detector is not None
                    else [[] for _ in pending]
                )
                for (img, ts, idx), d in zip(pending, dets, strict=True):
                    rep.frames_analyzed += 1
                    meta = {"video": path.name, "video_frame": idx}
                    if collector.consider(cam, img, ts, d, meta=meta) is not None:
                        rep.saved += 1
                pending.clear()

            idx = -1
            try:
                while True:
                    if not cap.grab():
                        break
                    idx += 1
                    if idx % step:
                        continue
                    ok, img = cap.retrieve()
                    if not ok or img is None:
                        continue
                    pending.append((img, t0 + idx / fps, idx))
                    if len(pending) >= batch:
                        flush()
                        if progress is not None:
                            progress(cam, idx + 1, total)
                flush()
            finally:
                cap.release()
            rep.frames_read = idx + 1
            if rep.frames_read == 0:
                raise InputError(f"no frames could be read from {path}")
            reports.append(rep)
    finally:
        collector.close()
    return collector, reports
