"""The side-by-side ratios of a run and the cores column of its tables."""

from __future__ import annotations

import statistics
from typing import Any


def cores_text(r: dict[str, Any]) -> str:
    """Where the cores went during a run (see pipeline.bench.cpu_share)."""
    c = r.get("cores_used")
    if not c:
        return "-"
    parts = [str(c.get(k, "-")) for k in ("worker", "cameras", "kafka", "others", "idle")]
    if r.get("decode_cores") is not None:
        parts[0] += f" (decode {r['decode_cores']:.2f})"
    text = "/".join(parts)
    runs = (r.get("detector_only_adjacent") or {}).get("runs") or []
    if runs and all(x.get("cores_used") for x in runs):
        worker = statistics.mean(x["cores_used"]["worker"] for x in runs)
        idle = statistics.mean(x["cores_used"]["idle"] for x in runs)
        text += f" ({worker:.2f}/{idle:.2f})"
    return text


def _median_rows(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """One row per key; repeated runs (``--pairs``) become the median of their figures."""
    if len(rows) == 1:
        return rows[0]
    out = dict(rows[len(rows) // 2])
    for key in ("fps", "cpu_ms_per_frame"):
        if all(r.get(key) is not None for r in rows):
            out[key] = statistics.median(r[key] for r in rows)
    if all(r.get("detector_only_adjacent") for r in rows):
        out["detector_only_adjacent"] = {
            key: statistics.median(r["detector_only_adjacent"][key] for r in rows)
            for key in ("fps", "cpu_ms_per_frame")
        }
    return out


def ratios(res: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    grouped: dict[tuple, list] = {}
    for r in res.get("pipeline", []):
        grouped.setdefault((r["cameras"], r["gating"]), []).append(r)
    pipe = {k: _median_rows(v) for k, v in grouped.items()}
    ngrouped: dict[tuple[int, str], list] = {}
    for r in res.get("naive", []):
        ngrouped.setdefault((r["cameras"], r.get("allocator", "stock")), []).append(r)
    for n in sorted({n for n, _ in ngrouped}):
        p = pipe.get((n, False))
        if not p:
            continue
        kinds = {a: _median_rows(v) for (m, a), v in ngrouped.items() if m == n}
        for allocator, nr in kinds.items():
            if nr["fps"]:
                out[f"pipeline_vs_naive_{n}cams_{allocator}_malloc"] = round(
                    p["fps"] / nr["fps"], 2
                )
        # the target is judged against the faster naive variant
        allocator, nr = max(kinds.items(), key=lambda kv: kv[1]["fps"])
        if nr["fps"]:
            out[f"pipeline_vs_naive_{n}cams"] = round(p["fps"] / nr["fps"], 2)
            out[f"pipeline_vs_naive_{n}cams_baseline"] = f"naive, {allocator} malloc"
            if len(ngrouped[(n, allocator)]) > 1:
                out[f"pipeline_vs_naive_{n}cams_each_pair"] = [
                    round(a["fps"] / b["fps"], 2)
                    for a, b in zip(grouped[(n, False)], ngrouped[(n, allocator)], strict=False)
                ]
        if p.get("cpu_ms_per_frame") and nr.get("cpu_ms_per_frame"):
            out[f"naive_vs_pipeline_cpu_per_frame_{n}cams"] = round(
                nr["cpu_ms_per_frame"] / p["cpu_ms_per_frame"], 2
            )
    backend = res.get("pipeline_backend")
    det = [r for r in res.get("detector", []) if r["backend"] == backend]
    if det:
        best = max(det, key=lambda r: r["fps"])
        for (n, gating), p in pipe.items():
            if gating:
                continue
            same = next(
                (r for r in det if r["batch"] == min(n, max(d["batch"] for d in det))), best
            )
            out[f"pipeline_vs_detector_only_{n}cams"] = round(p["fps"] / same["fps"], 3)
            out[f"pipeline_vs_best_detector_only_{n}cams"] = round(p["fps"] / best["fps"], 3)
    for (n, gating), p in pipe.items():
        adj = p.get("detector_only_adjacent")
        if gating or not adj:
            continue
        # only meaningful when the cameras offer more frames than the pipeline processes
        p_sat = p.get("offered_fps", 0) > 1.1 * p["fps"]
        out[f"pipeline_saturated_{n}cams"] = p_sat
        out[f"pipeline_vs_detector_only_adjacent_{n}cams"] = round(p["fps"] / adj["fps"], 3)
        out[f"detector_only_vs_pipeline_cpu_per_frame_{n}cams"] = round(
            adj["cpu_ms_per_frame"] / p["cpu_ms_per_frame"], 3
        )
    g = res.get("gating")
    if g:
        out["gating_call_reduction"] = g["call_reduction"]
        out["gating_missed_alerts"] = len(g["missed"])
    soak = res.get("soak")
    if soak:
        rss = soak["rss_mb"]
        out["soak_rss_growth_pct"] = round(100 * (rss["end"] - rss["start"]) / rss["start"], 1)
    return out
