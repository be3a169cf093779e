"""Where the machine's cores went during a benchmark run (Linux ``/proc``).

The bench runs the cameras (``vigil camera-sim``), Kafka and Redis on the same machine as the
worker, and the machine may be shared with others. A frames/s figure alone cannot tell a slower
worker from a worker that had fewer cores: this splits the run's core-seconds into the worker,
the camera server, the brokers, other processes, time taken by the hypervisor (steal) and idle.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Mapping
from pathlib import Path

# /proc/<pid>/cmdline fragments of the local services (deploy/local)
SERVICES = {"kafka": "kafka.Kafka", "redis": "redis-server"}


def _ticks() -> int:
    return os.sysconf("SC_CLK_TCK")


def machine_times() -> dict[str, float]:
    """Seconds summed over all cores since boot: busy, idle and steal (first line of /proc/stat)."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    v = [int(x) / _ticks() for x in fields] + [0.0] * 8
    user, nice, system, idle, iowait, irq, softirq, steal = v[:8]
    return {
        "busy": user + nice + system + irq + softirq,
        "idle": idle + iowait,
        "steal": steal,
    }


def process_seconds(pid: int) -> float | None:
    """User + system CPU seconds of ``pid`` (all its threads); None once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()  # the command name may hold spaces
    return (int(fields[11]) + int(fields[12])) / _ticks()


def _thread_group(name: str) -> str:
    if name.startswith("reader-"):
        return "decode"  # one reader per camera; FFmpeg decodes on it (ingest.decode_threads: 1)
    if "network-thread" in name:
        return "kafka client"  # kafka-python's I/O thread
    if name == "detection-loop":
        return "detection loop"  # batching, NMS, tracking, messages
    return "other python"


def thread_times() -> dict[tuple[int, int], tuple[float, str]]:
    """This process's threads: ``(tid, start tick) -> (CPU seconds so far, job)``. The start
    tick tells a reused tid from the thread that had it before. Threads Python did not start
    (OpenVINO's and PyTorch's pools) count as ``inference``.

    CPU time comes from ``schedstat``: the scheduler's nanosecond runtime, the clock behind
    ``time.process_time()`` (``stat`` only has 10 ms ticks). Reading every thread takes a
    while, so a thread busy with the GIL held can gain a few ms between this sample and the
    process's: negligible over a bench run's 30 s."""
    names = {t.native_id: t.name for t in threading.enumerate()}
    out: dict[tuple[int, int], tuple[float, str]] = {}
    for task in Path("/proc/self/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            seconds = int((task / "schedstat").read_text().split()[0]) / 1e9
        except (OSError, IndexError, ValueError):
            continue  # the thread ended meanwhile
        name = names.get(int(task.name))
        group = "inference" if name is None else _thread_group(name)
        out[(int(task.name), int(fields[19]))] = (seconds, group)
    return out


def thread_deltas(
    start: dict[tuple[int, int], tuple[float, str]], end: dict[tuple[int, int], tuple[float, str]]
) -> dict[str, float]:
    """CPU seconds per job between two :func:`thread_times` samples, thread by thread (a
    thread started meanwhile counts from zero; one that ended meanwhile is not counted)."""
    out: dict[str, float] = {}
    for key, (seconds, group) in end.items():
        before = start.get(key, (0.0, group))[0]
        out[group] = out.get(group, 0.0) + seconds - before
    return out


def find_pids(fragment: str) -> list[int]:
    """Pids whose command line contains ``fragment``."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if fragment in (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode():
                pids.append(int(entry.name))
    return pids


class CpuShare:
    """Start before a run, :meth:`stop` after it: cores used on average, by whom.

    ``named`` maps a label to pids (the camera server's, for instance); the local services
    are found by their command line. Everything is in cores (core-seconds per second)."""

    def __init__(self, named: Mapping[str, int | None] | None = None) -> None:
        self.pids: dict[str, list[int]] = {"worker": [os.getpid()]}
        for label, pid in (named or {}).items():
            if pid is not None:
                self.pids[label] = [pid]
        for label, fragment in SERVICES.items():
            self.pids[label] = find_pids(fragment)
        self._threads = thread_times()
        self._start = self._sample()

    def _sample(self) -> tuple[float, dict[str, float], dict[str, float]]:
        per = {
            label: sum(s for p in pids if (s := process_seconds(p)) is not None)
            for label, pids in self.pids.items()
            if label != "worker"
        }
        per["worker"] = time.process_time()  # exact, like the threads' schedstat
        return time.monotonic(), machine_times(), per

    def stop(self) -> dict[str, float]:
        t0, m0, p0 = self._start
        t1, m1, p1 = self._sample()
        wall = max(t1 - t0, 1e-9)
        out = {label: round((p1[label] - p0[label]) / wall, 2) for label in p1}
        busy = (m1["busy"] - m0["busy"]) / wall
        out["others"] = round(max(0.0, busy - sum(out.values())), 2)
        out["steal"] = round((m1["steal"] - m0["steal"]) / wall, 2)
        out["idle"] = round((m1["idle"] - m0["idle"]) / wall, 2)
        out["cores"] = os.cpu_count() or 0
        threads = thread_deltas(self._threads, thread_times())
        out["worker_threads"] = {
            group: round(seconds / wall, 2) for group, seconds in sorted(threads.items())
        }
        return out
