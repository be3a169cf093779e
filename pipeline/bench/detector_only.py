"""Detector-only throughput per backend and batch size, and the model-only ceiling."""

from __future__ import annotations

import gc
import time
from typing import Any

import numpy as np

from pipeline.bench.cpu_share import CpuShare
from pipeline.bench.footage import sample_frames


class DetectorSection:
    """``detector``: decoded frames in memory through the detector alone."""

    def pool(self, n: int) -> list[np.ndarray]:
        """Frames of the first ``n`` camera files, interleaved (a batch mixes the cameras)."""
        key = min(n, len(self.files))
        if key not in self._pools:
            per = [sample_frames(p, 8) for p in self.files[:key]]
            self._pools[key] = [per[i % key][i // key % 8] for i in range(8 * key)]
        return self._pools[key]

    @staticmethod
    def time_detector(det, pool: list[np.ndarray], bs: int, seconds: float) -> dict[str, Any]:
        """Detector-only throughput: batches of ``bs`` frames of ``pool`` for ``seconds``."""
        batches = [pool[(k * bs + j) % len(pool)] for k in range(len(pool)) for j in range(bs)]
        batches = [batches[k : k + bs] for k in range(0, len(batches), bs)]
        for b in batches[:2]:
            det.detect(b)
        # the detector at its best: with a background backend the next batch runs while NMS
        # of the previous one does (submit/collect, as the worker does)
        overlap = det.overlaps and bs <= det.config.max_batch
        pending = None
        n = calls = 0
        share = CpuShare()
        c0, t0 = time.process_time(), time.perf_counter()
        while True:
            b = batches[calls % len(batches)]
            if overlap:
                job = det.submit(b)
                if pending is not None:
                    det.collect(pending)
                pending = job
            else:
                det.detect(b)
            n += len(b)
            calls += 1
            dt = time.perf_counter() - t0
            if dt >= seconds and calls >= 3:
                break
        if pending is not None:
            det.collect(pending)
            dt = time.perf_counter() - t0
        cpu = time.process_time() - c0
        return {
            "batch": bs,
            "fps": round(n / dt, 2),
            "ms_per_batch": round(1000 * dt / calls, 1),
            "cpu_ms_per_frame": round(1000 * cpu / n, 1),
            "cores_used": share.stop(),
        }

    @staticmethod
    def time_model(det, pool: list[np.ndarray], bs: int, seconds: float) -> float | None:
        """The ceiling: the backend's forward pass alone on an already prepared batch (no
        letterbox, no upload, no NMS), frames/s; None for the ultralytics backend."""
        import torch  # noqa: PLC0415 (torch: heavy)

        if det.backend is None:
            return None
        boxer = det._boxers[0]
        canvas, _ = boxer.letterbox(pool[:bs] if len(pool) >= bs else (pool * bs)[:bs])
        x = det.backend.prepare(canvas, boxer)
        if isinstance(x, np.ndarray):
            x = x.copy()  # the letterboxer's buffer is reused by the next detect()
        cuda = det.device.startswith("cuda")
        for _ in range(3):
            det.backend.run(x)
        if cuda:
            torch.cuda.synchronize()
        n = 0
        t0 = time.perf_counter()
        while True:
            det.backend.run(x)
            n += 1
            if n % 5 == 0:
                if cuda:
                    torch.cuda.synchronize()
                if time.perf_counter() - t0 >= seconds:
                    break
        return round(n * bs / (time.perf_counter() - t0), 2)

    def detector_only(self) -> None:
        pool = self.pool(4)
        rows = []
        self.emit("\n## Detector only (frames in memory; letterbox + inference + NMS)")
        self.emit(
            "| backend | batch | frames/s | ms/batch | CPU ms/frame | "
            "model-only frames/s (ceiling) | fraction of ceiling |"
        )
        self.emit("|---|---|---|---|---|---|---|")
        for name in self.backends():
            det = self.detector(name, tracker="none", max_batch=max(self.args.batch_sizes))
            self.threads_for(det)
            for bs in self.args.batch_sizes:
                row = {
                    "backend": name,
                    **self.time_detector(det, pool, bs, self.args.detector_seconds),
                }
                ceiling = self.time_model(det, pool, bs, self.args.detector_seconds)
                if ceiling:
                    row["model_only_fps"] = ceiling
                    row["fraction_of_ceiling"] = round(row["fps"] / ceiling, 3)
                rows.append(row)
                self.emit(
                    f"| {name} | {bs} | {row['fps']} | {row['ms_per_batch']} | "
                    f"{row['cpu_ms_per_frame']} | {row.get('model_only_fps', '-')} | "
                    f"{row.get('fraction_of_ceiling', '-')} |"
                )
            del det
            gc.collect()
        self.result["detector"] = rows
