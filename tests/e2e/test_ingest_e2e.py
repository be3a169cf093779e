"""End to end over real sockets: RTSP camera-sim -> OpenCV -> YOLO -> Kafka (no fakes)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict

import jsonschema
import pytest
import yaml

from pipeline.app import build_worker
from pipeline.cameras.registry import put_cameras, read_registry, remove_cameras
from pipeline.cameras.spec import CameraSpec
from pipeline.ingest.messages import load_schema
from tests.support.config import make_config_dict
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration


class RunningWorker:
    def __init__(self, cfg, detector, worker_id="w-test"):
        self.worker = build_worker(cfg, detector=detector, worker_id=worker_id).start()
        self.status: list = []  # the worker's latest camera status rows (for failure messages)
        self.worker.add_status_listener(self._on_status)
        self.error: BaseException | None = None
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _on_status(self, rows) -> None:
        self.status = list(rows)

    def _run(self) -> None:
        try:
            self.worker.run(self.stop)
        except BaseException as e:  # said in the failing test's message, not lost in a thread
            self.error = e
            raise

    def describe(self) -> str:
        """What the worker was doing: for a test that saw fewer messages than it waited for."""
        rows = [
            f"{r.camera_id}: {r.state} offered {r.offered_fps} processed {r.processed_fps}"
            + (f" ({r.last_error})" if r.last_error else "")
            for r in self.status
        ]
        alive = "running" if self.thread.is_alive() else f"stopped ({self.error!r})"
        return f"worker {alive}; cameras {self.worker.cameras}; status {rows or 'none yet'}"

    def close(self):
        self.stop.set()
        self.thread.join(timeout=20)
        self.worker.close()


@pytest.fixture
def running_worker(vigil_cfg, detector):
    workers = []

    def start(worker_id="w-test"):
        w = RunningWorker(vigil_cfg, detector, worker_id)
        workers.append(w)
        return w

    yield start
    for w in workers:
        w.close()


def by_camera(records):
    out = defaultdict(list)
    for r in records:
        out[r["key"]].append(r["value"])
    return out


def persons(msg) -> int:
    return sum(1 for d in msg["detections"] if d["label"] == "person")


def test_two_cameras_stream_valid_detections(vigil_cfg, camera_sim, running_worker, topic_reader):
    sim = camera_sim("people-detection.mp4", "classroom.mp4")
    put_cameras(
        vigil_cfg.kafka,
        [
            CameraSpec(id="hall", url=sim.urls["people-detection"], fps=4),
            CameraSpec(id="classroom", url=sim.urls["classroom"], fps=4),
        ],
    )
    w = running_worker()
    reader = topic_reader(vigil_cfg, vigil_cfg.kafka.topics.detections)

    def enough(records):
        cams = by_camera(records)
        return len(cams["hall"]) >= 12 and len(cams["classroom"]) >= 12

    records = reader.until(enough, timeout_s=90)
    cams = by_camera(records)
    assert len(cams["hall"]) >= 12 and len(cams["classroom"]) >= 12, (
        {k: len(v) for k, v in cams.items()},
        w.describe(),
        f"reader on {sorted(tp.partition for tp in reader.consumer.assignment())}",
    )

    schema = load_schema()
    for rec in records:
        jsonschema.validate(rec["value"], schema)
        assert rec["key"] == rec["value"]["camera_id"]
    for cid, msgs in cams.items():
        seqs = [m["seq"] for m in msgs]
        assert all(b > a for a, b in zip(seqs, seqs[1:], strict=False)), (
            f"{cid}: sequence went backwards: {seqs}"
        )
        assert {m["epoch"] for m in msgs} == {msgs[0]["epoch"]}
    classroom = cams["classroom"]
    assert classroom[0]["frame"] == {"width": 480, "height": 270}
    crowded = [m for m in classroom if persons(m) >= 3]
    assert len(crowded) >= 0.8 * len(classroom), [persons(m) for m in classroom]
    assert any(persons(m) >= 1 for m in cams["hall"]), (
        "people-detection.mp4 shows people at the edges"
    )
    box = next(d["box"] for m in classroom for d in m["detections"] if d["label"] == "person")
    assert 0 <= box[0] < box[2] <= 1 and 0 <= box[1] < box[3] <= 1


def test_cameras_connected_and_removed_live(vigil_cfg, camera_sim, running_worker, topic_reader):
    sim = camera_sim("classroom.mp4", "people-detection.mp4")
    w = running_worker()
    reader = topic_reader(vigil_cfg, vigil_cfg.kafka.topics.detections)
    time.sleep(3)
    assert not reader.poll(1.0), "no camera yet, no detections"

    put_cameras(vigil_cfg.kafka, [CameraSpec(id="live", url=sim.urls["classroom"], fps=5)])
    assert read_registry(vigil_cfg.kafka).keys() == {"live"}
    # a hang guard, not a speed bound: the worker's rebalance, the RTSP open and 5 frames at
    # 5 fps take seconds, much longer on a loaded 2-core machine (35 s was seen)
    reader.until(lambda rs: len(rs) >= 5, timeout_s=90)
    assert len(reader.records) >= 5, "camera added live never produced detections"
    assert w.worker.cameras == ["live"]
    # a second camera that stays: its frames after the removal show the worker carried on
    put_cameras(vigil_cfg.kafka, [CameraSpec(id="stays", url=sim.urls["people-detection"], fps=5)])
    reader.until(lambda rs: any(r["key"] == "stays" for r in rs), timeout_s=30)
    assert w.worker.cameras == ["live", "stays"]

    remove_cameras(vigil_cfg.kafka, ["live"])
    assert wait_for(lambda: w.worker.cameras == ["stays"], 15), "worker kept the removed camera"
    gone = time.time()  # the reader of "live" is stopped and out of the worker by now

    def after_removal(records):
        return sum(r["key"] == "stays" and r["value"]["capture_ts"] > gone for r in records)

    # no fixed wait: the worker published 8 more frames of the other camera, every message it
    # sent so far was acknowledged, and the topic was read up to there
    reader.until(lambda rs: after_removal(rs) >= 8, timeout_s=60)
    assert after_removal(reader.records) >= 8, "the worker stopped after the removal"
    assert wait_for(lambda: w.worker._unacked == 0, 30, step=0.05)
    sent = w.worker.published
    reader.until(lambda rs: len(rs) >= sent, timeout_s=30)
    assert len(reader.records) >= sent
    late = [
        r["value"]["seq"]
        for r in reader.records
        if r["key"] == "live" and r["value"]["capture_ts"] > gone
    ]
    assert not late, f"detections of the removed camera kept coming: seq {late}"
    assert read_registry(vigil_cfg.kafka).keys() == {"stays"}


def test_camera_reconnects_after_rtsp_outage(vigil_cfg, camera_sim, running_worker, topic_reader):
    sim = camera_sim("classroom.mp4")
    put_cameras(vigil_cfg.kafka, [CameraSpec(id="flaky", url=sim.urls["classroom"], fps=5)])
    w = running_worker()
    reader = topic_reader(vigil_cfg, vigil_cfg.kafka.topics.detections)
    reader.until(lambda rs: len(rs) >= 5, timeout_s=30)
    assert len(reader.records) >= 5

    sim.stop()
    time.sleep(5)
    reader.poll(1.0)
    before = len(reader.records)
    sim.start()
    reader.until(lambda rs: len(rs) >= before + 5, timeout_s=60)
    assert len(reader.records) >= before + 5, "detections did not resume after the camera came back"
    reader_obj = w.worker._readers["flaky"]
    assert reader_obj.stats.reconnects >= 1
    seqs = [r["value"]["seq"] for r in reader.records]
    assert all(b > a for a, b in zip(seqs, seqs[1:], strict=False))


def test_unreachable_camera_does_not_disturb_others(
    vigil_cfg, camera_sim, running_worker, topic_reader
):
    sim = camera_sim("classroom.mp4")
    put_cameras(
        vigil_cfg.kafka,
        [
            CameraSpec(id="good", url=sim.urls["classroom"], fps=5),
            CameraSpec(id="dead", url="rtsp://admin:hunter2@127.0.0.1:9/nothing", fps=5),
        ],
    )
    w = running_worker()
    reader = topic_reader(vigil_cfg, vigil_cfg.kafka.topics.detections)
    reader.until(lambda rs: len(rs) >= 10, timeout_s=40)
    cams = by_camera(reader.records)
    assert len(cams["good"]) >= 10 and "dead" not in cams
    dead = w.worker._readers["dead"]
    assert dead.alive and dead.stats.state in ("connecting", "backoff")


def _spawn_worker(cfg_path, worker_id, log_path):
    log = open(log_path, "w")  # noqa: SIM115 - the child process owns it
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pipeline.cli",
            "ingest",
            "-c",
            str(cfg_path),
            "--worker-id",
            worker_id,
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


@pytest.mark.slow
def test_two_workers_share_cameras_and_fail_over(
    kafka_bootstrap, camera_sim, topic_reader, tmp_path
):
    from pipeline.common.kafka import ensure_topics
    from pipeline.config import parse_config

    data = make_config_dict(kafka_bootstrap)
    data["detector"]["imgsz"] = 256
    cfg = parse_config(data)
    ensure_topics(cfg.kafka)
    cfg_path = tmp_path / "vigil.yaml"
    cfg_path.write_text(yaml.safe_dump(data))
    sim = camera_sim(
        "people-detection.mp4",
        "classroom.mp4",
        "face-demographics-walking.mp4",
        "person-bicycle-car-detection.mp4",
    )
    ids = ["cam-a", "cam-b", "cam-c", "cam-d"]
    put_cameras(
        cfg.kafka,
        [
            CameraSpec(id=cid, url=url, fps=2)
            for cid, url in zip(ids, sim.urls.values(), strict=False)
        ],
    )
    procs = {wid: _spawn_worker(cfg_path, wid, tmp_path / f"{wid}.log") for wid in ("w1", "w2")}
    try:
        reader = topic_reader(cfg, cfg.kafka.topics.detections)

        def owners(records, since=0.0):
            out = defaultdict(set)
            for r in records:
                if r["value"]["capture_ts"] >= since:
                    out[r["key"]].add(r["value"]["worker_id"])
            return out

        # settle: both workers joined, every camera streaming
        reader.until(lambda rs: len(owners(rs)) == 4, timeout_s=120)
        time.sleep(8)
        window_start = time.time()
        reader.until(
            lambda rs: all(
                len([1 for r in rs if r["key"] == c and r["value"]["capture_ts"] >= window_start])
                >= 3
                for c in ids
            ),
            40,
        )
        steady = owners(reader.records, window_start)
        assert set(steady) == set(ids), dict(steady)
        assert all(len(w) == 1 for w in steady.values()), f"a camera has two owners: {dict(steady)}"
        # shared: before the kill each worker streams some of the cameras (cam-a..d hash to
        # registry partitions 1, 6, 0, 6 of 8; the range assignment splits 0-3 / 4-7)
        by_worker = defaultdict(set)
        for cam, workers in steady.items():
            by_worker[next(iter(workers))].add(cam)
        assert set(by_worker) == {"w1", "w2"}, f"one worker owned every camera: {dict(by_worker)}"

        victim = next(iter(steady["cam-a"]))
        survivor = "w2" if victim == "w1" else "w1"
        moved = [c for c, w in steady.items() if w == {victim}]
        assert moved and len(moved) < len(ids), dict(by_worker)
        procs[victim].send_signal(signal.SIGKILL)
        procs[victim].wait(10)
        killed_at = time.time()

        def moved_over(rs):
            after = owners(rs, killed_at)
            return all(after.get(c) == {survivor} for c in moved)

        reader.until(moved_over, timeout_s=45)
        after = owners(reader.records, killed_at)
        first_seen = {
            c: min(
                r["value"]["capture_ts"]
                for r in reader.records
                if r["key"] == c and r["value"]["capture_ts"] >= killed_at
            )
            for c in moved
            if c in after
        }
        assert all(after.get(c) == {survivor} for c in moved), dict(after)
        assert all(t - killed_at <= 30 for t in first_seen.values()), first_seen
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs.values():
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()


def test_run_with_missing_weights_is_a_clear_error(kafka_bootstrap, tmp_path):
    data = make_config_dict(kafka_bootstrap)
    data["detector"]["weights"] = str(tmp_path / "nope.pt")
    cfg_path = tmp_path / "vigil.yaml"
    cfg_path.write_text(yaml.safe_dump(data))
    out = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "ingest", "-c", str(cfg_path), "--max-seconds", "5"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2, out.stderr[-2000:]
    assert "nope.pt" in out.stderr and "Traceback" not in out.stderr
