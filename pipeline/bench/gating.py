"""Motion gating measured offline: the same footage through the rules with gating off and on."""

from __future__ import annotations

from typing import Any

import numpy as np

from pipeline.bench.footage import replay_frames
from pipeline.common.assets import footage
from pipeline.common.contracts import Frame
from pipeline.ingest.motion import MotionDetector


class GatingSection:
    """``gating``: detector calls saved and alerts compared, on one footage file."""

    def gating(self) -> None:

        cfg = self.base
        camera = self.args.gating_camera
        spec = next((c for c in cfg.cameras if c.id == camera), None)
        fps = self.args.gating_fps or (spec.fps if spec and spec.fps else cfg.ingest.default_fps)
        mcfg = cfg.ingest.motion
        if spec is not None and spec.motion is not None:
            mcfg = spec.motion.apply(mcfg)
        mcfg = mcfg.model_copy(update={"enabled": True})
        det = self.detector(self.args.pipeline_backend)
        path = footage(self.args.gating_file)
        frames = replay_frames(path, fps)
        runs = gating_replay(det, frames, cfg.alerts or {}, camera, fps, mcfg)
        diff = compare_alerts(
            runs["off"]["alerts"], runs["on"]["alerts"], self.args.alert_tolerance
        )
        out = {
            "file": path.name,
            "camera": camera,
            "fps": fps,
            "frames": len(frames),
            "motion": mcfg.model_dump(),
            "detector_calls_off": runs["off"]["detector_calls"],
            "detector_calls_on": runs["on"]["detector_calls"],
            "call_reduction": round(
                runs["off"]["detector_calls"] / max(runs["on"]["detector_calls"], 1), 2
            ),
            "alerts_off": runs["off"]["alerts"],
            "alerts_on": runs["on"]["alerts"],
            **diff,
        }
        self.result["gating"] = out
        self.emit(
            f"\n## Motion gating, offline replay of {path.name} at {fps:g} fps ({len(frames)} frames, rules of {self.args.config or 'the default config'})"
        )
        self.emit(
            f"detector calls: off {out['detector_calls_off']}, on {out['detector_calls_on']} "
            f"({out['call_reduction']}x fewer); alerts started: off {diff['started_off']}, on {diff['started_on']}, "
            f"matched {diff['matched']}, missed {len(diff['missed'])}, extra {len(diff['extra'])}, "
            f"largest start shift {diff['max_start_shift_s']} s; end shifts (on - off) "
            f"{diff['end_shifts_s']} s, ended in one run only {diff['ended_in_one_run_only']}"
        )


def gating_replay(
    det, frames: list[tuple[float, np.ndarray]], rules: dict, camera: str, fps: float, motion
) -> dict[str, dict[str, Any]]:
    """Replay ``frames`` (from :func:`replay_frames`) through tracking and the alert rules, with
    motion gating off and on (``motion``: a MotionConfig): detector calls and alerts of each.

    The detector runs once per frame (its untracked output is the same in both runs); each run
    has its own trackers and rule engine and, with gating, re-feeds the last detector output to
    the tracker for skipped frames exactly as the ingest worker does.
    """
    from alerts.engine import RuleEngine  # noqa: PLC0415 (Kafka/Redis clients: loaded by the sections that use them)
    from detectors.stream_trackers import StreamTrackers  # noqa: PLC0415 (imports torch: loaded only when needed)
    from pipeline.ingest.messages import detection_message  # noqa: PLC0415 (Kafka/Redis clients: loaded by the sections that use them)

    raw: list[np.ndarray] = []
    for k in range(0, len(frames), 4):
        raw += det.infer([f for _, f in frames[k : k + 4]])
    epoch = 1_700_000_000_000
    runs: dict[str, Any] = {}
    for mode in ("off", "on"):
        engine = RuleEngine(rules)
        trackers = (
            StreamTrackers(det.config.tracker, det.config.track_buffer_s) if det.trackers else None
        )
        gate = MotionDetector(motion) if mode == "on" else None
        last = np.zeros((0, 6), np.float32)  # untracked boxes of the last detector run
        calls = 0
        alerts = []
        messages = []
        for i, ((t, image), boxes) in enumerate(zip(frames, raw, strict=True)):
            ts = epoch / 1000 + t
            decision = None
            if gate is not None:
                h, w = image.shape[:2]
                objects = (last[:, :4] / np.array([w, h, w, h], np.float32)).tolist()
                decision = gate.check(image, ts, [tuple(b) for b in objects])
            if decision is None or decision.detect:
                calls += 1
                last = boxes
            # skipped frames re-feed the last boxes to the tracker, as the worker does
            dets = det.finish(image, last, camera if trackers else None, fps, trackers)
            frame = Frame(camera, i, epoch, ts, image)
            msg = detection_message(frame, dets, det.name, det.version, "bench", 0.0)
            if decision is not None:
                msg["motion"] = decision.motion
                msg["carried_over"] = not decision.detect
            messages.append(msg)
            alerts += engine.process(msg)
        runs[mode] = {
            "detector_calls": calls,
            "alerts": [_alert_row(a, epoch) for a in alerts],
            "messages": messages,
        }
    return runs


def _alert_row(a, epoch: int) -> dict[str, Any]:
    base = epoch / 1000
    return {
        "rule": a.rule_id,
        "status": a.status,
        "track_id": a.track_id,
        "started_s": round(a.started_at - base, 2),
        "ended_s": None if a.ended_at is None else round(a.ended_at - base, 2),
    }


def compare_alerts(off: list[dict], on: list[dict], tolerance_s: float) -> dict[str, Any]:
    """Match the 'started' alerts of two runs by rule and start time (within ``tolerance_s``)."""
    a = [x for x in off if x["status"] == "started"]
    b = [x for x in on if x["status"] == "started"]
    used: set[int] = set()
    missed, shifts, pairs = [], [], []
    for x in a:
        best, gap = -1, tolerance_s + 1e-9
        for j, y in enumerate(b):
            if j in used or y["rule"] != x["rule"]:
                continue
            d = abs(y["started_s"] - x["started_s"])
            if d <= gap:
                best, gap = j, d
        if best < 0:
            missed.append(x)
        else:
            used.add(best)
            shifts.append(gap)
            pairs.append((x, b[best]))
    extra = [y for j, y in enumerate(b) if j not in used]
    # how long each matched alert lasted in both runs (an 'ended' carries its start time)
    ends_a = {(x["rule"], x["started_s"]): x["ended_s"] for x in off if x["status"] == "ended"}
    ends_b = {(y["rule"], y["started_s"]): y["ended_s"] for y in on if y["status"] == "ended"}
    end_shifts, end_missing = [], 0
    for x in a:
        pair = next((y for y in pairs if y[0] is x), None)
        if pair is None:
            continue
        ea, eb = (
            ends_a.get((x["rule"], x["started_s"])),
            ends_b.get((pair[1]["rule"], pair[1]["started_s"])),
        )
        if ea is None and eb is None:
            continue
        if ea is None or eb is None:
            end_missing += 1
        else:
            end_shifts.append(eb - ea)
    return {
        "started_off": len(a),
        "started_on": len(b),
        "matched": len(shifts),
        "missed": missed,
        "extra": extra,
        "max_start_shift_s": round(max(shifts), 2) if shifts else 0.0,
        "end_shifts_s": [round(v, 2) for v in end_shifts],
        "ended_in_one_run_only": end_missing,
    }
