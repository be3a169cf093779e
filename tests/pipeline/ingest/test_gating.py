"""Motion gating in the worker, alone: per-camera settings, which frames skip the detector, what
they carry over, and a model change (hot reload) forcing a fresh result."""

from __future__ import annotations

import numpy as np

from pipeline.common.contracts import Detection, Frame
from pipeline.ingest.gating import MotionGating
from pipeline.ingest.motion import MotionConfig

ON = MotionConfig(enabled=True, force_every_s=3600)
H, W = 180, 320
BOX_PX = np.array([[100, 60, 200, 160, 0.9, 0]], np.float32)  # x1, y1, x2, y2, conf, class


def scene() -> np.ndarray:
    rng = np.random.default_rng(0)
    base = np.full((H, W, 3), 120, np.uint8)
    base[:, : W // 2] = 90
    return np.clip(base + rng.integers(-3, 4, base.shape), 0, 255).astype(np.uint8)


STILL = scene()


def moved_inside_box() -> np.ndarray:
    """A small change inside BOX_PX: an object the detector saw, moving a little."""
    img = STILL.copy()
    img[100:120, 140:160] = 230
    return img


def frame(image: np.ndarray, ts: float, cid: str = "cam") -> Frame:
    return Frame(cid, int(ts * 10), 1, ts, image)


class Det:
    """``finish`` records what it was asked to track again."""

    names = {0: "person"}
    trackers = None

    def __init__(self) -> None:
        self.finished: list[tuple[str, float, np.ndarray]] = []

    def finish(self, image, boxes, stream=None, frame_rate=10.0):
        self.finished.append((stream, frame_rate, boxes))
        return [Detection(0, "person", 0.9, (0.1, 0.2, 0.3, 0.4), track_id=7)]


PERSON = [Detection(0, "person", 0.9, (100 / W, 60 / H, 200 / W, 160 / H))]


def test_gating_off_for_a_camera_whose_settings_say_so():
    asked: list[str] = []
    g = MotionGating(lambda cid: asked.append(cid) or (ON if cid == "on" else MotionConfig()))
    assert g.is_on("off") and g.is_on("on")  # not known yet: it may be
    assert g.decide(frame(STILL, 1.0, "off"), None) is None
    assert not g.is_on("off")
    assert g.decide(frame(STILL, 1.0, "on"), None).detect  # first frame: no result yet
    g.decide(frame(STILL, 1.1, "on"), None)
    g.decide(frame(STILL, 1.1, "off"), None)
    assert asked == ["off", "on"]  # settings asked once per camera


def test_a_still_frame_carries_the_last_result_of_the_same_model_only():
    det, other = Det(), Det()
    g = MotionGating(lambda cid: ON)
    f1 = frame(STILL, 1.0)
    assert g.decide(f1, det).detect
    g.remember(f1, PERSON, BOX_PX, det)
    d2 = g.decide(frame(STILL, 1.2), det)
    assert not d2.detect and not d2.motion
    assert g.decide(frame(STILL, 1.4), other).detect  # hot reload: the new model's own result


def test_motion_inside_a_last_detected_box_does_not_need_the_detector():
    det = Det()
    for raw, dets in ((BOX_PX, []), (None, PERSON)):  # the raw boxes, or the detections
        g = MotionGating(lambda cid: ON)
        f1 = frame(STILL, 1.0)
        g.decide(f1, det)
        g.remember(f1, dets, raw, det)
        d = g.decide(frame(moved_inside_box(), 1.2), det)
        assert d.motion and not d.detect, raw is not None
    g = MotionGating(lambda cid: ON)  # no object there: the same change is new motion
    g.decide(f1, det)
    g.remember(f1, [], None, det)
    assert g.decide(frame(moved_inside_box(), 1.2), det).detect


def test_carry_over_tracks_the_last_raw_boxes_again_or_repeats_the_detections():
    det = Det()
    g = MotionGating(lambda cid: ON)
    f1 = frame(STILL, 1.0)
    assert g.carry_over(det, f1, 5.0) == []  # nothing yet
    g.remember(f1, PERSON, None, det)
    assert g.carry_over(det, f1, 5.0) == PERSON and det.finished == []
    g.remember(f1, PERSON, BOX_PX, det)
    out = g.carry_over(det, frame(STILL, 1.2), 5.0)
    assert out[0].track_id == 7
    (stream, fps, boxes), *_ = det.finished
    assert (stream, fps) == ("cam", 5.0) and boxes is BOX_PX


def test_forget_drops_the_cameras_state_and_asks_its_settings_again():
    det = Det()
    asked: list[str] = []
    g = MotionGating(lambda cid: asked.append(cid) or ON)
    f1 = frame(STILL, 1.0)
    g.decide(f1, det)
    g.remember(f1, PERSON, BOX_PX, det)
    g.forget("cam")
    assert g.carry_over(det, f1, 5.0) == []
    assert g.decide(frame(STILL, 1.2), det).detect  # a new background: the whole frame moved
    assert asked == ["cam", "cam"]


def test_a_watched_camera_is_checked_for_motion_but_never_gated():
    """Gating off, motion wanted (a recording in mode events): every frame goes to the
    detector, each with its motion decision; nothing is kept to carry over."""
    g = MotionGating(lambda cid: MotionConfig(), watched=lambda cid: cid == "rec")
    assert g.decide(frame(STILL, 1.0, "plain"), None) is None  # neither gated nor watched
    decisions = [
        g.decide(frame(img, t, "rec"), None)
        for t, img in [(1.0, STILL), (1.2, STILL), (1.4, moved_inside_box()), (1.6, STILL)]
    ]
    assert [d.detect for d in decisions] == [True] * 4
    # the first frame has no background yet; the change of the third one is motion
    assert [d.motion for d in decisions] == [True, False, True, False]
    assert not g.is_on("rec")  # the detection loop need not wait for its last result
    g.remember(frame(STILL, 1.6, "rec"), PERSON, BOX_PX, Det())
    assert g.carry_over(Det(), frame(STILL, 1.8, "rec"), 5.0) == []  # nothing was kept
