"""The oracles other tests trust: ``match_detections`` / ``merge_matches`` (backend equivalence,
tests/detectors/test_backends.py, and the bench's accuracy section) and ``compare_alerts`` (motion
gating, tests/pipeline/ingest/test_motion.py). A bug here would let a wrong backend or a gating
change that loses alerts pass silently, so each rule is checked on hand-made cases."""

from __future__ import annotations

from typing import NamedTuple

import pytest

from pipeline.bench import compare_alerts, match_detections, merge_matches
from pipeline.bench.matching import CONF_TOL, IOU_MIN

CONF = 0.25  # the detector's confidence threshold in these cases


class Det(NamedTuple):
    class_id: int
    confidence: float
    box: tuple[float, float, float, float]


A = (0.0, 0.0, 100.0, 100.0)
B = (200.0, 200.0, 260.0, 300.0)
C = (400.0, 50.0, 450.0, 90.0)


def frame() -> list[Det]:
    return [Det(0, 0.9, A), Det(2, 0.6, B), Det(0, 0.5, C)]


def test_the_documented_tolerance():
    assert (IOU_MIN, CONF_TOL) == (0.9, 0.05)  # docs/performance.md, BENCHMARKS.md


# -- match_detections ------------------------------------------------------------------------------


def test_identical_detections_match_one_to_one():
    ref = frame()
    test = list(reversed(frame()))  # order does not matter
    s = match_detections(ref, test, CONF)
    assert s == {
        "ref": 3,
        "test": 3,
        "matched": 3,
        "missing": 0,
        "extra": 0,
        "borderline": 0,
        "conf_fail": 0,
        "min_iou": 1.0,
        "max_conf_diff": 0.0,
    }
    assert merge_matches([s])["ok"] is True


def test_a_missing_box_fails():
    s = match_detections(frame(), frame()[:2], CONF)
    assert (s["matched"], s["missing"], s["extra"], s["borderline"]) == (2, 1, 0, 0)
    assert merge_matches([s])["ok"] is False


def test_an_extra_box_fails():
    s = match_detections(frame()[:2], frame(), CONF)
    assert (s["matched"], s["missing"], s["extra"], s["borderline"]) == (2, 0, 1, 0)
    assert merge_matches([s])["ok"] is False


def test_same_box_of_another_class_is_a_miss_and_an_extra():
    ref = [Det(0, 0.9, A)]
    test = [Det(1, 0.9, A)]
    s = match_detections(ref, test, CONF)
    assert (s["matched"], s["missing"], s["extra"]) == (0, 1, 1)
    assert merge_matches([s])["ok"] is False


@pytest.mark.parametrize(
    ("test_conf", "fails"),
    [
        (0.75 + 0.0625, False),  # a difference of exactly the tolerance is within it
        (0.75 + 0.0625 + 2**-10, True),
        (0.75 - 0.0625 - 2**-10, True),
        (0.75 - 0.04, False),
    ],
)
def test_confidence_tolerance(test_conf, fails):
    tol = 0.0625  # exact in binary, so "exactly at" is exact
    s = match_detections([Det(0, 0.75, A)], [Det(0, test_conf, A)], CONF, tol=tol)
    assert s["matched"] == 1  # the box matches either way ...
    assert s["conf_fail"] == int(fails)  # ... and the confidence decides
    assert s["max_conf_diff"] == pytest.approx(abs(test_conf - 0.75))
    assert merge_matches([s])["ok"] is not fails


def test_default_confidence_tolerance_is_005():
    s = match_detections([Det(0, 0.70, A)], [Det(0, 0.76, A)], CONF)
    assert s["conf_fail"] == 1
    s = match_detections([Det(0, 0.70, A)], [Det(0, 0.74, A)], CONF)
    assert s["conf_fail"] == 0


@pytest.mark.parametrize(
    ("height", "matched"),
    [(90.0, True), (90.1, True), (89.9, False), (50.0, False)],
)
def test_iou_threshold(height, matched):
    """A test box inside the reference box, ``height`` of its 100 rows: IoU = height / 100."""
    ref = [Det(0, 0.9, A)]
    test = [Det(0, 0.9, (0.0, 0.0, 100.0, height))]
    s = match_detections(ref, test, CONF)
    assert s["matched"] == int(matched)
    assert (s["missing"], s["extra"]) == ((0, 0) if matched else (1, 1))
    if matched:
        assert s["min_iou"] == pytest.approx(height / 100)


def test_iou_threshold_is_a_parameter():
    ref, test = [Det(0, 0.9, A)], [Det(0, 0.9, (0.0, 0.0, 100.0, 50.0))]  # IoU 0.5
    assert match_detections(ref, test, CONF, iou_min=0.5)["matched"] == 1
    assert match_detections(ref, test, CONF, iou_min=0.51)["matched"] == 0


def test_unmatched_boxes_near_the_threshold_are_borderline_not_failures():
    """A box at 0.26 on one side and none on the other is the same answer at conf 0.25."""
    near = CONF + CONF_TOL - 0.01
    far = CONF + CONF_TOL + 0.01
    s = match_detections([Det(0, near, A)], [Det(0, near, B)], CONF)
    assert (s["matched"], s["missing"], s["extra"], s["borderline"]) == (0, 0, 0, 2)
    assert merge_matches([s])["ok"] is True
    s = match_detections([Det(0, far, A)], [Det(0, far, B)], CONF)
    assert (s["missing"], s["extra"], s["borderline"]) == (1, 1, 0)


def test_greedy_by_reference_confidence_and_each_test_box_used_once():
    ref = [Det(0, 0.5, A), Det(0, 0.9, A)]  # two reference boxes on the same spot
    test = [Det(0, 0.88, A)]
    s = match_detections(ref, test, CONF)
    # the confident one takes the test box (conf diff 0.02, ok); the other is missing
    assert (s["matched"], s["missing"], s["conf_fail"]) == (1, 1, 0)
    assert s["max_conf_diff"] == pytest.approx(0.02)


def test_the_best_overlap_is_chosen():
    ref = [Det(0, 0.9, A)]
    test = [Det(0, 0.9, (0.0, 0.0, 100.0, 91.0)), Det(0, 0.9, (0.0, 0.0, 100.0, 99.0))]
    s = match_detections(ref, test, CONF)
    assert s["matched"] == 1 and s["min_iou"] == pytest.approx(0.99) and s["extra"] == 1


def test_empty_frames():
    s = match_detections([], [], CONF)
    assert (s["ref"], s["test"], s["matched"]) == (0, 0, 0)
    assert merge_matches([s])["ok"] is True


# -- merge_matches ---------------------------------------------------------------------------------


def test_merge_sums_and_keeps_the_extremes():
    good = match_detections(frame(), frame(), CONF)
    shifted = match_detections(
        [Det(0, 0.8, A)], [Det(0, 0.77, (0.0, 0.0, 100.0, 95.0))], CONF
    )  # IoU 0.95, conf diff 0.03: within tolerance
    m = merge_matches([good, shifted])
    assert (m["ref"], m["test"], m["matched"]) == (4, 4, 4)
    assert m["min_iou"] == 0.95 and m["max_conf_diff"] == 0.03
    assert m["ok"] is True


@pytest.mark.parametrize("kind", ["missing", "extra", "conf_fail"])
def test_one_failing_frame_fails_the_whole(kind):
    bad = {
        "missing": match_detections(frame(), frame()[:2], CONF),
        "extra": match_detections(frame()[:2], frame(), CONF),
        "conf_fail": match_detections([Det(0, 0.9, A)], [Det(0, 0.7, A)], CONF),
    }[kind]
    good = [match_detections(frame(), frame(), CONF) for _ in range(10)]
    m = merge_matches([*good, bad, *good])
    assert m[kind] == 1 and m["ok"] is False


def test_merge_of_nothing():
    m = merge_matches([])
    assert m["ref"] == 0 and m["ok"] is True and m["min_iou"] == 1.0


# -- compare_alerts --------------------------------------------------------------------------------


def row(rule: str, status: str, started: float, ended: float | None = None) -> dict:
    return {"rule": rule, "status": status, "track_id": 1, "started_s": started, "ended_s": ended}


def run(*alerts: tuple[str, float, float | None]) -> list[dict]:
    """Alert rows as gating_replay gives them: a 'started' row and, when it ended, an 'ended'."""
    out = []
    for rule, started, ended in alerts:
        out.append(row(rule, "started", started))
        if ended is not None:
            out.append(row(rule, "ended", started, ended))
    return out


OFF = run(("zone", 3.0, 8.0), ("loiter", 5.0, 12.0), ("zone", 20.0, None))


def test_identical_runs():
    d = compare_alerts(OFF, [dict(r) for r in OFF], tolerance_s=1.0)
    assert (d["started_off"], d["started_on"], d["matched"]) == (3, 3, 3)
    assert d["missed"] == [] and d["extra"] == []
    assert d["max_start_shift_s"] == 0.0
    assert d["end_shifts_s"] == [0.0, 0.0]
    assert d["ended_in_one_run_only"] == 0


def test_a_missed_alert():
    on = run(("zone", 3.0, 8.0), ("zone", 20.0, None))
    d = compare_alerts(OFF, on, tolerance_s=1.0)
    assert d["matched"] == 2 and d["extra"] == []
    assert [(x["rule"], x["started_s"]) for x in d["missed"]] == [("loiter", 5.0)]


def test_an_extra_alert():
    on = [*OFF, *run(("zone", 40.0, 41.0))]
    d = compare_alerts(OFF, on, tolerance_s=1.0)
    assert d["matched"] == 3 and d["missed"] == []
    assert [(x["rule"], x["started_s"]) for x in d["extra"]] == [("zone", 40.0)]


@pytest.mark.parametrize(
    ("shift", "matched"),
    [(0.5, True), (1.0, True), (-1.0, True), (1.01, False), (-1.5, False)],
)
def test_start_shift_within_and_beyond_tolerance(shift, matched):
    off = run(("zone", 3.0, 8.0))
    on = run(("zone", 3.0 + shift, 8.0))
    d = compare_alerts(off, on, tolerance_s=1.0)
    if matched:
        assert d["matched"] == 1 and not d["missed"] and not d["extra"]
        assert d["max_start_shift_s"] == pytest.approx(abs(shift))
        assert d["end_shifts_s"] == [0.0]
    else:
        assert d["matched"] == 0 and len(d["missed"]) == 1 and len(d["extra"]) == 1


def test_same_time_other_rule_does_not_match():
    d = compare_alerts(run(("zone", 3.0, None)), run(("loiter", 3.0, None)), tolerance_s=1.0)
    assert d["matched"] == 0 and len(d["missed"]) == 1 and len(d["extra"]) == 1


def test_each_alert_matches_once():
    off = run(("zone", 3.0, None), ("zone", 3.8, None))
    on = run(("zone", 3.7, None))
    d = compare_alerts(off, on, tolerance_s=1.0)
    assert d["matched"] == 1 and len(d["missed"]) == 1
    # 3.0 comes first and takes the only 'on' alert (0.7 s away), 3.8 is left without one
    assert d["missed"][0]["started_s"] == 3.8


def test_the_nearest_start_is_matched():
    d = compare_alerts(run(("zone", 3.0, None)), run(("zone", 2.5, None), ("zone", 3.2, None)), 1.0)
    assert d["matched"] == 1 and d["max_start_shift_s"] == 0.2
    assert [x["started_s"] for x in d["extra"]] == [2.5]


def test_end_shifts_and_alerts_that_ended_in_one_run_only():
    off = run(("zone", 3.0, 8.0), ("loiter", 5.0, 12.0), ("zone", 20.0, None))
    on = run(("zone", 3.2, 9.5), ("loiter", 5.0, None), ("zone", 20.0, None))
    d = compare_alerts(off, on, tolerance_s=1.0)
    assert d["matched"] == 3
    assert d["end_shifts_s"] == [1.5]  # on - off, of the alerts that ended in both
    assert d["ended_in_one_run_only"] == 1  # loiter ended with gating off only


def test_only_started_rows_are_counted():
    ended_only = [row("zone", "ended", 3.0, 8.0)]
    d = compare_alerts(ended_only, [], tolerance_s=1.0)
    assert (d["started_off"], d["matched"], d["missed"]) == (0, 0, [])
