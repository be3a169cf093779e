"""Motion-region detection (pipeline/regions.py): where the crop goes, and how its result joins
the camera's last detections. The footage runs are in tests/test_motion.py."""

from __future__ import annotations

import numpy as np
import pytest

from detectors.preprocess import Letterboxer, canvas_shape
from pipeline.config import ConfigError, parse_config
from pipeline.motion import MotionConfig, MotionDetector
from pipeline.regions import CONTEXT_PX, choose_window, merge, region_sizes

H, W = 432, 768  # the office camera; at imgsz 640 the gain is 640/768
GAIN = 640 / 768


def box(x1, y1, x2, y2, conf=0.9, cls=0) -> list[float]:
    return [x1, y1, x2, y2, conf, cls]


def norm(x1, y1, x2, y2) -> tuple[float, float, float, float]:
    return (x1 / W, y1 / H, x2 / W, y2 / H)


def test_crop_sizes_follow_imgsz():
    assert region_sizes(640) == (192, 320)
    assert region_sizes(320) == (96, 160)


def test_small_motion_gets_the_smallest_square_around_it_with_context():
    w = choose_window([norm(300, 200, 340, 260)], np.zeros((0, 6)), H, W, 640)
    assert w is not None and w.size == 192
    side = round(192 / GAIN)
    assert (w.x2 - w.x1, w.y2 - w.y1) == (side, side)
    pad = CONTEXT_PX / GAIN  # context, in frame pixels
    assert w.x1 <= 300 - pad and w.y1 <= 200 - pad and w.x2 >= 340 + pad and w.y2 >= 260 + pad
    assert w.x1 >= 0 and w.x2 <= W and w.y1 >= 0 and w.y2 <= H
    crop = w.crop(np.zeros((H, W, 3), np.uint8))
    assert crop.shape == (side, side, 3)


def test_square_is_kept_inside_the_frame():
    w = choose_window([norm(0, 400, 20, 432)], np.zeros((0, 6)), H, W, 640)
    assert w is not None and (w.x1, w.y2) == (0, H)


def test_a_box_the_motion_touches_is_taken_in_whole():
    person = box(280, 100, 380, 340)  # motion at its edge: someone raising an arm
    w = choose_window([norm(370, 200, 400, 230)], np.array([person]), H, W, 640)
    assert w is not None and w.size == 320  # 240 px tall: more than a 192 square (230 px)
    assert w.x1 <= 280 and w.y1 <= 100 and w.x2 >= 380 and w.y2 >= 340


def test_large_motion_or_a_box_that_does_not_fit_means_the_whole_frame():
    assert choose_window([norm(50, 50, 600, 400)], np.zeros((0, 6)), H, W, 640) is None
    big = box(100, 20, 600, 420)
    assert choose_window([norm(300, 200, 320, 220)], np.array([big]), H, W, 640) is None
    assert choose_window([], np.zeros((0, 6)), H, W, 640) is None


def test_a_square_that_would_cut_a_neighbour_is_not_used():
    # the motion is free, but every square around it cuts the box next to it
    neighbour = box(400, 100, 700, 400)
    w = choose_window([norm(330, 220, 350, 240)], np.array([neighbour]), H, W, 640)
    assert w is None or not (w.x2 > 400 and w.x1 < 700 and w.y2 > 100 and w.y1 < 400)


MOVED = (300, 200, 340, 260)  # frame pixels of the motion in the merge tests


def crop_box(x1, y1, x2, y2, w, conf=0.7) -> list[float]:
    """A box given in frame pixels, as the crop run reports it (crop pixels)."""
    return box(x1 - w.x1, y1 - w.y1, x2 - w.x1, y2 - w.y1, conf)


def test_merge_moves_crop_boxes_home_and_keeps_the_last_boxes_outside():
    w = choose_window([norm(*MOVED)], np.zeros((0, 6)), H, W, 640)
    inside = box(290, 190, 335, 255, 0.5)  # last seen in the square, where it moved
    outside = box(10, 10, 60, 60, 0.8)
    found = np.array([crop_box(295, 195, 345, 262, w)], np.float32)  # it moved a little
    merged = merge(w, found, np.array([inside, outside], np.float32), H, W)
    assert merged.shape == (2, 6)
    np.testing.assert_allclose(merged[0, :4], [295, 195, 345, 262], atol=1e-3)
    np.testing.assert_allclose(merged[1], outside)  # the old box inside the square is replaced
    new = np.array([crop_box(310, 210, 330, 250, w)], np.float32)  # a crop may add an object
    assert merge(w, new, np.zeros((0, 6), np.float32), H, W).shape == (1, 6)


def test_the_crop_must_find_what_moved():
    w = choose_window([norm(*MOVED)], np.zeros((0, 6)), H, W, 640)
    nothing = np.zeros((0, 6), np.float32)
    assert merge(w, nothing, nothing, H, W) is None  # a person the crop does not see? ask all
    beside = np.array([crop_box(w.x1 + 5, w.y1 + 5, w.x1 + 40, w.y1 + 40, w)], np.float32)
    assert merge(w, beside, nothing, H, W) is None  # something, but not where it moved


def test_only_the_whole_frame_may_say_an_object_is_gone():
    w = choose_window([norm(*MOVED)], np.zeros((0, 6)), H, W, 640)
    there = box(w.x1 + 10, w.y1 + 150, w.x1 + 50, w.y1 + 200, 0.5)  # in the square, not moving
    found = np.array([crop_box(305, 205, 335, 255, w)], np.float32)
    assert merge(w, found, np.array([there]), H, W) is None


def test_a_detection_cut_by_the_crop_edge_asks_for_the_whole_frame():
    w = choose_window([norm(*MOVED)], np.zeros((0, 6)), H, W, 640)
    cut = np.array([crop_box(300, 200, w.x2, 260, w)], np.float32)  # runs into the right edge
    assert merge(w, cut, np.zeros((0, 6)), H, W) is None
    corner = choose_window([norm(0, 0, 20, 20)], np.zeros((0, 6)), H, W, 640)
    at_frame_edge = np.array([box(0, 0, 30, 30)], np.float32)  # the frame's edge, not the crop's
    assert merge(corner, at_frame_edge, np.zeros((0, 6)), H, W) is not None


def test_a_crop_is_letterboxed_at_its_frame_scale_in_a_small_input():
    w = choose_window([norm(300, 200, 340, 260)], np.zeros((0, 6)), H, W, 640)
    crop = w.crop(np.zeros((H, W, 3), np.uint8))
    boxer = Letterboxer(640)
    canvas, places = boxer.letterbox([crop], [w.size])
    assert canvas.shape == (1, 192, 192, 3)
    assert abs(places[0].gain_x - GAIN) < 0.01  # objects keep the size a full run gives them
    # next to a whole frame it shares the whole frame's canvas (correct, just not smaller)
    full = np.zeros((H, W, 3), np.uint8)
    assert canvas_shape([(H, W), crop.shape[:2]], 640, sizes=[640, w.size]) == (384, 640)
    canvas, places = boxer.letterbox([full, crop], [640, w.size])
    assert canvas.shape == (2, 384, 640, 3) and abs(places[1].gain_x - GAIN) < 0.01


def test_only_new_motion_can_be_a_region():
    gate = MotionDetector(MotionConfig(enabled=True, force_every_s=5))
    bg = np.full((180, 320, 3), 100, np.uint8)
    first = gate.check(bg, 0.0)
    assert first.detect and first.new == []  # the first frame needs the whole picture
    gate.check(bg, 0.5)
    moved = bg.copy()
    moved[60:100, 150:190] = 230
    d = gate.check(moved, 1.0)
    assert d.detect and d.new and d.new[0].box[0] < 0.5 < d.new[0].box[2]
    forced = gate.check(bg, 6.0)  # forced runs see the whole frame, motion or not
    assert forced.detect and forced.new == []


def test_region_is_a_motion_key():
    cfg = parse_config(
        {
            "ingest": {"motion": {"enabled": True, "region": True}},
            "cameras": [
                {"id": "a", "url": "rtsp://127.0.0.1/a", "motion": {"region": False}},
                {"id": "b", "url": "rtsp://127.0.0.1/b"},
            ],
        }
    )
    assert cfg.ingest.motion.region
    assert not cfg.cameras[0].motion.apply(cfg.ingest.motion).region
    with pytest.raises(ConfigError, match="region"):
        parse_config({"ingest": {"motion": {"region": "sometimes"}}})
