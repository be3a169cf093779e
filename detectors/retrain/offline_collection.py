"""Collecting frames for retraining over recorded footage (``vigil dataset collect``).

:func:`collect_videos` applies the live sampling policies (:mod:`detectors.retrain.sampling`) to
video files, one camera per file, on a timeline that starts when the recording did.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from detectors.retrain.config import CollectionPolicy
from detectors.retrain.dataset import safe_name
from detectors.retrain.sampling import Collector
from pipeline.common.errors import InputError, InputNotFound, UsageError


@dataclass
class VideoCollectReport:
    """What collection did with one camera's footage: frames read and analysed, kept (and why),
    and dropped by each policy."""

    camera: str
    frames_read: int = 0
    frames_analyzed: int = 0
    saved: int = 0
    not_selected: int = 0  # no policy fired (periodic not due, min_interval, nothing uncertain...)
    duplicates: int = 0  # near-duplicates of a kept frame (dedup)
    evicted: int = 0  # dropped for the per-camera quota or the disk budget
    errors: int = 0  # could not be written
    by_reason: dict[str, int] = field(default_factory=dict)

    def dropped(self) -> str:
        """``"N no policy fired, N near-duplicates (dedup), N quota/budget"``."""
        text = (
            f"{self.not_selected} no policy fired, {self.duplicates} near-duplicate(s) (dedup), "
            f"{self.evicted} quota/budget"
        )
        return text + (f", {self.errors} not written" if self.errors else "")


def collect_frames(
    collector: Collector,
    camera: str,
    frames: Iterable[tuple[np.ndarray, float, dict[str, Any]]],
    *,
    detector=None,
    report: VideoCollectReport | None = None,
    progress: Callable[[], None] | None = None,
) -> VideoCollectReport:
    """Run one camera's frames ``(image, capture time, manifest meta)`` through the detector (in
    batches of its ``max_batch``) and the collector's policies, as the live collector does: the
    sampler decides (periodic, uncertain detections, motion without detections), near-duplicates
    are skipped, quotas apply. Returns what happened to them (``frames_read`` is the caller's)."""
    rep = report if report is not None else VideoCollectReport(camera)
    batch = getattr(getattr(detector, "config", None), "max_batch", 8)
    s = collector.stats
    before = (s.offered, s.duplicates, s.evicted, s.errors, dict(s.by_reason))
    pending: list[tuple[np.ndarray, float, dict[str, Any]]] = []

    def flush() -> None:
        if not pending:
            return
        imgs = [p[0] for p in pending]
        dets = detector.detect(imgs) if detector is not None else [[] for _ in pending]
        for (img, ts, meta), d in zip(pending, dets, strict=True):
            rep.frames_analyzed += 1
            if collector.consider(camera, img, ts, d, meta=meta) is not None:
                rep.saved += 1
        pending.clear()
        if progress is not None:
            progress()

    for item in frames:
        pending.append(item)
        if len(pending) >= batch:
            flush()
    flush()
    offered, dups, evicted, errors, by_reason = before
    rep.not_selected += rep.frames_analyzed - (s.offered - offered)
    rep.duplicates += s.duplicates - dups
    rep.evicted += s.evicted - evicted
    rep.errors += s.errors - errors
    for k, v in s.by_reason.items():
        if v - by_reason.get(k, 0):
            rep.by_reason[k] = rep.by_reason.get(k, 0) + v - by_reason.get(k, 0)
    return rep


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
            read = [0]

            def frames(cap=cap, t0=t0, fps=fps, step=step, path=path, read=read):
                idx = -1
                while cap.grab():
                    idx += 1
                    read[0] = idx + 1
                    if idx % step:
                        continue
                    ok, img = cap.retrieve()
                    if ok and img is not None:
                        yield img, t0 + idx / fps, {"video": path.name, "video_frame": idx}

            def shown(cam=cam, read=read, total=total) -> None:
                if progress is not None:
                    progress(cam, read[0], total)

            try:
                collect_frames(
                    collector, cam, frames(), detector=detector, report=rep, progress=shown
                )
            finally:
                cap.release()
            rep.frames_read = read[0]
            if rep.frames_read == 0:
                raise InputError(f"no frames could be read from {path}")
            reports.append(rep)
    finally:
        collector.close()
    return collector, reports
