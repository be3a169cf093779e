"""The console's live view and camera status (pipeline/ingest/live.py, docs/console.md).

Most tests use an in-memory Redis double (:class:`FakeRedis`: hashes, TTLs, the owner-checked
delete), so throttling, back-pressure and outages are checked exactly; the ``integration`` ones
write to the real Redis (db 13, a key prefix of their own, deleted afterwards).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
import uuid

import cv2
import numpy as np
import pytest
import redis

from pipeline.app import build_worker
from pipeline.cameras.spec import CameraSpec
from pipeline.common.contracts import Detection, Frame
from pipeline.common.redis import RedisConfig, RedisKeys, redis_client
from pipeline.config import parse_config
from pipeline.ingest.capture import CameraReader, ReaderStats
from pipeline.ingest.live import (
    LIVE_TTL_S,
    STATUS_TTL_S,
    CameraStatus,
    LiveView,
    camera_status,
    safe_error,
)
from pipeline.ingest.worker import IngestWorker
from tests.support.assets import footage_path
from tests.support.config import REDIS_URL
from tests.support.net import free_port
from tests.support.waiting import wait_for

T0 = 1_700_000_000.0
REDIS_DB13 = REDIS_URL.rsplit("/", 1)[0] + "/13"  # VIGIL_TEST_REDIS's server, db 13
PASSWORD = "s3cr3t-Pw"
SECRET_URL = f"rtsp://admin:{PASSWORD}@127.0.0.1:1/stream"


# -- doubles --------------------------------------------------------------------------------
class FakeRedis:
    """Hashes with TTLs, written through pipelines like redis-py's. ``gate`` (an Event) holds
    every ``execute`` until set; ``fail`` makes it raise ``ConnectionError``."""

    def __init__(self) -> None:
        self.hashes: dict[str, dict[str, object]] = {}
        self.ttl: dict[str, int] = {}
        self.round_trips = 0
        self.writes: list[tuple[str, dict]] = []  # every HSET, in order
        self.gate: threading.Event | None = None
        self.entered = threading.Event()
        self.fail = False
        self.closed = False

    def pipeline(self, transaction: bool = True) -> FakePipeline:
        return FakePipeline(self)

    def close(self) -> None:
        self.closed = True


class FakePipeline:
    def __init__(self, db: FakeRedis) -> None:
        self.db = db
        self.ops: list[tuple] = []

    def hset(self, key, mapping):
        self.ops.append(("hset", key, dict(mapping)))

    def expire(self, key, seconds):
        self.ops.append(("expire", key, seconds))

    def eval(self, script, numkeys, *keys_and_args):
        keys, args = keys_and_args[:numkeys], keys_and_args[numkeys:]
        self.ops.append(("delete_owned", keys, args[0]))

    def execute(self):
        db = self.db
        db.entered.set()
        if db.gate is not None:
            db.gate.wait(30)
        if db.fail:
            raise redis.ConnectionError("Error 111 connecting to 127.0.0.1:6379")
        db.round_trips += 1
        for op in self.ops:
            if op[0] == "hset":
                db.hashes.setdefault(op[1], {}).update(op[2])
                db.writes.append((op[1], op[2]))
            elif op[0] == "expire":
                db.ttl[op[1]] = op[2]
            else:
                for key in op[1]:
                    if db.hashes.get(key, {}).get("worker") == op[2]:
                        db.hashes.pop(key)
                        db.ttl.pop(key, None)
        return [True] * len(self.ops)


def frame(cid: str, ts: float, seq: int = 0, shape=(432, 768, 3)) -> Frame:
    image = np.zeros(shape, np.uint8)
    cv2.rectangle(image, (100, 50), (300, 400), (0, 200, 255), -1)  # something to encode
    return Frame(cid, seq, 1, ts, image)


def make_view(db=None, fps: float = 2.0, prefix: str = "t:", **kw) -> tuple[LiveView, FakeRedis]:
    db = db if db is not None else FakeRedis()
    cfg = RedisConfig(key_prefix=prefix)
    return LiveView(cfg, "w1", fps, client=db, **kw), db


def written_ts(db: FakeRedis, prefix: str = "t:") -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for key, fields in db.writes:
        if key.startswith(f"{prefix}live:"):
            out.setdefault(key.removeprefix(f"{prefix}live:"), []).append(fields["capture_ts"])
    return out


# -- throttling ---------------------------------------------------------------------------
def test_each_camera_is_throttled_to_live_fps_by_capture_time():
    """2 live fps: a 10 fps camera gets 2 frames written per second, a 5 fps and a 25 fps camera
    too (the schedule keeps the average exact), a 1 fps camera all of its frames; the cameras do
    not share one budget."""
    view, db = make_view(fps=2.0)
    view.start()
    rates = {"ten": 10, "five": 5, "fast": 25, "slow": 1}
    events = sorted(
        (T0 + i / fps, cid) for cid, fps in rates.items() for i in range(int(3 * fps))
    )  # 3 s of capture time, the cameras interleaved as the worker sees them
    for seq, (ts, cid) in enumerate(events):
        view(frame(cid, ts, seq), [])
        assert wait_for(lambda: not view._pending, 5, 0.001)  # one frame at a time here
    view.close()
    got = written_ts(db)
    assert got["ten"] == pytest.approx([T0 + k * 0.5 for k in range(6)])
    assert len(got["five"]) == 6 and len(got["fast"]) == 6
    assert got["slow"] == pytest.approx([T0, T0 + 1, T0 + 2])
    assert view.written == 21
    assert view.throttled == len(events) - 21
    assert view.dropped == view.replaced == 0


def test_a_gap_restarts_the_schedule_and_a_clock_step_back_does_not_stall_it():
    view, db = make_view(fps=2.0)
    view.start()
    for ts in (T0, T0 + 0.1, T0 + 10.0, T0 + 10.2, T0 + 10.5, T0 - 50.0, T0 - 49.9):
        view(frame("c", ts), [])
        assert wait_for(lambda: not view._pending, 5, 0.001)
    view.close()
    assert written_ts(db)["c"] == pytest.approx([T0, T0 + 10.0, T0 + 10.5, T0 - 50.0])


# -- what is written ----------------------------------------------------------------------
def check_live_hash(fields: dict, seq: int, ts: float) -> None:
    def text(v):
        return v.decode() if isinstance(v, bytes) else str(v)

    fields = {text(k): v for k, v in fields.items()}  # real Redis answers with bytes
    jpeg = fields["jpeg"]
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None and image.shape == (432, 768, 3)
    # the frame as decoded, no drawing: the filled rectangle is there, its colour about right
    assert np.abs(image[200, 200].astype(int) - (0, 200, 255)).max() < 12
    assert int(text(fields["width"])) == 768 and int(text(fields["height"])) == 432
    assert int(text(fields["seq"])) == seq
    assert float(text(fields["capture_ts"])) == pytest.approx(ts, abs=1e-6)
    assert text(fields["worker"]) == "w1"
    dets = json.loads(text(fields["detections"]))
    assert dets == [
        {"label": "person", "confidence": 0.9123, "box": [0.1, 0.25, 0.5, 0.9], "track_id": 7},
        {"label": "car", "confidence": 0.5, "box": [0.0, 0.5, 1.0, 1.0], "track_id": None},
    ]


DETECTIONS = [
    Detection(0, "person", 0.91234, (0.1, 0.25, 0.5, 0.9), track_id=7),
    Detection(2, "car", 0.5, (-0.001, 0.5, 1.0004, 1.0)),  # rounding at the edges: clamped
]


def test_live_hash_fields_and_normalised_boxes_in_one_round_trip():
    view, db = make_view()
    view.start()
    view(frame("cam1", T0 + 0.25, seq=42), DETECTIONS)
    assert wait_for(lambda: view.written == 1, 5, 0.01)
    view.close()
    assert db.round_trips == 2  # the frame, then close() deleting this worker's keys
    assert len(db.writes) == 1
    key, fields = db.writes[0]
    assert key == RedisKeys("t:").live("cam1")
    check_live_hash(fields, 42, T0 + 0.25)


def test_live_off_is_refused_and_config_bounds():
    with pytest.raises(ValueError, match="live_jpeg_fps"):
        make_view(fps=0)
    assert parse_config({}, "t").ingest.live_jpeg_fps == 2.0
    assert parse_config({"ingest": {"live_jpeg_fps": 0}}, "t").ingest.live_jpeg_fps == 0
    for bad in (-1, 31):
        with pytest.raises(Exception, match="live_jpeg_fps"):
            parse_config({"ingest": {"live_jpeg_fps": bad}}, "t")


# -- back-pressure and outages ------------------------------------------------------------
def test_full_pending_set_drops_and_counts_without_blocking_the_worker():
    db = FakeRedis()
    db.gate = threading.Event()  # Redis hangs: every write waits
    view, _ = make_view(db, max_pending=2)
    view.start()
    view(frame("a", T0), [])
    assert db.entered.wait(5)  # the writer took a's frame and is stuck in Redis
    returned = threading.Event()

    def worker() -> None:  # the ingest worker's thread, calling the frame listener
        for cid, ts in (("b", T0), ("c", T0), ("d", T0), ("b", T0 + 0.5), ("e", T0 + 0.5)):
            view(frame(cid, ts), [])
        returned.set()

    threading.Thread(target=worker, daemon=True).start()
    # every call returned while Redis still hung (FakeRedis holds execute up to 30 s): the worker
    # never waits on Redis
    assert returned.wait(5), "the frame listener blocked while Redis hung"
    assert db.round_trips == 0 and not db.gate.is_set()
    assert view.dropped == 2  # d and e: two cameras already waiting
    assert view.replaced == 1  # b's newer frame took the place of its older one
    assert list(view._pending) == ["b", "c"]
    db.gate.set()
    assert wait_for(lambda: view.written == 3, 5, 0.01)
    view.close()
    assert written_ts(db) == {"a": [T0], "b": [T0 + 0.5], "c": [T0]}


def test_redis_outage_is_one_line_when_lost_and_one_when_back(caplog):
    db = FakeRedis()
    db.fail = True
    view, _ = make_view(db, status_interval_s=0.0)
    view.start()
    with caplog.at_level(logging.INFO, logger="pipeline.ingest.live"):
        for k in range(6):
            view(frame("c", T0 + k), [])
            view.publish_status([CameraStatus("c", "streaming")])
            assert wait_for(lambda k=k: view.errors == 2 * k + 2, 5, 0.001)  # both failed
        db.fail = False
        view(frame("c", T0 + 10), [])
        assert wait_for(lambda: view.written == 1, 5, 0.01)
        view.close()
    lines = [r.getMessage() for r in caplog.records if r.name == "pipeline.ingest.live"]
    lost = [m for m in lines if " lost: " in m]
    back = [m for m in lines if " back after " in m]
    assert len(lost) == 1 and "ConnectionError" in lost[0], lines
    assert len(back) == 1 and "(12 failed operations" in back[0], lines
    assert len(lines) == 2, lines


# -- camera status ------------------------------------------------------------------------
def test_status_hash_fields_ttl_and_removed_cameras():
    view, db = make_view(status_interval_s=0.0)
    view.start()
    keys = RedisKeys("t:")
    rows = [
        CameraStatus("a", "streaming", "", 25.04, 4.96, T0 + 1, dropped=3, reconnects=1),
        CameraStatus("b", "backoff", "read failed or timed out", 0.0, 0.0, 0.0),
    ]
    view(frame("b", T0), [])
    assert wait_for(lambda: view.written == 1, 5, 0.01)
    before = time.time()
    view.publish_status(rows)
    assert wait_for(lambda: view.statuses == 1, 5, 0.01)
    a = db.hashes[keys.camera_status("a")]
    assert a == {
        "state": "streaming",
        "last_error": "",
        "worker": "w1",
        "offered_fps": 25.04,
        "processed_fps": 4.96,
        "frame_ts": T0 + 1,
        "dropped": 3,
        "reconnects": 1,
        "updated_at": a["updated_at"],
    }
    assert before <= a["updated_at"] <= time.time()
    assert db.hashes[keys.camera_status("b")]["last_error"] == "read failed or timed out"
    assert db.ttl[keys.camera_status("a")] == STATUS_TTL_S
    assert db.ttl[keys.live("b")] == LIVE_TTL_S

    # b leaves this worker: its status and live keys go; a's stay
    view.publish_status(rows[:1])
    assert wait_for(lambda: view.statuses == 2, 5, 0.01)
    assert keys.camera_status("b") not in db.hashes and keys.live("b") not in db.hashes
    assert keys.camera_status("a") in db.hashes
    # a moved to another worker, which already wrote its status: that one is left alone
    db.hashes[keys.camera_status("a")]["worker"] = "w2"
    view.publish_status([])
    assert wait_for(lambda: view.statuses == 3, 5, 0.01)
    assert db.hashes[keys.camera_status("a")]["worker"] == "w2"
    view.close()


def test_status_is_written_at_most_every_interval():
    view, db = make_view(status_interval_s=0.3)
    view.start()
    rows = [CameraStatus("a", "streaming")]
    t_end = time.monotonic() + 1.0
    while time.monotonic() < t_end:
        view.publish_status(rows)
        time.sleep(0.01)
    assert wait_for(lambda: view._status is None, 5, 0.01)
    view.close()
    stamps = [fields["updated_at"] for _, fields in db.writes]
    assert 2 <= len(stamps) <= 4, stamps  # 100 calls in 1 s: written at 0, 0.3, 0.6, 0.9 s
    assert all(b - a >= 0.29 for a, b in zip(stamps, stamps[1:], strict=False)), stamps


def test_close_deletes_this_workers_keys_only():
    view, db = make_view(status_interval_s=0.0)
    view.start()
    keys = RedisKeys("t:")
    view(frame("a", T0), [])
    view(frame("b", T0), [])
    view.publish_status([CameraStatus("a", "streaming"), CameraStatus("b", "streaming")])
    assert wait_for(lambda: view.written == 2 and view.statuses == 1, 5, 0.01)
    db.hashes[keys.live("b")]["worker"] = "w2"  # b's live frame now comes from another worker
    view.close()
    assert sorted(db.hashes) == [keys.live("b")]
    assert db.closed is False  # a client handed in is the caller's to close


# -- no secrets ---------------------------------------------------------------------------
def test_safe_error_never_carries_the_password():
    assert safe_error(None, SECRET_URL) == ""
    assert safe_error("read failed or timed out", SECRET_URL) == "read failed or timed out"
    text = safe_error(f"cannot open {SECRET_URL}: 401 for admin:{PASSWORD}", SECRET_URL)
    assert PASSWORD not in text and "rtsp://admin:***@127.0.0.1:1/stream" in text
    encoded = "rtsp://admin:p%40ss%2Fw@cam/x"
    assert "p@ss/w" not in safe_error("FFmpeg said p@ss/w", encoded)
    assert "tok123" not in safe_error("denied rtsp://tok123@cam/x", "rtsp://tok123@cam/x")


def test_status_of_a_camera_with_a_password_in_its_url_never_shows_it():
    """A real reader failing on a URL with credentials (nothing listens on the port): its error
    and every field written for it are free of the password."""
    url = f"rtsp://admin:{PASSWORD}@127.0.0.1:{free_port()}/stream"
    spec = CameraSpec(id="locked", url=url)
    reader = CameraReader(spec, fps=5, open_timeout_s=1, read_timeout_s=1).start()
    try:
        assert wait_for(lambda: reader.stats.state == "backoff", 15, 0.05)
    finally:
        reader.stop()
    assert reader.stats.last_error  # something to show, and it is safe as it is
    stats = dataclasses.replace(reader.stats, last_error=f"{reader.stats.last_error}: {url}")
    row = camera_status("locked", url, stats, 0.0, 0.0, None)
    assert row.state == "backoff" and row.frame_ts == 0.0
    view, db = make_view(status_interval_s=0.0)
    view.start()
    view.publish_status([row])
    assert wait_for(lambda: view.statuses == 1, 5, 0.01)
    view.close()
    dumped = repr(db.writes)
    assert PASSWORD not in dumped and "admin:***@" in dumped


# -- through the worker -------------------------------------------------------------------
class FakeReader:
    def __init__(self, cid: str, url: str = "rtsp://127.0.0.1/x") -> None:
        self.camera_id = cid
        self.spec = CameraSpec(id=cid, url=url)
        self.interval = 0.1
        self.stats = ReaderStats(state="streaming")
        self.seq = 0

    def take(self) -> Frame | None:
        self.seq += 1
        self.stats.frames_decoded += 2
        return frame(self.camera_id, time.time(), self.seq, shape=(270, 480, 3))

    def stop(self, join_timeout=0.0) -> None:
        self.stats.state = "stopped"

    def join(self, timeout_s: float) -> None:
        pass

    alive = False


class FakeDetector:
    name, version, trackers, overlaps = "fake", "0", None, False

    def submit(self, frames):
        return len(frames)

    def wait(self, job, timeout_s=60.0):
        return True

    def collect(self, job):
        return [np.zeros((0, 6), np.float32) for _ in range(job)]

    def finish(self, image, boxes, stream=None, frame_rate=10.0):
        return [Detection(0, "person", 0.8, (0.25, 0.5, 0.75, 1.0), track_id=1)]


class FakeProducer:
    def send(self, topic, key=None, value=None, timestamp_ms=None):
        return self

    def add_callback(self, fn):
        return self

    def add_errback(self, fn):
        return self

    def flush(self, timeout=None) -> None:
        pass

    def close(self, timeout=None) -> None:
        pass


def test_worker_hands_status_rows_to_its_listeners():
    cfg = parse_config({"detector": {"max_wait_ms": 0}}, "t")
    worker = IngestWorker(cfg, detector=FakeDetector(), worker_id="w1")
    worker.producer = FakeProducer()
    worker._readers = {c: FakeReader(c, SECRET_URL) for c in ("a", "b")}
    got: list[list[CameraStatus]] = []
    worker.add_status_listener(got.append)
    worker._export_reader_stats()
    assert [(r.camera_id, r.frame_ts, r.offered_fps) for r in got[0]] == [
        ("a", 0.0, 0.0),
        ("b", 0.0, 0.0),
    ]
    assert camera_status("a", "", ReaderStats()).state == "connecting"  # not "starting"
    worker._readers["b"].stats.last_error = f"cannot open {SECRET_URL}"
    for _ in range(4):
        worker.process_once()
    time.sleep(0.05)
    worker._export_reader_stats()
    rows = {r.camera_id: r for r in got[1]}
    assert rows["a"].frame_ts == pytest.approx(time.time(), abs=5)
    assert rows["a"].processed_fps > 0 and rows["a"].offered_fps > rows["a"].processed_fps
    assert rows["b"].state == "streaming" and PASSWORD not in rows["b"].last_error
    worker.reconcile({"a": worker._readers["a"].spec})  # b is no longer this worker's
    worker._export_reader_stats()
    assert [r.camera_id for r in got[2]] == ["a"]


def test_build_worker_plugs_the_live_view_in_only_when_asked():
    def names(fps: float) -> list[str]:
        cfg = parse_config({"ingest": {"live_jpeg_fps": fps}}, "t")
        worker = build_worker(cfg, detector=FakeDetector(), worker_id="w1")
        return [name for name, _ in worker._callbacks["on_start"]]

    assert "live_view" in names(2)
    assert "live_view" not in names(0)


# -- real Redis ---------------------------------------------------------------------------
@pytest.fixture
def redis13():
    """The real Redis, db 13, a key prefix of this test's own; its keys deleted afterwards."""
    prefix = f"tlive{uuid.uuid4().hex[:8]}:"
    cfg = RedisConfig(url=REDIS_DB13, key_prefix=prefix, socket_timeout_s=2.0)
    client = redis_client(cfg)
    yield cfg, client
    for key in client.scan_iter(f"{prefix}*", count=1000):
        client.delete(key)
    client.close()


@pytest.mark.integration
def test_real_redis_live_and_status_hashes(redis13):
    cfg, client = redis13
    keys = RedisKeys(cfg.key_prefix)
    view = LiveView(cfg, "w1", 2.0, status_interval_s=0.0).start()
    view(frame("cam1", T0 + 0.25, seq=42), DETECTIONS)
    view.publish_status([camera_status("cam1", SECRET_URL, ReaderStats(state="streaming"))])
    assert wait_for(lambda: view.written == 1 and view.statuses == 1, 10, 0.02)
    check_live_hash(client.hgetall(keys.live("cam1")), 42, T0 + 0.25)
    assert 0 < client.ttl(keys.live("cam1")) <= LIVE_TTL_S
    status = {k.decode(): v.decode() for k, v in client.hgetall(keys.camera_status("cam1")).items()}
    assert set(status) == {
        "state",
        "last_error",
        "worker",
        "offered_fps",
        "processed_fps",
        "frame_ts",
        "dropped",
        "reconnects",
        "updated_at",
    }
    assert status["state"] == "streaming" and status["worker"] == "w1"
    assert float(status["frame_ts"]) == 0.0 and status["last_error"] == ""
    assert abs(float(status["updated_at"]) - time.time()) < 10
    assert 0 < client.ttl(keys.camera_status("cam1")) <= STATUS_TTL_S
    client.hset(keys.live("cam1"), "worker", "w2")  # another worker took the camera over
    view.publish_status([])
    assert wait_for(lambda: view.statuses == 2, 10, 0.02)
    assert not client.exists(keys.camera_status("cam1"))
    assert client.exists(keys.live("cam1"))  # the owner check ran in Redis (the Lua script)
    view.close()
    assert client.hget(keys.live("cam1"), "worker") == b"w2"


@pytest.mark.integration
def test_real_worker_on_recorded_footage_fills_live_and_status(redis13, monkeypatch):
    """A worker built by the composition root, a real reader on recorded footage (no Kafka: the
    cameras are handed to ``reconcile`` directly, the detector and producer are doubles)."""
    rcfg, client = redis13
    offered: list[float] = []  # capture times of the frames the worker handed the live view
    listener = LiveView.__call__

    def recording(self, frame, detections):
        offered.append(frame.capture_ts)
        return listener(self, frame, detections)

    monkeypatch.setattr(LiveView, "__call__", recording)
    keys = RedisKeys(rcfg.key_prefix)
    cfg = parse_config(
        {
            "redis": {"url": REDIS_DB13, "key_prefix": rcfg.key_prefix, "store_frames": False},
            "ingest": {"live_jpeg_fps": 2, "default_fps": 5},
            "detector": {"max_wait_ms": 0},
        },
        "t",
    )
    worker = build_worker(cfg, detector=FakeDetector(), worker_id="w1")
    view = dict(worker._callbacks["on_start"])["live_view"](worker)
    worker.services["live_view"] = view
    worker.producer = FakeProducer()
    worker.reconcile({"door": CameraSpec(id="door", url=footage_path("car-detection.mp4"))})
    stop = threading.Event()
    try:
        worker.run(stop, max_seconds=5.0)
        live = client.hgetall(keys.live("door"))
        status = client.hgetall(keys.camera_status("door"))
    finally:
        worker.close()
    assert live and status
    assert live[b"worker"] == b"w1" and (int(live[b"width"]), int(live[b"height"])) == (768, 432)
    assert json.loads(live[b"detections"])[0]["box"] == [0.25, 0.5, 0.75, 1.0]
    assert status[b"state"] == b"streaming"
    assert float(status[b"offered_fps"]) > 0 and float(status[b"processed_fps"]) > 0
    assert abs(float(status[b"frame_ts"]) - time.time()) < 10
    # every processed frame is written or accounted for; at most 2 live frames a second by the
    # frames' own clock (5 s at 5 fps: about 10 of the 25), whatever the machine's speed
    counted = view.written + view.throttled + view.replaced + view.dropped
    assert counted == len(offered) and view.throttled > 0, (view.__dict__, offered)
    assert 2 <= view.written <= 2 * (offered[-1] - offered[0]) + 2, (view.written, offered)
    assert not client.exists(keys.live("door"), keys.camera_status("door"))  # close() removed them
