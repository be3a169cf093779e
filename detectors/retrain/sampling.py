"""Choosing and writing frames for retraining: sampling policies, near-duplicate skipping, quotas.

:class:`Sampler` decides, per camera, whether a frame is worth keeping (periodic, uncertain
detections, motion without detections, alerts). :class:`Collector` writes the kept frames into a
dataset folder (:mod:`detectors.retrain.dataset` layout), skipping near-duplicates by perceptual
hash and enforcing a per-camera quota and a disk budget by dropping the least useful, oldest
frames first. The hash and thumbnail are computed here (OpenCV); their manifest encoding and the
near-duplicate test belong to the dataset format (:mod:`detectors.retrain.dataset.fingerprint`),
so imports go one way: sampling -> dataset.

Both are plain objects without threads; :mod:`detectors.retrain.collector` runs them next to an
ingest worker (in a background thread), :mod:`detectors.retrain.offline_collection` over recorded
footage.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from detectors.retrain.config import CollectionPolicy
from detectors.retrain.dataset import (
    HUMAN,
    THUMB_SIZE,
    Manifest,
    decode_thumb,
    encode_thumb,
    label_path,
    near_duplicate,
    safe_name,
)

log = logging.getLogger(__name__)

#: How useful a frame is for retraining, by the reason it was kept (higher is kept longer).
REASON_PRIORITY = {
    "alert": 4,
    "review_clip": 4,
    "uncertain": 3,
    "motion": 2,
    "periodic": 1,
    "imported": 0,
}
HUMAN_LABEL_BONUS = 10  # corrected by a person: the last thing to drop


def _small_gray(image: np.ndarray) -> np.ndarray:
    """Grey, area-downscaled to at most 128 px wide: one pass over the full frame for both
    :func:`phash` and :func:`thumbnail`."""
    gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image
    if gray.shape[1] <= 128:
        return gray
    h = max(32, round(gray.shape[0] * 128 / gray.shape[1]))
    return cv2.resize(gray, (128, h), interpolation=cv2.INTER_AREA)


def phash(image: np.ndarray) -> int:
    """64-bit perceptual hash (DCT of a 32x32 grey thumbnail, low 8x8 frequencies vs median)."""
    gray = _small_gray(image) if image.ndim == 3 or image.shape[1] > 128 else image
    small = cv2.resize(gray, (32, 32), interpolation=cv2.INTER_AREA).astype(np.float32)
    low = cv2.dct(small)[:8, :8].flatten()
    bits = low > np.median(low[1:])
    return int.from_bytes(np.packbits(bits).tobytes(), "big")


def thumbnail(image: np.ndarray) -> np.ndarray:
    """Tiny grey thumbnail (area-averaged): where in the picture something changed."""
    gray = _small_gray(image) if image.ndim == 3 or image.shape[1] > 128 else image
    return cv2.resize(gray, THUMB_SIZE, interpolation=cv2.INTER_AREA)


def priority(reasons: Sequence[str], label_source: str | None = None) -> int:
    p = max((REASON_PRIORITY.get(r, 0) for r in reasons), default=0)
    return p + (HUMAN_LABEL_BONUS if label_source == HUMAN else 0)


# --------------------------------------------------------------------------------------------
# Sampling


class Sampler:
    """One camera's sampling state. ``wants`` is the cheap check done on the detection thread;
    ``reasons`` (background thread) makes the final decision and may look at the pixels."""

    def __init__(self, policy: CollectionPolicy) -> None:
        self.policy = policy
        self.last_periodic: float | None = None
        self.last_saved = -math.inf
        self.last_motion_check = -math.inf
        self._prev_small: np.ndarray | None = None

    def _uncertain(self, detections: Sequence[Any]) -> bool:
        u = self.policy.uncertain
        return u.enabled and any(u.low <= d.confidence <= u.high for d in detections)

    def _periodic_due(self, ts: float) -> bool:
        p = self.policy.periodic_s
        return p is not None and (self.last_periodic is None or ts - self.last_periodic >= p)

    def _motion_due(self, ts: float, detections: Sequence[Any]) -> bool:
        m = self.policy.motion
        return m.enabled and not detections and ts - self.last_motion_check >= m.check_interval_s

    def wants(self, ts: float, detections: Sequence[Any]) -> bool:
        """Cheap pre-filter: could this frame be kept? (No pixel work.)"""
        if ts - self.last_saved < self.policy.min_interval_s:
            return False
        return (
            self._periodic_due(ts)
            or self._uncertain(detections)
            or self._motion_due(ts, detections)
        )

    def motion_fraction(self, image: np.ndarray) -> float | None:
        """Share of changed pixels since the previous check (None for the first frame)."""
        gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image
        w = 96
        h = max(1, round(gray.shape[0] * w / gray.shape[1]))
        small = cv2.GaussianBlur(cv2.resize(gray, (w, h), interpolation=cv2.INTER_AREA), (5, 5), 0)
        prev, self._prev_small = self._prev_small, small
        if prev is None or prev.shape != small.shape:
            return None
        return float(np.count_nonzero(cv2.absdiff(prev, small) > 25)) / small.size

    def reasons(self, ts: float, image: np.ndarray, detections: Sequence[Any]) -> list[str]:
        """Why this frame should be kept (empty: it should not)."""
        out: list[str] = []
        motion = None
        if self._motion_due(ts, detections):
            self.last_motion_check = ts
            frac = self.motion_fraction(image)
            motion = frac is not None and frac >= self.policy.motion.threshold
        if ts - self.last_saved < self.policy.min_interval_s:
            return out
        if self._periodic_due(ts):
            out.append("periodic")
            self.last_periodic = ts
        if self._uncertain(detections):
            out.append("uncertain")
        if motion:
            out.append("motion")
        return out

    def kept(self, ts: float) -> None:
        self.last_saved = ts


# --------------------------------------------------------------------------------------------
# Writing


@dataclass
class _Entry:
    image: str
    camera: str
    ts: float
    prio: int
    size: int
    hash: int | None
    thumb: np.ndarray | None = None


@dataclass
class CollectorStats:
    offered: int = 0
    saved: int = 0
    duplicates: int = 0
    evicted: int = 0
    errors: int = 0
    by_reason: dict[str, int] = field(default_factory=dict)


class Collector:
    """Writes kept frames into a dataset folder; thread-safe (one lock around each offer).

    One collector per folder: quotas are enforced on what this collector knows (the manifest as
    it was at start plus what it wrote since). Give each worker its own folder, e.g.
    ``collected/<worker id>``, when several workers collect at once.
    """

    def __init__(
        self,
        root: str | Path,
        policy_for: Callable[[str], CollectionPolicy] | CollectionPolicy | None = None,
        *,
        disk_budget_mb: float = 2048.0,
        jpeg_quality: int = 92,
        source: str = "",
    ) -> None:
        self.root = Path(root).expanduser()
        self.root.mkdir(parents=True, exist_ok=True)
        if policy_for is None:
            policy_for = CollectionPolicy()
        if isinstance(policy_for, CollectionPolicy):
            fixed = policy_for
            self.policy_for: Callable[[str], CollectionPolicy] = lambda _cid: fixed
        else:
            self.policy_for = policy_for
        self.budget = int(disk_budget_mb * 1024 * 1024)
        self.jpeg_quality = jpeg_quality
        self.source = source
        self.stats = CollectorStats()
        self._lock = threading.Lock()
        self._samplers: dict[str, Sampler] = {}
        self.manifest = Manifest.load(self.root)
        self._entries: dict[str, dict[str, _Entry]] = {}
        self._bytes = 0
        for rec in self.manifest.records.values():
            path = self.root / rec["image"]
            try:
                size = path.stat().st_size
            except OSError:
                continue
            self._index(
                _Entry(
                    rec["image"],
                    str(rec.get("camera") or "unknown"),
                    float(rec.get("capture_ts") or 0.0),
                    priority(rec.get("reasons") or [], rec.get("label_source")),
                    size,
                    int(rec["phash"], 16) if rec.get("phash") else None,
                    decode_thumb(rec.get("thumb")),
                )
            )
        self._seq = 0

    def _index(self, e: _Entry) -> None:
        self._entries.setdefault(e.camera, {})[e.image] = e
        self._bytes += e.size

    @property
    def bytes_used(self) -> int:
        return self._bytes

    def count(self, camera_id: str | None = None) -> int:
        if camera_id is None:
            return sum(len(v) for v in self._entries.values())
        return len(self._entries.get(camera_id, {}))

    def sampler(self, camera_id: str) -> Sampler:
        s = self._samplers.get(camera_id)
        if s is None:  # setdefault: the detection and collector threads may race here
            s = self._samplers.setdefault(camera_id, Sampler(self.policy_for(camera_id)))
        return s

    def consider(
        self,
        camera_id: str,
        image: np.ndarray,
        capture_ts: float,
        detections: Sequence[Any] = (),
        *,
        extra_reasons: Sequence[str] = (),
        meta: dict[str, Any] | None = None,
    ) -> str | None:
        """Apply the camera's sampling policy and keep the frame if it qualifies."""
        sampler = self.sampler(camera_id)
        reasons = list(extra_reasons) + sampler.reasons(capture_ts, image, detections)
        if not reasons:
            return None
        saved = self.offer(camera_id, image, capture_ts, reasons, detections, meta=meta)
        if saved is not None:
            sampler.kept(capture_ts)
        return saved

    def offer(
        self,
        camera_id: str,
        image: np.ndarray,
        capture_ts: float,
        reasons: Sequence[str],
        detections: Sequence[Any] = (),
        *,
        meta: dict[str, Any] | None = None,
    ) -> str | None:
        """Keep ``image`` (unless a near-duplicate is already kept); returns its dataset path."""
        with self._lock:
            self.stats.offered += 1
            policy = self.policy_for(camera_id)
            small = _small_gray(image)
            h = phash(small)
            thumb = thumbnail(small)
            dup = self._near_duplicate(camera_id, h, thumb, policy)
            if dup is not None:
                self.stats.duplicates += 1
                self._merge_reasons(dup, reasons)
                return None
            try:
                rel, size = self._write(camera_id, image, capture_ts)
            except (OSError, ValueError) as e:
                self.stats.errors += 1
                log.warning("collector: cannot save a frame of camera %s: %s", camera_id, e)
                return None
            confs = sorted((round(float(d.confidence), 3) for d in detections), reverse=True)
            rec: dict[str, Any] = {
                "image": rel,
                "camera": camera_id,
                "capture_ts": round(float(capture_ts), 3),
                "reasons": list(dict.fromkeys(reasons)),
                "label_source": None,
                "split": None,
                "width": int(image.shape[1]),
                "height": int(image.shape[0]),
                "phash": f"{h:016x}",
                "thumb": encode_thumb(thumb),
                "detections": len(confs),
                "confidences": confs[:20],
                "collected_at": round(time.time(), 3),
            }
            if self.source:
                rec["source"] = self.source
            if meta:
                rec.update(meta)
            self.manifest.append(rec)
            self._index(
                _Entry(rel, camera_id, float(capture_ts), priority(reasons), size, h, thumb)
            )
            self.stats.saved += 1
            for r in rec["reasons"]:
                self.stats.by_reason[r] = self.stats.by_reason.get(r, 0) + 1
            self._enforce(camera_id, policy.max_images)
            return rel if rel in self._entries.get(camera_id, {}) else None

    def _near_duplicate(
        self, camera_id: str, h: int, thumb: np.ndarray, policy: CollectionPolicy
    ) -> _Entry | None:
        if policy.dedup_distance <= 0:
            return None
        for e in self._entries.get(camera_id, {}).values():
            if e.hash is not None and near_duplicate(
                h, thumb, e.hash, e.thumb, policy.dedup_distance, policy.dedup_pixel_delta
            ):
                return e
        return None

    def _merge_reasons(self, entry: _Entry, reasons: Sequence[str]) -> None:
        rec = self.manifest.records.get(entry.image)
        if rec is None:
            return
        new = [r for r in reasons if r not in (rec.get("reasons") or [])]
        if not new:
            return
        merged = list(rec.get("reasons") or []) + new
        self.manifest.append({"image": entry.image, "reasons": merged})
        entry.prio = max(entry.prio, priority(merged, rec.get("label_source")))

    def _write(self, camera_id: str, image: np.ndarray, ts: float) -> tuple[str, int]:
        ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, self.jpeg_quality])
        if not ok:
            raise ValueError("JPEG encoding failed")
        cam = safe_name(camera_id)
        folder = self.root / "images" / cam
        folder.mkdir(parents=True, exist_ok=True)
        self._seq += 1
        name = f"{cam}-{int(ts * 1000):013d}-{os.getpid() % 100000:05d}{self._seq:05d}.jpg"
        path = folder / name
        tmp = folder / f".{name}.tmp"
        data = buf.tobytes()
        try:
            tmp.write_bytes(data)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        return f"images/{cam}/{name}", len(data)

    def _drop(self, e: _Entry, why: str) -> None:
        (self.root / e.image).unlink(missing_ok=True)
        label_path(self.root, e.image).unlink(missing_ok=True)
        self._entries[e.camera].pop(e.image, None)
        self._bytes -= e.size
        self.manifest.remove(e.image, why)
        self.stats.evicted += 1

    def _enforce(self, camera_id: str, max_images: int) -> None:
        """Least useful first, then oldest: per-camera quota, then the disk budget."""
        cam = self._entries.get(camera_id, {})
        if len(cam) > max_images:
            for e in sorted(cam.values(), key=lambda e: (e.prio, e.ts))[: len(cam) - max_images]:
                self._drop(e, "camera quota")
        if self._bytes > self.budget:
            everything = sorted(
                (e for c in self._entries.values() for e in c.values()),
                key=lambda e: (e.prio, e.ts),
            )
            for e in everything:
                if self._bytes <= self.budget:
                    break
                self._drop(e, "disk budget")

    def close(self) -> None:
        """Compact the manifest (one line per image)."""
        with self._lock:
            self.manifest.save()
