"""Drift: is a camera's live output moving away from what the model saw when it was evaluated?

A *profile* summarises detections at the serving threshold: frames, share of frames with no
detection, detections per frame, mean and spread of confidence, share of detections in the
uncertain band, and the class mix. The reference profile is computed at evaluation time on the
held-out split and stored with the model version in the registry; the live profile is accumulated
per camera by :class:`DriftMonitor` inside the ingest worker.

The drift score of a camera is the largest of

* ``confidence_drop``: relative fall of the mean confidence (live vs reference);
* ``class_shift``: total-variation distance between the class mixes (0 = same, 1 = disjoint);
* ``empty_shift``: change in the share of frames with no detection.

Retraining is due for a camera when its score reaches ``models.drift.threshold`` (0.25) with at
least ``models.drift.min_frames`` frames in the window.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import Gauge

from detectors.retrain.config import DriftConfig, ModelsConfig
from detectors.retrain.model_registry import ModelRegistry
from pipeline.common.redis import RedisConfig

log = logging.getLogger(__name__)

DRIFT_SCORE = Gauge(
    "vigil_model_drift_score", "Drift of live detections from the model's reference", ["camera"]
)
DRIFT_MEAN_CONF = Gauge(
    "vigil_model_live_mean_confidence", "Mean detection confidence in the drift window", ["camera"]
)

UNCERTAIN_BAND = (0.25, 0.5)


@dataclass
class _Acc:
    frames: int = 0
    empty: int = 0
    dets: int = 0
    conf_sum: float = 0.0
    conf_sq: float = 0.0
    uncertain: int = 0
    classes: dict[str, int] = field(default_factory=dict)

    def add(self, preds: Sequence[tuple[str, float]]) -> None:
        self.frames += 1
        if not preds:
            self.empty += 1
        for label, conf in preds:
            self.dets += 1
            self.conf_sum += conf
            self.conf_sq += conf * conf
            if UNCERTAIN_BAND[0] <= conf <= UNCERTAIN_BAND[1]:
                self.uncertain += 1
            self.classes[label] = self.classes.get(label, 0) + 1

    def merge(self, other: _Acc) -> None:
        self.frames += other.frames
        self.empty += other.empty
        self.dets += other.dets
        self.conf_sum += other.conf_sum
        self.conf_sq += other.conf_sq
        self.uncertain += other.uncertain
        for k, v in other.classes.items():
            self.classes[k] = self.classes.get(k, 0) + v

    def profile(self) -> dict[str, Any]:
        n = max(self.dets, 1)
        mean = self.conf_sum / n if self.dets else 0.0
        var = max(self.conf_sq / n - mean * mean, 0.0) if self.dets else 0.0
        return {
            "frames": self.frames,
            "empty_rate": round(self.empty / max(self.frames, 1), 4),
            "dets_per_frame": round(self.dets / max(self.frames, 1), 4),
            "mean_conf": round(mean, 4),
            "conf_std": round(var**0.5, 4),
            "uncertain_rate": round(self.uncertain / n, 4) if self.dets else 0.0,
            "class_mix": {k: round(v / n, 4) for k, v in sorted(self.classes.items())},
        }


def profile_from_predictions(frames: Iterable[Sequence[tuple[str, float]]]) -> dict[str, Any]:
    """Profile of per-frame ``[(label, confidence), ...]`` lists."""
    acc = _Acc()
    for preds in frames:
        acc.add(preds)
    return acc.profile()


def drift_score(live: dict[str, Any], ref: dict[str, Any]) -> dict[str, float]:
    """Components and overall score (their maximum); see the module docstring."""
    ref_conf = float(ref.get("mean_conf") or 0.0)
    live_conf = float(live.get("mean_conf") or 0.0)
    conf_drop = max(0.0, ref_conf - live_conf) / ref_conf if ref_conf > 0 else 0.0
    a, b = ref.get("class_mix") or {}, live.get("class_mix") or {}
    class_shift = 0.5 * sum(abs(a.get(k, 0.0) - b.get(k, 0.0)) for k in set(a) | set(b))
    if not a or not b:
        class_shift = 0.0  # nothing to compare (no detections on one side)
    empty_shift = abs(float(live.get("empty_rate", 0.0)) - float(ref.get("empty_rate", 0.0)))
    comps = {
        "confidence_drop": round(conf_drop, 4),
        "class_shift": round(class_shift, 4),
        "empty_shift": round(empty_shift, 4),
    }
    comps["score"] = max(comps.values())
    return comps


@dataclass
class CameraDrift:
    camera: str
    live: dict[str, Any]
    reference: dict[str, Any] | None
    components: dict[str, float]
    due: bool
    reason: str
    model_version: str | None = None
    updated_at: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "camera": self.camera,
            "live": self.live,
            "components": self.components,
            "due": self.due,
            "reason": self.reason,
            "model_version": self.model_version,
            "updated_at": self.updated_at,
        }


def assess(
    camera: str,
    live: dict[str, Any],
    reference: dict[str, Any] | None,
    *,
    threshold: float,
    min_frames: int,
    model_version: str | None = None,
    updated_at: float | None = None,
) -> CameraDrift:
    if not reference:
        return CameraDrift(
            camera,
            live,
            None,
            {},
            False,
            "no reference profile for this model (evaluate or retrain it with Vigil)",
            model_version,
            updated_at,
        )
    comps = drift_score(live, reference)
    frames = int(live.get("frames") or 0)
    if frames < min_frames:
        return CameraDrift(
            camera,
            live,
            reference,
            comps,
            False,
            f"only {frames} frame(s) in the window (need {min_frames})",
            model_version,
            updated_at,
        )
    due = comps["score"] >= threshold
    worst = max(("confidence_drop", "class_shift", "empty_shift"), key=lambda k: comps[k])
    reason = (
        f"retraining due: {worst} {comps[worst]:.2f} >= {threshold:.2f}"
        if due
        else f"ok: score {comps['score']:.2f} < {threshold:.2f}"
    )
    return CameraDrift(camera, live, reference, comps, due, reason, model_version, updated_at)


class DriftMonitor:
    """Frame listener of the ingest worker: live profile per camera over a sliding window.

    The window is kept as six buckets so old frames age out in steps. Every
    ``publish_interval_s`` the live profiles and scores go to the Prometheus gauges and to the
    registry's Redis hash (``vigil models drift`` reads them). Statistics restart when the worker
    swaps its model: a new model has its own confidence distribution.
    """

    BUCKETS = 6

    def __init__(
        self, registry, cfg: DriftConfig, current_version: Callable[[], str | None]
    ) -> None:
        """``current_version()`` names the model the worker runs now (it changes on hot reload)."""
        self.registry = registry
        self.cfg = cfg
        self._current_version = current_version
        self._bucket_s = self.cfg.window_s / self.BUCKETS
        self._buckets: dict[str, deque[tuple[float, _Acc]]] = {}
        self._version: str | None = None
        self._reference: dict[str, Any] | None = None
        self._last_publish = time.monotonic()
        self._lock = threading.Lock()

    def __call__(self, frame, detections: list) -> None:
        version = self._current_version()
        if version != self._version:
            with self._lock:
                self._version = version
                self._buckets.clear()
                self._reference = None
                try:
                    mv = self.registry.get(version) if version else None
                    self._reference = (mv.profile or None) if mv is not None else None
                except Exception as e:  # registry away: drift waits, detection does not
                    log.debug("drift: no reference for %s: %s", version, e)
        now = frame.capture_ts
        with self._lock:
            dq = self._buckets.setdefault(frame.camera_id, deque())
            if not dq or now - dq[-1][0] >= self._bucket_s:
                dq.append((now, _Acc()))
            while dq and now - dq[0][0] > self.cfg.window_s:
                dq.popleft()
            dq[-1][1].add([(d.label, float(d.confidence)) for d in detections])
        if time.monotonic() - self._last_publish >= self.cfg.publish_interval_s:
            self.publish()

    def live(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            out = {}
            for cam, dq in self._buckets.items():
                acc = _Acc()
                for _, b in dq:
                    acc.merge(b)
                out[cam] = acc.profile()
            return out

    def assessments(self) -> list[CameraDrift]:
        return [
            assess(
                cam,
                prof,
                self._reference,
                threshold=self.cfg.threshold,
                min_frames=self.cfg.min_frames,
                model_version=self._version,
                updated_at=time.time(),
            )
            for cam, prof in sorted(self.live().items())
        ]

    def publish(self) -> None:
        self._last_publish = time.monotonic()
        rows = self.assessments()
        for r in rows:
            DRIFT_MEAN_CONF.labels(r.camera).set(r.live.get("mean_conf", 0.0))
            if r.components:
                DRIFT_SCORE.labels(r.camera).set(r.components["score"])
        try:
            self.registry.put_drift({r.camera: r.to_dict() for r in rows})
        except Exception as e:
            log.debug("drift: cannot publish to Redis: %s", e)

    def close(self) -> None:
        self.publish()


def start_drift_monitor(
    redis_cfg: RedisConfig, models_cfg: ModelsConfig, current_version: Callable[[], str | None]
) -> DriftMonitor | None:
    """A drift monitor (a frame listener) for a worker that follows the registry, where the
    reference profile lives; None when drift is off."""
    if not (models_cfg.registry and models_cfg.drift.enabled):
        return None
    return DriftMonitor(ModelRegistry(redis_cfg, models_cfg), models_cfg.drift, current_version)


def report(registry, threshold: float, min_frames: int) -> list[CameraDrift]:
    """Assess the live profiles the workers published against each model's reference."""
    rows = []
    refs: dict[str, dict[str, Any] | None] = {}
    for cam, data in sorted(registry.get_drift().items()):
        version = data.get("model_version")
        if version not in refs:
            mv = registry.get(version) if version else None
            refs[version] = mv.profile if mv is not None else None
        rows.append(
            assess(
                cam,
                data.get("live") or {},
                refs[version],
                threshold=threshold,
                min_frames=min_frames,
                model_version=version,
                updated_at=data.get("updated_at"),
            )
        )
    return rows


def format_report(rows: list[CameraDrift]) -> str:
    if not rows:
        return (
            "no drift data: workers publish it when models.registry and models.drift.enabled "
            "are set"
        )
    lines = [
        f"{'camera':<20} {'frames':>7} {'conf':>6} {'ref':>6} {'score':>6}  verdict",
    ]
    for r in rows:
        ref = (r.reference or {}).get("mean_conf")
        ref_text = f"{ref:.3f}" if ref is not None else "-"
        score = r.components.get("score")
        score_text = f"{score:.2f}" if score is not None else "-"
        lines.append(
            f"{r.camera:<20} {int(r.live.get('frames', 0)):>7} "
            f"{float(r.live.get('mean_conf', 0.0)):>6.3f} {ref_text:>6} {score_text:>6}  "
            f"{r.reason}"
        )
    due = [r.camera for r in rows if r.due]
    lines.append(
        f"retraining due for: {', '.join(due)}" if due else "no camera needs retraining yet"
    )
    return "\n".join(lines)


def dumps(rows: list[CameraDrift]) -> str:
    return json.dumps([r.to_dict() for r in rows], indent=2)
