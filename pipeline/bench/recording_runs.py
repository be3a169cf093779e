"""The recording bench's live runs against ``vigil camera-sim``: the real Recorder on the 1080p
main stream beside the ingest reader decoding each stream, the alert follower's clips, cutting
clips from what was recorded, and retention under a tiny disk budget."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.bench.cpu_share import process_seconds
from pipeline.bench.recording_media import budget_series, probe, spread

CAMERA = "bench-main"  # the recorded camera's id (Redis keys and folders of this run only)


@dataclass
class Rig:
    """What a run uses: the base config's Kafka and Redis under a prefix of this run's own."""

    tag: str
    kafka: Any  # KafkaConfig (topics of this run)
    redis: Any  # RedisConfig (key prefix of this run)
    segment_s: float = 10.0
    pre_s: float = 5.0
    post_s: float = 5.0
    topics: list[str] = field(default_factory=list)

    def index(self):
        from pipeline.record.index import SegmentIndex  # noqa: PLC0415 (Redis client: loaded when measured)

        return SegmentIndex.from_config(self.redis)

    def holds(self):
        from pipeline.record.holds import HoldStore  # noqa: PLC0415 (Redis client: loaded when measured)

        return HoldStore.from_config(self.redis)

    def cleanup(self) -> None:
        """Delete this run's Redis keys and Kafka topics."""
        from pipeline.common.kafka import admin_client  # noqa: PLC0415 (Kafka client: loaded when measured)

        client = self.holds().client
        for key in client.scan_iter(f"{self.redis.key_prefix}*", count=1000):
            client.delete(key)
        if self.topics:
            admin = admin_client(self.kafka)
            try:
                admin.delete_topics(self.topics)
            except Exception:  # noqa: BLE001 - a topic left behind costs nothing but disk
                pass
            finally:
                admin.close()


def _recorder(url: str, root: Path, rig: Rig, on_segment=None):
    from pipeline.record.segmenter import Recorder  # noqa: PLC0415 (PyAV: loaded when measured)

    return Recorder(CAMERA, url, root, segment_s=rig.segment_s, on_segment=on_segment)


def _reader(camera_id: str, url: str, fps: float):
    from pipeline.cameras.spec import CameraSpec  # noqa: PLC0415 (OpenCV: loaded when measured)
    from pipeline.ingest.capture import CameraReader  # noqa: PLC0415 (OpenCV: loaded when measured)

    return CameraReader(CameraSpec(id=camera_id, url=url, fps=fps), fps=fps, decode_threads=1)


def _disk_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*.mp4") if p.is_file())


# -- alerts and their clips --------------------------------------------------------------------


class ClipWatch:
    """Alerts published as they end, and when the follower made each one's clip available."""

    def __init__(self, rig: Rig, follower, producer, client) -> None:
        self.rig, self.follower, self.producer, self.client = rig, follower, producer, client
        self.ended: dict[str, float] = {}  # alert id -> ended_at
        self.handled: dict[str, float] = {}  # alert id -> when the follower read its message
        self.clip: dict[str, float] = {}  # alert id -> when clip fields appeared in its hash
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="clip-watch", daemon=True)
        handle = follower.handle

        def timed(raw, where, key=None, **where_from):
            try:
                aid = json.loads(raw).get("id")
            except Exception:  # noqa: BLE001 - not ours to judge: the follower does
                aid = None
            if aid in self.ended:
                self.handled.setdefault(aid, time.time())
            return handle(raw, where, key, **where_from)

        follower.handle = timed
        self.assigned = threading.Event()
        on_assigned = follower.on_assigned

        def assigned(tps):
            on_assigned(tps)
            if tps:
                self.assigned.set()

        follower.on_assigned = assigned

    def start(self) -> ClipWatch:
        self._thread.start()
        return self

    def end_alert(self, n: int, length_s: float = 4.0) -> None:
        """An alert of ``length_s`` that ends now: its hash, then its ``ended`` message."""
        from pipeline.common.redis import RedisKeys  # noqa: PLC0415 (Redis: loaded when measured)

        ended = time.time()
        aid = hashlib.sha1(f"{self.rig.tag}-{n}".encode()).hexdigest()[:20]
        msg = {
            "id": aid,
            "camera_id": CAMERA,
            "rule_id": "bench",
            "status": "ended",
            "started_at": ended - length_s,
            "ended_at": ended,
        }
        self.client.hset(RedisKeys(self.rig.redis.key_prefix).alert(aid), mapping={"id": aid})
        self.ended[aid] = ended
        self.producer.send(self.rig.kafka.topics.alerts, key=CAMERA, value=msg)
        self.producer.flush(10)

    def _poll(self) -> None:
        from pipeline.common.redis import RedisKeys  # noqa: PLC0415 (Redis: loaded when measured)

        keys = RedisKeys(self.rig.redis.key_prefix)
        while not self._stop.is_set():
            for aid in [a for a in self.ended if a not in self.clip]:
                if self.client.hget(keys.alert(aid), "clip_to") is not None:
                    self.clip[aid] = time.time()
            self._stop.wait(0.02)

    def stop(self) -> dict[str, Any]:
        self._stop.set()
        self._thread.join(5)
        to_clip = [self.clip[a] - t for a, t in self.ended.items() if a in self.clip]
        to_read = [self.handled[a] - t for a, t in self.ended.items() if a in self.handled]
        return {
            "alerts": len(self.ended),
            "clips": len(self.clip),
            "end_to_clip_s": spread(to_clip, 2),
            "end_to_clip_each_s": [round(x, 2) for x in to_clip],
            "end_to_follower_read_s": spread(to_read, 3),
        }


def _follower(rig: Rig):
    from kafka.admin import NewTopic  # noqa: PLC0415 (Kafka client: loaded when measured)

    from pipeline.cameras.settings import RecordConfig  # noqa: PLC0415 (loaded when measured)
    from pipeline.common.kafka import admin_client, make_producer  # noqa: PLC0415 (Kafka client: loaded when measured)
    from pipeline.record.alert_follower import AlertFollower  # noqa: PLC0415 (Kafka client: loaded when measured)

    admin = admin_client(rig.kafka)
    try:
        # the follower reads the alerts and announces their clips on the clips topic
        t = rig.kafka.topics
        admin.create_topics(
            [NewTopic(n, 1, rig.kafka.replication_factor) for n in (t.alerts, t.clips)]
        )
    finally:
        admin.close()
    rig.topics += [rig.kafka.topics.alerts, rig.kafka.topics.clips]
    rec = RecordConfig(enabled=True, pre_s=rig.pre_s, post_s=rig.post_s)
    follower = AlertFollower(
        rig.kafka,
        rig.holds(),
        lambda cid: rec if cid == CAMERA else None,
        group_id=f"rb{rig.tag}-alerts",
        poll_timeout_ms=200,
        index=rig.index(),
    )
    return follower, make_producer(rig.kafka, f"bench-rec-{rig.tag}")


# -- the main run ------------------------------------------------------------------------------


def streams_run(
    rig: Rig,
    urls: dict[str, str],
    root: Path,
    sim_pid: int | None,
    seconds: float,
    fps: float,
    stream_fps: float,
    alert_every_s: float = 3.7,
    first_alert_s: float = 10.0,
    emit=print,
) -> dict[str, Any]:
    """``seconds`` of: the Recorder on the main stream (indexed in Redis), the ingest reader
    decoding the substream and, separately, the main stream (every frame, as a worker does), and
    alerts ending every ``alert_every_s`` through Kafka to the alert follower (clips).

    ``cores``: CPU seconds per second of stream (frames or packets / ``stream_fps``), so a
    thread that started late or fell behind is not counted as cheaper; ``wall_cores``: per
    second of the run."""
    index = rig.index()
    rec = _recorder(urls["main"], root, rig, on_segment=index.add)
    readers = {name: _reader(f"bench-dec-{name}", urls[name], fps) for name in ("sub", "main")}
    follower, producer = _follower(rig)
    watch = ClipWatch(rig, follower, producer, rig.holds().client)
    follower.start()  # its group joined before the clock starts (seconds on a busy machine)
    if not watch.assigned.wait(60):
        emit("the alert follower got no partition within 60 s: no clip figures")
    sim0 = process_seconds(sim_pid) if sim_pid else None
    t0 = time.time()
    rec.start()
    for r in readers.values():
        r.start()
    watch.start()
    n, next_alert = 0, t0 + first_alert_s
    last_alert = t0 + seconds - (rig.post_s + 2 * rig.segment_s)  # its clip can still come
    try:
        while time.time() < t0 + seconds:
            if time.time() >= next_alert and next_alert <= last_alert:
                watch.end_alert(n)
                n += 1
                next_alert += alert_every_s
            time.sleep(0.05)
    finally:
        for r in readers.values():
            r.stop(join_timeout=5)
        rec.stop(timeout_s=15)
        t1 = time.time()
        sim1 = process_seconds(sim_pid) if sim_pid else None
        clips = watch.stop()
        follower.stop()
        producer.close(5)
    wall = t1 - t0
    segs = index.segments(CAMERA, 0, time.time() + 60)
    # what the clip waits for: the end of the segment holding ended_at + post_s (it is indexed
    # when it closes, at the next keyframe); the rest is the follower's polling and Redis
    waits, rest = [], []
    for aid, ended in watch.ended.items():
        seg = next((x for x in segs if x.end >= ended + rig.post_s), None)
        if seg is not None and aid in watch.clip:
            waits.append(seg.end - ended)
            rest.append(watch.clip[aid] - seg.end)
    clips["segment_end_after_alert_end_s"] = spread(waits, 2)
    clips["clip_after_segment_end_s"] = spread(rest, 3)
    recorded_s = sum(s.end - s.start for s in segs)
    disk = _disk_bytes(root)
    out = {
        "seconds": round(wall, 1),
        "recorder": {
            "cpu_s": round(rec.stats.cpu_s, 3),
            "cores": round(rec.stats.cpu_s * stream_fps / max(rec.stats.packets, 1), 5),
            "wall_cores": round(rec.stats.cpu_s / wall, 5),
            "packets": rec.stats.packets,
            "bytes_written": rec.stats.bytes,
            "mb_per_s": round(disk / recorded_s / 1e6, 4) if recorded_s else None,
            "segments": len(segs),
            "segment_lengths_s": [round(s.end - s.start, 2) for s in segs],
            "recorded_s": round(recorded_s, 2),
            "disk_bytes": disk,
            "disk_bits_per_s": round(8 * disk / recorded_s) if recorded_s else None,
            "state": rec.stats.state,
            "last_error": rec.stats.last_error,
        },
        "decode": {
            name: {
                "cpu_s": round(r.stats.decode_cpu_s, 3),
                "cores": round(
                    r.stats.decode_cpu_s * stream_fps / max(r.stats.frames_decoded, 1), 5
                ),
                "wall_cores": round(r.stats.decode_cpu_s / wall, 5),
                "frames": r.stats.frames_decoded,
                "fps": round(r.stats.frames_decoded / wall, 2),
            }
            for name, r in readers.items()
        },
        "camera_sim_cores": round((sim1 - sim0) / wall, 4) if sim0 and sim1 else None,
        "clips": clips,
        "segments": segs,
    }
    emit(
        f"recorder: {out['recorder']['cores'] * 100:.2f} % of a core, "
        f"{out['recorder']['mb_per_s']:.3f} MB/s, {len(segs)} segments; decode sub "
        f"{out['decode']['sub']['cores'] * 100:.1f} %, main {out['decode']['main']['cores'] * 100:.1f} %; "
        f"alert end -> clip {clips['end_to_clip_s']}"
    )
    return out


def clip_cuts(rig: Rig, root: Path, segments: list, clip_s: float, rounds: int, emit=print):
    """Cut a ``clip_s`` clip out of the recorded segments ``rounds`` times, as the console and
    ``vigil clips export`` do (the index looked up, then remuxed): wall and CPU seconds."""
    from pipeline.record.clips import ClipRange, write_clip  # noqa: PLC0415 (PyAV: loaded when measured)

    if not segments or segments[-1].end - segments[0].start < clip_s + 1:
        return {"error": f"not {clip_s:g} s recorded"}
    index = rig.index()
    t0 = segments[0].start + 0.5
    rng = ClipRange("bench", CAMERA, t0, t0 + clip_s, False)
    walls, cpus, info = [], [], None
    for k in range(rounds):
        out = root / f"clip-{k}.mp4"
        c0, w0 = time.thread_time(), time.perf_counter()
        write_clip(index, root, rng, out)
        walls.append(time.perf_counter() - w0)
        cpus.append(time.thread_time() - c0)
        if info is None:
            info = probe(out)
        out.unlink()
    res = {
        "clip_s": clip_s,
        "wall_s": spread(walls, 3),
        "cpu_s": spread(cpus, 3),
        "probe": info,
    }
    emit(f"cut a {clip_s:g} s clip: wall {res['wall_s']}, CPU {res['cpu_s']}; ffprobe {info}")
    return res


def retention_run(
    rig: Rig,
    url: str,
    root: Path,
    seconds: float,
    budget_mb: float,
    interval_s: float,
    emit=print,
) -> dict[str, Any]:
    """The Recorder on the main stream for ``seconds`` with ``recordings.max_disk_gb`` at
    ``budget_mb`` MiB and a retention pass every ``interval_s``: bytes on disk every 0.5 s."""
    from pipeline.cameras.settings import RetainConfig  # noqa: PLC0415 (loaded when measured)
    from pipeline.record.retention import GB, Retention  # noqa: PLC0415 (loaded when measured)

    index = rig.index()
    budget_gb = budget_mb / 1024
    retention = Retention(
        root, index, rig.holds(), lambda _c: RetainConfig(), max_disk_gb=budget_gb
    )
    rec = _recorder(url, root, rig, on_segment=index.add).start()
    t0, c0 = time.time(), time.process_time()
    samples: list[tuple[float, int]] = []
    passes: list[dict[str, Any]] = []
    next_pass = t0 + interval_s
    try:
        while time.time() < t0 + seconds:
            now = time.time()
            samples.append((round(now - t0, 2), _disk_bytes(root)))
            if now >= next_pass:
                report = retention.run_once()
                passes.append(
                    {
                        "at_s": round(now - t0, 1),
                        "deleted": len(report.deleted),
                        "deleted_bytes": report.deleted_bytes,
                        "bytes_after": _disk_bytes(root),
                    }
                )
                next_pass += interval_s
            time.sleep(0.5)
    finally:
        rec.stop(timeout_s=15)
    # the whole process (the recorder, this loop's disk walks and the passes) against the
    # recorder's thread: no CPU of the recording is hidden on other threads
    process_cores = (time.process_time() - c0) / (time.time() - t0)
    recorder_cores = rec.stats.cpu_s / (time.time() - t0)
    samples.append((round(time.time() - t0, 2), _disk_bytes(root)))
    res = {
        "seconds": seconds,
        "budget_mb": budget_mb,
        "interval_s": interval_s,
        "bytes_written": rec.stats.bytes,
        "process_cores": round(process_cores, 5),
        "recorder_thread_cores": round(recorder_cores, 5),
        **budget_series(samples, int(budget_gb * GB)),
        "max_after_pass_bytes": max((p["bytes_after"] for p in passes), default=None),
        "passes": passes,
        "series": samples[::4],
    }
    emit(
        f"retention: budget {budget_mb:g} MiB, written {rec.stats.bytes / 2**20:.1f} MiB, crossed at "
        f"{res['first_over_budget_s']} s, peak {res['peak_bytes'] / 2**20:.2f} MiB, final "
        f"{res['final_bytes'] / 2**20:.2f} MiB, {sum(p['deleted'] for p in passes)} segments deleted"
    )
    return res
