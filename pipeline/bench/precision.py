"""Reduced precision side by side (``--precisions f32,bf16,int8``) and the sizing table
(``--capacity``): how many cameras at N fps one worker carries, per model, input size and
precision.

The INT8 model is the one ``vigil models quantize`` made for these weights on this machine (the
gate's record, :mod:`detectors.precision_record`); when there is none yet the bench makes it
first, with the same gate, and shows the gate's mAP figures next to the speed. The bench measures the INT8
model even when the gate refused it (marked so): the speed is what a better calibration set
would buy.
"""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Any

from detectors import precision_record as pr
from detectors.errors import WeightsError


class PrecisionSection:
    """``precision`` and ``capacity``: both build OpenVINO detectors at a chosen precision."""

    # -- detectors at a precision --
    def gate_for(self, weights: str, imgsz: int) -> pr.GateRecord:
        """The gate's record for ``weights`` at ``imgsz`` here, made now if missing."""
        from detectors.backends.export import export_root  # noqa: PLC0415 (imports torch)
        from detectors.loading import load_model  # noqa: PLC0415 (imports torch)
        from detectors.retrain.precision_gate import run_gate  # noqa: PLC0415 (imports torch)

        src = Path(load_model(weights, device="cpu").ckpt_path)
        rec = pr.read_record(pr.record_path(export_root(src), imgsz))
        fresh = rec is not None and rec.machine == pr.machine_id() and rec.int8_dir
        if fresh and Path(rec.int8_dir, "model.xml").is_file():
            return rec
        self.emit(f"\n(no INT8 gate record for {weights} at {imgsz} here: quantizing first)")
        return run_gate(
            weights,
            imgsz,
            footage_files=list(dict.fromkeys(self.files)),
            images=self.args.int8_images,
            heldout_frames=self.args.gate_frames,
            # minutes, not seconds: the bench measures speed; `vigil models quantize` runs it
            accuracy_control=False,
            say=lambda m: self.emit(f"    {m}"),
        ).record

    def precision_detector(self, precision: str, **over):
        """An OpenVINO detector at ``precision`` (f32, bf16, int8), and the gate's verdict for
        it (None for f32)."""
        d = dict(over)
        weights, imgsz = d.get("weights", self.det_dict["weights"]), d.get("imgsz", self.args.imgsz)
        if precision != "int8":
            det = self.detector("openvino", precision=precision, **d)
            return det, None
        from detectors.retrain.precision_gate import _use_model  # noqa: PLC0415 (imports torch)

        rec = self.gate_for(weights, imgsz)
        det = self.detector("openvino", precision="f32", **d)
        _use_model(det, Path(rec.int8_dir or ""))
        det.backend.precision = "int8"
        return det, rec

    def precision(self) -> None:
        precisions = [p for p in self.args.precisions if p in pr.PRECISIONS]
        if not precisions:
            return
        cams = self.args.precision_cameras  # 0: detector-only
        bs = min(4, max(self.args.batch_sizes))
        self.emit(
            f"\n## Precision side by side (OpenVINO, imgsz {self.args.imgsz}; detector-only batch "
            f"{bs}; pipeline {cams} cameras at {self.args.camera_fps:g} fps)"
        )
        self.emit(
            "| precision | gate mAP50 | gate mAP50-95 | gate | detector-only frames/s | "
            "CPU ms/frame | pipeline frames/s | pipeline p99 ms | pipeline CPU ms/frame |"
        )
        self.emit("|---|---|---|---|---|---|---|---|---|")
        rows = []
        gate: pr.GateRecord | None = None
        for p in precisions:
            det, rec = self.precision_detector(p, tracker="none", max_batch=max(bs, cams))
            gate = rec or gate
            self.threads_for(det)
            only = self.time_detector(det, self.pool(max(cams, 1)), bs, self.args.detector_seconds)
            row: dict[str, Any] = {"precision": p, "detector_only": only}
            del det
            gc.collect()
            if cams > 0:  # as the pipeline section runs it: the config's tracker
                det, _ = self.precision_detector(p, max_batch=max(bs, cams))
                row["pipeline"] = self.pipeline_run(det, cams, False, self.args.duration)
                del det
                gc.collect()
            rows.append(row)
        if gate is None and "int8" not in precisions:
            gate = self.gate_for(self.det_dict["weights"], self.args.imgsz)
        for row in rows:
            p = row["precision"]
            g = (gate.f32 if p == "f32" else gate.results.get(p)) if gate else None
            row["gate"] = g
            verdict = "-" if not g or p == "f32" else ("passed" if g.get("passed") else "REFUSED")
            pipe = row.get("pipeline") or {}
            self.emit(
                f"| {p} | {_pct(g, 'map50')} | {_pct(g, 'map50_95')} | {verdict} | "
                f"{row['detector_only']['fps']} | {row['detector_only']['cpu_ms_per_frame']} | "
                f"{pipe.get('fps', '-')} | {pipe.get('latency_p99_ms', '-')} | "
                f"{pipe.get('cpu_ms_per_frame', '-')} |"
            )
        for row in rows:
            if row["gate"] and row["gate"].get("reason"):
                self.emit(f"- gate {row['precision']}: {row['gate']['reason']}")
        if gate is not None:
            self.emit(f"- gate held-out frames: {gate.heldout}")
        base = next((r for r in rows if r["precision"] == "f32"), None)
        ratios = {}
        if base:
            for r in rows:
                if r is base:
                    continue
                key = f"{r['precision']}_over_f32"
                ratios[key + "_detector_fps"] = round(
                    r["detector_only"]["fps"] / base["detector_only"]["fps"], 3
                )
                ratios[key + "_cpu_ms_per_frame"] = round(
                    r["detector_only"]["cpu_ms_per_frame"]
                    / base["detector_only"]["cpu_ms_per_frame"],
                    3,
                )
                if r.get("pipeline") and base.get("pipeline"):
                    ratios[key + "_pipeline_fps"] = round(
                        r["pipeline"]["fps"] / base["pipeline"]["fps"], 3
                    )
            for k, v in ratios.items():
                self.emit(f"- {k}: {v}")
        self.result["precision"] = {
            "rows": rows,
            "ratios": ratios,
            "gate": gate.to_dict() if gate else None,
        }

    # -- the sizing table --
    def capacity(self) -> None:
        """For each model x precision: step the camera count at ``--capacity-fps`` until a
        camera falls behind (processed < 0.98 x offered, or p99 capture-to-Kafka >= 1 s)."""
        fps = self.args.capacity_fps
        models = []
        for m in self.args.capacity_models:
            kind, _, size = m.partition("@")
            weights = self.args.student if kind == "student" else self.det_dict["weights"]
            if kind == "student" and not weights:
                self.emit(f"\n(capacity: {m} skipped: no --student WEIGHTS)")
                continue
            # a student knows only its site's classes: it detects all of them, not the
            # config's class filter (which names classes it may not have)
            over = {"classes": None} if kind == "student" else {}
            models.append((m, weights, int(size or self.args.imgsz), over))
        saved = self.args.camera_fps
        self.args.camera_fps = fps
        gated = " with motion gating" if getattr(self.args, "capacity_gating", False) else ""
        self.emit(
            f"\n## Sizing{gated}: cameras at {fps:g} fps one worker carries (processed >= 0.98 x "
            f"offered per camera, p99 < 1 s; steps {self.args.capacity_start}+"
            f"{self.args.capacity_step} up to {self.args.capacity_max}, "
            f"{self.args.duration:g} s each)"
        )
        self.emit(
            "| model | precision | cameras | worker cores | cameras per core | "
            "p99 ms at that count | first failing count (why) |"
        )
        self.emit("|---|---|---|---|---|---|---|")
        table = []
        try:
            for label, weights, imgsz, over in models:
                for p in self.args.capacity_precisions:
                    try:
                        det, _ = self.precision_detector(
                            p,
                            weights=weights,
                            imgsz=imgsz,
                            max_batch=self.det_dict["max_batch"],
                            **over,
                        )
                    except WeightsError as e:  # also the backends' and the quantizer's errors
                        # one model that cannot run is a row that says why, not a lost table
                        self.emit(f"| {label} | {p} | - | - | - | - | not run: {e} |")
                        table.append({"model": label, "precision": p, "error": str(e)})
                        continue
                    row = self._step(det, label, p, fps)
                    table.append(row)
                    ok = row["ok"]
                    self.emit(
                        f"| {label} | {p} | {row['cameras']} | "
                        f"{ok['worker_cores'] if ok else '-'} | {row['per_core'] or '-'} | "
                        f"{ok['p99_ms'] if ok else '-'} | {row['failed'] or '-'} |"
                    )
                    del det
                    gc.collect()
        finally:
            self.args.camera_fps = saved
        self.result["capacity"] = table

    def _step(self, det, label: str, precision: str, fps: float) -> dict[str, Any]:
        ok: dict[str, Any] | None = None
        failed = None
        runs = []
        n = self.args.capacity_start
        while n <= self.args.capacity_max:
            gating = bool(getattr(self.args, "capacity_gating", False))
            r = self.pipeline_run(det, n, gating, self.args.duration)
            worst = min(r["per_camera_fps"].values())
            p99 = r["latency_p99_ms"] or 0
            why = []
            if worst < 0.98 * fps:
                why.append(f"slowest camera {worst} fps")
            if p99 >= 1000:
                why.append(f"p99 {p99} ms")
            runs.append(
                {
                    "cameras": n,
                    "worst_camera_fps": worst,
                    "p99_ms": p99,
                    "why": why,
                    # where the machine's cores went, and the share of frames detected (gating)
                    "cores_used": r.get("cores_used"),
                    "detected_share": (
                        round(r["detector_fps"] / r["published_fps"], 3)
                        if r.get("published_fps")
                        else None
                    ),
                }
            )
            if why:
                failed = f"{n} ({', '.join(why)})"
                break
            ok = {
                "cameras": n,
                "worker_cores": (r.get("cores_used") or {}).get("worker"),
                "p99_ms": p99,
            }
            n += self.args.capacity_step
        cameras = ok["cameras"] if ok else 0
        cores = (ok or {}).get("worker_cores") or 0
        return {
            "model": label,
            "precision": precision,
            "gating": bool(getattr(self.args, "capacity_gating", False)),
            "cameras": cameras,
            "per_core": round(cameras / cores, 1) if cores else None,
            "ok": ok,
            "failed": failed or (f"none up to {self.args.capacity_max}" if ok else None),
            "runs": runs,
        }


def _pct(g: dict[str, Any] | None, key: str) -> str:
    return f"{100 * g[key]:.1f}" if g and key in g else "-"
