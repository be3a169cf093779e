"""Motion gating: the motion detector, its config, the worker's carry-over, and on the footage:
fewer detector calls with the same alerts."""

from __future__ import annotations

import time

import numpy as np
import pytest

from pipeline.cameras.settings import MotionOverride
from pipeline.cameras.spec import CameraSpec
from pipeline.common.assets import footage, model
from pipeline.common.config import ConfigError
from pipeline.common.contracts import Frame
from pipeline.common.motion_spells import parse_motion
from pipeline.config import parse_config
from pipeline.ingest.capture import ReaderStats
from pipeline.ingest.motion import MotionConfig, MotionDetector
from tests.support.assets import require
from tests.support.cli import model_test_env

YOLOV5N = model("yolov5n.pt")
OFFICE = footage("one-by-one-person-detection.mp4")
# The office camera's rules of examples/demo.yaml: someone at the standing table, and staying.
TABLE = [[0.30, 0.55], [0.90, 0.55], [0.90, 1.0], [0.30, 1.0]]
RULES = {
    "rules": [
        {
            "id": "table-intrusion",
            "type": "zone_intrusion",
            "zone": TABLE,
            "classes": ["person"],
            "min_confidence": 0.4,
            "min_frames": 3,
            "cooldown_s": 10,
        },
        {
            "id": "table-loitering",
            "type": "loitering",
            "zone": TABLE,
            "classes": ["person"],
            "dwell_s": 8,
        },
    ]
}


def scene(h=180, w=320, seed=0) -> np.ndarray:
    """A textured still picture (sensor noise included)."""
    rng = np.random.default_rng(seed)
    base = np.full((h, w, 3), 120, np.uint8)
    base[:, : w // 2] = 90
    return np.clip(base + rng.integers(-3, 4, base.shape), 0, 255).astype(np.uint8)


def with_square(img: np.ndarray, x: int, y: int, size: int = 40, value: int = 230) -> np.ndarray:
    out = img.copy()
    out[y : y + size, x : x + size] = value
    return out


# -- the motion detector ------------------------------------------------------------------------


def test_still_scene_needs_the_detector_only_at_start_and_when_forced():
    gate = MotionDetector(MotionConfig(enabled=True, force_every_s=5))
    img = scene()
    decisions = [gate.check(scene(seed=i), t) for i, t in enumerate(np.arange(0, 12, 0.5))]
    assert decisions[0].detect and decisions[0].motion  # nothing known yet
    assert not any(d.motion for d in decisions[1:])  # noise is not motion
    forced = [t for d, t in zip(decisions, np.arange(0, 12, 0.5), strict=True) if d.detect]
    assert forced == [0.0, 5.0, 10.0]
    assert gate.measure(img)[0] < 0.002


def test_a_moving_object_is_motion():
    gate = MotionDetector(MotionConfig(enabled=True))
    bg = scene()
    gate.check(bg, 0.0)
    gate.check(bg, 0.2)
    d = gate.check(with_square(bg, 100, 60), 0.4)
    assert d.motion and d.detect
    (region,) = d.regions
    x1, y1, x2, y2 = region.box
    assert x1 <= 100 / 320 <= x2 and y1 <= 60 / 180 <= y2


def test_small_motion_inside_a_known_object_is_skipped_but_not_its_departure():
    gate = MotionDetector(MotionConfig(enabled=True, force_every_s=60))
    bg = with_square(scene(), 100, 40, size=80, value=60)  # a still "person", 80x80 px
    person = (100 / 320, 40 / 180, 180 / 320, 120 / 180)
    for t in range(5):
        gate.check(bg, t * 0.2)
    waving = with_square(bg, 120, 50, size=16, value=240)  # a hand inside the person's box
    d = gate.check(waving, 1.0, [person])
    assert d.motion and not d.detect  # explained by the known object
    d = gate.check(waving, 1.2, [])  # the same change with no object there: detect
    assert d.detect
    for t in range(20):  # settle
        gate.check(bg, 1.4 + t * 0.2, [person])
    gone = scene()  # the person left: most of the box changed
    assert gate.check(gone, 6.0, [person]).detect


def test_lighting_change_counts_as_motion_and_resets_the_background():
    gate = MotionDetector(MotionConfig(enabled=True))
    img = scene()
    gate.check(img, 0.0)
    gate.check(img, 0.2)
    bright = np.clip(img.astype(int) + 80, 0, 255).astype(np.uint8)
    d = gate.check(bright, 0.4)
    assert d.motion and d.area == 1.0
    assert not gate.check(bright, 0.6).motion  # the new picture is the background at once


def test_motion_config_defaults_and_per_camera_overrides():
    cfg = parse_config(
        {
            "ingest": {"motion": {"enabled": True, "threshold": 20}},
            "cameras": [
                {"id": "a", "url": "rtsp://h/a", "motion": {"min_area": 0.01}},
                {"id": "b", "url": "rtsp://h/b", "motion": {"enabled": False}},
                {"id": "c", "url": "rtsp://h/c"},
            ],
        }
    )
    base = cfg.ingest.motion
    a, b, c = cfg.cameras
    assert a.motion.apply(base).min_area == 0.01 and a.motion.apply(base).threshold == 20
    assert b.motion.apply(base).enabled is False
    assert c.motion is None
    assert MotionOverride().apply(base) == base
    assert MotionConfig().enabled is False  # opt-in
    with pytest.raises(ConfigError, match="ingest.motion.treshold"):
        parse_config({"ingest": {"motion": {"treshold": 3}}})
    with pytest.raises(ConfigError, match="cameras.0.motion.min_area"):
        parse_config({"cameras": [{"id": "a", "url": "rtsp://h/a", "motion": {"min_area": 0}}]})
    # survives the registry round trip (JSON)
    assert CameraSpec.model_validate(a.model_dump(mode="json")) == a


# -- on the footage, with the real detector -----------------------------------------------------


@pytest.fixture(scope="module")
def detector(tmp_path_factory):
    from detectors.config import DetectorConfig
    from detectors.engine import Detector

    require(YOLOV5N, OFFICE)  # missing assets fail these tests, they do not skip them
    with model_test_env(tmp_path_factory.mktemp("vigil-cache")):
        yield Detector(
            DetectorConfig(
                weights=str(YOLOV5N),
                device="cpu",
                imgsz=320,  # the gating figures compare two runs of the same detector
                conf=0.35,
                classes=["person", "chair", "laptop", "backpack", "handbag", "suitcase", "bottle"],
            )
        )


def test_gating_saves_3x_detector_calls_on_the_office_footage_with_the_same_alerts(detector):
    """The whole of one-by-one-person-detection.mp4 at 5 fps (the demo's office camera), the
    detector at 320 (both runs use the same one; BENCHMARKS.md has the 640 figures)."""
    from pipeline.bench import compare_alerts, gating_replay, replay_frames

    frames = replay_frames(OFFICE, 5.0)
    runs = gating_replay(detector, frames, RULES, "office", 5.0, MotionConfig(enabled=True))
    off, on = runs["off"], runs["on"]
    assert off["detector_calls"] == len(frames) == 697
    assert off["detector_calls"] >= 3 * on["detector_calls"], on["detector_calls"]
    diff = compare_alerts(off["alerts"], on["alerts"], tolerance_s=1.0)
    assert diff["started_off"] >= 10  # people come to the table again and again
    assert not diff["missed"] and not diff["extra"], diff
    assert diff["max_start_shift_s"] <= 0.5
    assert diff["ended_in_one_run_only"] == 0
    assert max(abs(s) for s in diff["end_shifts_s"]) <= 1.0
    carried = [m for m in on["messages"] if m["carried_over"]]
    assert len(carried) == len(frames) - on["detector_calls"]
    assert all(m["motion"] is not None for m in on["messages"])
    from pipeline.ingest.messages import validate_detection_message

    validate_detection_message(carried[0])


class _Reader:
    def __init__(self, cid: str, frames: list[tuple[float, np.ndarray]]):
        self.camera_id = cid
        self.spec = CameraSpec(id=cid, url="rtsp://127.0.0.1/x", fps=5)
        self.interval = 0.2
        self.stats = ReaderStats(state="streaming")
        self.frames = iter(frames)
        self.seq = 0

    def take(self):
        item = next(self.frames, None)
        if item is None:
            return None
        self.seq += 1
        return Frame(self.camera_id, self.seq, 1, time.time(), item[1])

    def stop(self, join_timeout=0.0):
        pass


class _Producer:
    """Keeps what is sent, by topic; ``sent``: the detection messages."""

    def __init__(self):
        self.by_topic = {}

    @property
    def sent(self):
        return [v for _, v in self.by_topic.get("vigil.detections", [])]

    def send(self, topic, key=None, value=None, timestamp_ms=None):
        self.by_topic.setdefault(topic, []).append((key, value))

        class F:
            def add_callback(self, *a):
                return self

            def add_errback(self, *a):
                return self

        return F()


def test_worker_carries_detections_and_tracks_over_frames_without_motion(detector):
    from pipeline.bench import replay_frames
    from pipeline.ingest.worker import IngestWorker

    frames = replay_frames(OFFICE, 5.0)[30:90]  # 12 s
    cfg = parse_config({"ingest": {"motion": {"enabled": True}}, "detector": {"max_wait_ms": 0}})
    worker = IngestWorker(cfg, detector=detector, worker_id="w")
    worker.producer = _Producer()
    worker._readers = {"office": _Reader("office", frames)}
    while worker.process_once(timeout_s=0.0):
        pass
    msgs = worker.producer.sent
    assert len(msgs) == len(frames)
    carried = [m for m in msgs if m["carried_over"]]
    assert carried and worker.skipped_frames == len(carried)
    assert worker.detector_frames + worker.skipped_frames == len(frames)
    for prev, msg in zip(msgs, msgs[1:], strict=False):
        if msg["carried_over"]:
            assert msg["inference_ms"] == 0.0 and msg["motion"] is not None
            # the same objects, with the same track ids, as the frame before
            ids = sorted(d.get("track_id", -1) for d in msg["detections"])
            assert ids == sorted(d.get("track_id", -1) for d in prev["detections"])
    assert any(d.get("track_id") for m in carried for d in m["detections"])


class _TimedReader(_Reader):
    """Frames captured at their time in the footage (``replay_frames``' seconds), from ``t0``."""

    def __init__(self, cid, frames, spec, t0):
        super().__init__(cid, frames)
        self.spec, self.t0 = spec, t0

    def take(self):
        item = next(self.frames, None)
        if item is None:
            return None
        self.seq += 1
        return Frame(self.camera_id, self.seq, 1, self.t0 + item[0], item[1])


def test_a_camera_recorded_in_mode_events_gets_motion_spells_without_gating(detector):
    """Gating off, but the camera is recorded only around events: every frame is detected and
    its motion checked, and the worker publishes the motion spells the recorders start on."""
    from pipeline.bench import replay_frames
    from pipeline.ingest.worker import IngestWorker

    frames = replay_frames(OFFICE, 5.0)[30:80]  # 10 s, people coming and going
    cfg = parse_config({"detector": {"max_wait_ms": 0}})
    assert not cfg.ingest.motion.enabled
    spec = CameraSpec(
        id="office", url="rtsp://127.0.0.1/x", fps=5, record={"enabled": True, "mode": "events"}
    )
    t0 = time.time()  # frames older than ingest.max_frame_age_s would be dropped
    worker = IngestWorker(cfg, detector=detector, worker_id="w")
    worker.producer = _Producer()
    worker._readers = {"office": _TimedReader("office", frames, spec, t0)}
    while worker.process_once(timeout_s=0.0):
        pass
    detections = [v for _, v in worker.producer.by_topic[cfg.kafka.topics.detections]]
    assert len(detections) == len(frames) == worker.detector_frames  # nothing skipped
    assert not any(m["carried_over"] for m in detections)
    moving = [m["capture_ts"] for m in detections if m["motion"]]
    assert moving and len(moving) < len(detections)  # the check ran, and not everything moves
    spells = worker.producer.by_topic[cfg.kafka.topics.motion]
    assert spells and all(key == "office" for key, _ in spells)

    def frame_with_motion(ts: float) -> bool:  # messages carry capture_ts rounded to 1 µs
        return min(abs(ts - m) for m in moving) < 1e-5

    first = parse_motion(spells[0][1])
    assert (first.camera_id, first.ended) == ("office", False)
    assert first.started_at == pytest.approx(moving[0], abs=1e-5)
    for _, value in spells:  # every spell begins and (so far) ends on a frame with motion
        spell = parse_motion(value)
        assert frame_with_motion(spell.started_at) and frame_with_motion(spell.last_at), spell


def test_a_camera_recorded_continuously_is_not_checked_for_motion(detector):
    from pipeline.bench import replay_frames
    from pipeline.ingest.worker import IngestWorker

    frames = replay_frames(OFFICE, 5.0)[30:35]
    cfg = parse_config({"detector": {"max_wait_ms": 0}})
    spec = CameraSpec(id="office", url="rtsp://127.0.0.1/x", fps=5, record={"enabled": True})
    worker = IngestWorker(cfg, detector=detector, worker_id="w")
    worker.producer = _Producer()
    worker._readers = {"office": _TimedReader("office", frames, spec, time.time())}
    while worker.process_once(timeout_s=0.0):
        pass
    detections = [v for _, v in worker.producer.by_topic[cfg.kafka.topics.detections]]
    assert len(detections) == 5 and not any("motion" in m for m in detections)
    assert cfg.kafka.topics.motion not in worker.producer.by_topic
