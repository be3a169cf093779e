"""Rules engine: scripted detection sequences in, alerts out (no Kafka, no Redis)."""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone
from typing import Any, Literal
from zoneinfo import ZoneInfo

import pytest

from alerts.config import RULE_CONFIGS, RuleConfig, RulesError, parse_alerts_config
from alerts.engine import RuleEngine
from alerts.events import FrameEvent
from alerts.geometry import Polygon, segments_intersect
from alerts.iou_tracker import IouTracker
from alerts.rules import RULE_TYPES, Rule, register_rule
from alerts.schedule import Schedule, Window
from tests.support.rules import (
    BOX_ZONE,
    INTRUSION,
    LOITER,
    T0,
    det,
    empty,
    msg,
    person,
    run,
    visit,
)

# -- helpers ------------------------------------------------------------------------------------


def script(frames: list[tuple[float, list[dict]]], cam: str = "lobby") -> list[dict]:
    return [msg(ts, dets, i, cam) for i, (ts, dets) in enumerate(frames)]


def engine_for(*rules: dict, **top: Any) -> RuleEngine:
    return RuleEngine({"rules": list(rules), **top})


def statuses(alerts: list[dict]) -> list[tuple[str, str]]:
    return [(a["rule_id"], a["status"]) for a in alerts]


# -- config -------------------------------------------------------------------------------------


def test_config_example_parses() -> None:
    cfg = parse_alerts_config(
        {
            "rules": [
                {
                    **INTRUSION,
                    "schedule": {
                        "timezone": "Europe/Paris",
                        "windows": [{"days": ["mon", "tue"], "start": "22:00", "end": "06:00"}],
                    },
                }
            ]
        }
    )
    rule = cfg.rules[0]
    assert rule.type == "zone_intrusion" and rule.min_frames == 3 and rule.anchor == "bottom_center"
    assert cfg.rules_for("lobby") == [rule] and cfg.rules_for("yard") == []
    assert cfg.tracker.enabled


def test_config_error_names_rule_and_key() -> None:
    bad = {**INTRUSION, "zone": [[0.1, 0.1], [0.9, 0.1]]}
    with pytest.raises(RulesError) as e:
        parse_alerts_config({"rules": [bad]})
    assert str(e.value) == "rule 'lobby-intrusion': zone: polygon needs at least 3 points"
    assert e.value.errors == [("lobby-intrusion", "zone", "polygon needs at least 3 points")]


@pytest.mark.parametrize(
    ("patch", "key", "fragment"),
    [
        ({"zoen": BOX_ZONE}, "zoen", "unknown key"),
        ({"type": "teleport"}, "type", "unknown rule type 'teleport'"),
        ({"zone": [[0.1, 0.1], [1.5, 0.1], [0.9, 0.9]]}, "zone", "outside the image"),
        ({"zone": [[0.1, 0.1], [0.9, 0.9], [0.9, 0.1], [0.1, 0.9]]}, "zone", "edges cross"),
        ({"min_seconds": 2}, "min_frames", "not both"),
        ({"min_confidence": 1.5}, "min_confidence", "less than or equal to 1"),
        ({"severity": "urgent"}, "severity", "Input should be"),
        ({"cameras": []}, "cameras", "at least one camera"),
        ({"classes": []}, "classes", "matches nothing"),
        (
            {"schedule": {"timezone": "Mars/Olympus", "windows": [{}]}},
            "schedule.timezone",
            "unknown time zone",
        ),
        (
            {"schedule": {"windows": [{"start": "25:00"}]}},
            "schedule.windows.0.start",
            "out of range",
        ),
        ({"schedule": {"windows": []}}, "schedule.windows", "at least 1"),
    ],
)
def test_config_errors(patch: dict, key: str, fragment: str) -> None:
    with pytest.raises(RulesError) as e:
        parse_alerts_config({"rules": [{**INTRUSION, **patch}]})
    rule_id, got_key, message = e.value.errors[0]
    assert rule_id == "lobby-intrusion"
    assert got_key == key
    assert fragment in message
    assert str(e.value).startswith(f"rule 'lobby-intrusion': {key}: ")


def test_config_errors_are_all_reported() -> None:
    rules = [
        {"type": "loitering", "zone": BOX_ZONE},  # no id, no dwell_s
        {"id": "a", "type": "crowding"},  # no min_count
        {"id": "b", "type": "line_crossing", "line": [[0.5, 0.5], [0.5, 0.5]]},
        {"id": "c", "type": "line_crossing", "line": [[0, 0.5], [1, 0.5]], "inside": [0.5, 0.5]},
        {"id": "a", "type": "zone_intrusion"},  # duplicate id
        "not a mapping",
        {"id": "d"},
    ]
    with pytest.raises(RulesError) as e:
        parse_alerts_config({"rules": rules, "trackr": {}})
    text = str(e.value)
    assert "rule '#1': id: required key is missing" in text
    assert "rule '#1': dwell_s: required key is missing" in text
    assert "rule 'a': min_count: required key is missing" in text
    assert "rule 'b': line: the two points of the line are the same" in text
    assert "rule 'c': inside: the point lies on the line" in text
    assert "rule 'a': id: duplicate rule id" in text
    assert "rule '#6': must be a mapping" in text
    assert "rule 'd': type: required key is missing" in text
    assert "alerts: trackr: unknown key" in text


# -- zone intrusion -----------------------------------------------------------------------------


def test_zone_intrusion_started_and_ended() -> None:
    eng = engine_for(INTRUSION)
    frames = visit(T0, 5) + empty(T0 + 5, 4)
    alerts = run(eng, script(frames))
    assert statuses(alerts) == [("lobby-intrusion", "started"), ("lobby-intrusion", "ended")]
    started, ended = alerts
    assert started["id"] == ended["id"]
    assert started["started_at"] == T0 and started["updated_at"] == T0 + 2  # third frame
    assert started["frame_seq"] == 2 and started["severity"] == "high" and started["track_id"] == 1
    assert started["zone"] == BOX_ZONE and started["ended_at"] is None
    assert ended["ended_at"] == T0 + 4  # last seen inside
    assert ended["updated_at"] == T0 + 7  # cleared after clear_after_s (2 s) of absence
    assert ended["details"]["reason"] == "cleared" and ended["details"]["frames"] == 5


def test_zone_intrusion_filters() -> None:
    eng = engine_for(INTRUSION)
    frames = [
        (
            T0 + i,
            [person(0.95, 0.5, 1), person(0.5, 0.5, 2, conf=0.3), person(0.5, 0.5, 3, label="dog")],
        )
        for i in range(5)
    ]
    assert run(eng, script(frames)) == []  # outside the zone, too unsure, wrong class


def test_zone_intrusion_anchor_bottom_centre_vs_centre() -> None:
    # Feet at y=0.95 (below the zone), box centre at y=0.85 (inside).
    frames = visit(T0, 4, y=0.95)
    assert run(engine_for(INTRUSION), script(frames)) == []
    alerts = run(engine_for({**INTRUSION, "anchor": "center"}), script(frames))
    assert statuses(alerts) == [("lobby-intrusion", "started")]


def test_zone_intrusion_min_seconds_and_concave_zone() -> None:
    l_shape = [[0.1, 0.1], [0.5, 0.1], [0.5, 0.5], [0.9, 0.5], [0.9, 0.9], [0.1, 0.9]]
    rule = {**INTRUSION, "zone": l_shape, "min_frames": None, "min_seconds": 2.0}
    rule.pop("min_frames")
    # (0.7, 0.3) is in the notch of the L: never alerts. (0.3, 0.3) is inside.
    assert run(engine_for(rule), script(visit(T0, 6, x=0.7, y=0.3, dt=0.5))) == []
    alerts = run(engine_for(rule), script(visit(T0, 6, x=0.3, y=0.3, dt=0.5)))
    assert len(alerts) == 1 and alerts[0]["updated_at"] == T0 + 2.0


def test_cooldown_suppresses_repeat_then_allows_after() -> None:
    eng = engine_for(INTRUSION)  # cooldown 30 s, clear after 2 s
    frames = (
        visit(T0, 4)  # alert 1 starts at T0+2
        + empty(T0 + 4, 4)  # ends at T0+7
        + visit(T0 + 8, 4)  # re-entry 1 s later: suppressed
        + empty(T0 + 12, 4)  # its end is suppressed too
        + visit(T0 + 50, 4)  # 43 s after the last emitted end: a new alert
        + empty(T0 + 54, 4)
    )
    alerts = run(eng, script(frames))
    assert [a["status"] for a in alerts] == ["started", "ended", "started", "ended"]
    assert alerts[0]["id"] != alerts[2]["id"]
    assert alerts[2]["started_at"] == T0 + 50


def test_cooldown_scope_rule_dedups_across_tracks() -> None:
    rule = {**INTRUSION, "cooldown_scope": "rule", "min_frames": 1}
    frames = [(T0 + i, [person(0.3, 0.5, 1), person(0.6, 0.5, 2)]) for i in range(3)] + empty(
        T0 + 3, 4
    )
    alerts = run(engine_for(rule), script(frames))
    assert [(a["status"], a["track_id"]) for a in alerts] == [("started", 1), ("ended", 1)]
    per_track = run(engine_for({**rule, "cooldown_scope": "subject"}), script(frames))
    assert sorted(a["track_id"] for a in per_track if a["status"] == "started") == [1, 2]


# -- schedule -----------------------------------------------------------------------------------


def paris(y: int, mo: int, d: int, h: int, mi: int = 0) -> float:
    return datetime(y, mo, d, h, mi, tzinfo=ZoneInfo("Europe/Paris")).timestamp()


NIGHT = {
    "timezone": "Europe/Paris",
    "windows": [{"days": ["mon"], "start": "22:00", "end": "06:00"}],
}


def test_schedule_windows_overnight_and_dst() -> None:
    s = Schedule("Europe/Paris", [Window([0], 22 * 60, 6 * 60)])  # Monday 22:00 - Tuesday 06:00
    assert s.active(paris(2024, 3, 25, 23))  # Monday night
    assert s.active(paris(2024, 3, 26, 5, 59))  # Tuesday early morning
    assert not s.active(paris(2024, 3, 26, 6, 0))
    assert not s.active(paris(2024, 3, 25, 21, 59))
    assert not s.active(paris(2024, 3, 24, 23))  # Sunday night
    # Same local times across the DST change (31 March 2024) in UTC terms differ by an hour.
    s2 = Schedule("Europe/Paris", [Window(range(7), 9 * 60, 10 * 60)])
    assert s2.active(datetime(2024, 3, 30, 8, 30, tzinfo=timezone.utc).timestamp())  # 09:30 CET
    assert not s2.active(datetime(2024, 4, 1, 8, 30, tzinfo=timezone.utc).timestamp())  # 10:30 CEST
    whole = Schedule("UTC", [Window([5], 0, 0)])
    assert whole.active(datetime(2024, 3, 30, 12, tzinfo=timezone.utc).timestamp())  # a Saturday


def test_schedule_outside_window_no_alert() -> None:
    eng = engine_for({**INTRUSION, "schedule": NIGHT})
    t = paris(2024, 3, 25, 14)  # Monday afternoon
    assert run(eng, script(visit(t, 6) + empty(t + 6, 4))) == []


def test_schedule_inside_window_alerts_and_closing_window_ends_alert() -> None:
    eng = engine_for({**INTRUSION, "schedule": NIGHT})
    t = paris(2024, 3, 26, 5, 59)  # Tuesday 05:59: inside Monday's overnight window
    alerts = run(eng, script(visit(t, 90)))  # still there at 06:00
    assert [a["status"] for a in alerts] == ["started", "ended"]
    assert alerts[1]["details"]["reason"] == "schedule"
    assert alerts[1]["updated_at"] == paris(2024, 3, 26, 6, 0)


def test_schedule_arms_rule_on_object_already_present() -> None:
    eng = engine_for({**INTRUSION, "schedule": NIGHT})
    t = paris(2024, 3, 25, 21, 59)  # someone there since before the window opens
    alerts = run(eng, script(visit(t, 70)))
    assert [a["status"] for a in alerts] == ["started"]
    assert alerts[0]["started_at"] == paris(2024, 3, 25, 22, 0)


# -- loitering ----------------------------------------------------------------------------------


def test_loitering_after_dwell_and_ends_when_gone() -> None:
    short = run(engine_for(LOITER), script(visit(T0, 9) + empty(T0 + 9, 10)))
    assert short == []  # 8 s inside: not loitering
    frames = visit(T0, 12, tid=7) + empty(T0 + 12, 2) + visit(T0 + 14, 3, tid=7) + empty(T0 + 17, 8)
    alerts = run(engine_for(LOITER), script(frames))
    assert [a["status"] for a in alerts] == ["started", "ended"]  # a 3 s gap does not end it
    started, ended = alerts
    assert started["updated_at"] == T0 + 10 and started["track_id"] == 7
    assert ended["ended_at"] == T0 + 16 and ended["details"]["dwell_s"] == 16.0


def test_loitering_is_per_track() -> None:
    frames = [(T0 + i, [person(0.3, 0.5, 1 if i < 6 else 2)]) for i in range(12)]
    assert run(engine_for(LOITER), script(frames)) == []  # two people, 6 s each


# -- line crossing ------------------------------------------------------------------------------

# A horizontal line across the middle; "in" is the lower half (towards the camera).
LINE = {
    "id": "door",
    "type": "line_crossing",
    "line": [[0.0, 0.5], [1.0, 0.5]],
    "inside": [0.5, 0.9],
    "classes": ["person"],
    "cooldown_s": 0,
}


def walk(t: float, tid: int, ys: list[float], x: float = 0.5) -> list[tuple[float, list[dict]]]:
    return [(t + i, [person(x, y, tid)]) for i, y in enumerate(ys)]


def test_line_crossing_direction_and_counts() -> None:
    frames = (
        walk(T0, 1, [0.3, 0.45, 0.6, 0.7])
        + walk(T0 + 10, 2, [0.8, 0.6, 0.4])
        + walk(T0 + 20, 3, [0.2, 0.7])
    )
    alerts = run(engine_for(LINE), script(frames))
    started = [a for a in alerts if a["status"] == "started"]
    assert [(a["track_id"], a["details"]["direction"], a["count"]) for a in started] == [
        (1, "in", 1),
        (2, "out", 1),
        (3, "in", 2),
    ]
    assert started[-1]["details"]["counts"] == {"in": 2, "out": 1}
    # Instantaneous: each crossing is started + ended on the same frame, same id.
    assert [a["status"] for a in alerts] == ["started", "ended"] * 3
    assert all(alerts[i]["id"] == alerts[i + 1]["id"] for i in (0, 2, 4))
    assert alerts[1]["details"]["reason"] == "crossed"


def test_line_crossing_direction_filter_still_counts_both() -> None:
    frames = walk(T0, 1, [0.3, 0.7]) + walk(T0 + 10, 2, [0.7, 0.3]) + walk(T0 + 20, 3, [0.3, 0.7])
    alerts = run(engine_for({**LINE, "direction": "in"}), script(frames))
    started = [a for a in alerts if a["status"] == "started"]
    assert [a["track_id"] for a in started] == [1, 3]
    assert started[-1]["details"]["counts"] == {"in": 2, "out": 1}


def test_line_crossing_ignores_jitter_and_passing_the_end() -> None:
    jitter = walk(T0, 1, [0.3, 0.495, 0.505, 0.497, 0.503, 0.3])
    assert run(engine_for(LINE), script(jitter)) == []
    short_line = {**LINE, "line": [[0.0, 0.5], [0.4, 0.5]], "inside": [0.2, 0.9]}
    around = walk(T0, 1, [0.3, 0.7], x=0.8)  # crosses y=0.5 to the right of the segment's end
    assert run(engine_for(short_line), script(around)) == []


def test_line_crossing_cooldown_per_track() -> None:
    frames = walk(T0, 1, [0.3, 0.7, 0.3, 0.7])
    alerts = run(engine_for({**LINE, "cooldown_s": 30}), script(frames))
    started = [a for a in alerts if a["status"] == "started"]
    assert len(started) == 1
    assert run(engine_for(LINE), script(frames))[-1]["details"]["counts"] == {"in": 2, "out": 1}


# -- crowding -----------------------------------------------------------------------------------

CROWD = {
    "id": "crowd",
    "type": "crowding",
    "zone": BOX_ZONE,
    "classes": ["person"],
    "min_count": 3,
    "min_seconds": 5,
}


def crowd(t: float, n: int, seconds: int) -> list[tuple[float, list[dict]]]:
    return [(t + i, [person(0.2 + 0.1 * k, 0.5, k) for k in range(n)]) for i in range(seconds)]


def test_crowding_started_and_ended() -> None:
    frames = crowd(T0, 2, 5) + crowd(T0 + 5, 4, 8) + crowd(T0 + 13, 2, 5)
    alerts = run(engine_for(CROWD), script(frames))
    assert [a["status"] for a in alerts] == ["started", "ended"]
    started, ended = alerts
    assert started["started_at"] == T0 + 5 and started["updated_at"] == T0 + 10
    assert started["count"] == 4 and started["label"] == "person" and started["track_id"] is None
    # the counted people, for the snapshot: one box each, inside the zone
    assert len(started["details"]["boxes"]) == 4
    assert all(len(b) == 4 and 0 <= b[0] < b[2] <= 1 for b in started["details"]["boxes"])
    assert ended["ended_at"] == T0 + 12 and ended["updated_at"] == T0 + 15


def test_crowding_needs_duration_and_tolerates_dips() -> None:
    short = crowd(T0, 4, 4) + crowd(T0 + 4, 1, 5)
    assert run(engine_for(CROWD), script(short)) == []
    dips = crowd(T0, 4, 3) + crowd(T0 + 3, 2, 1) + crowd(T0 + 4, 4, 3) + crowd(T0 + 7, 0, 4)
    alerts = run(engine_for(CROWD), script(dips))
    assert [a["status"] for a in alerts] == ["started", "ended"]
    assert alerts[0]["started_at"] == T0


# -- object left / removed ----------------------------------------------------------------------

BAG = [0.6, 0.7, 0.66, 0.8]
LEFT = {
    "id": "left",
    "type": "object_left",
    "classes": ["backpack"],
    "min_seconds": 20,
    "warmup_s": 5,
}
REMOVED = {
    "id": "gone",
    "type": "object_removed",
    "classes": ["backpack"],
    "present_s": 30,
    "min_seconds": 10,
}


def bag_frames(
    t: float, seconds: int, present: bool, jitter: bool = True
) -> list[tuple[float, list[dict]]]:
    out = []
    for i in range(seconds):
        dx = 0.003 * (i % 3) if jitter else 0.0
        box = [BAG[0] + dx, BAG[1], BAG[2] + dx, BAG[3]]
        out.append((t + i, [det("backpack", box, 0.7)] if present else []))
    return out


def test_object_left_started_and_ended() -> None:
    frames = (
        bag_frames(T0, 10, False) + bag_frames(T0 + 10, 30, True) + bag_frames(T0 + 40, 8, False)
    )
    alerts = run(engine_for(LEFT), script(frames))
    assert [a["status"] for a in alerts] == ["started", "ended"]
    started, ended = alerts
    assert started["started_at"] == T0 + 10 and started["updated_at"] == T0 + 30
    assert started["label"] == "backpack" and started["box"] == BAG
    assert ended["ended_at"] == T0 + 39 and ended["updated_at"] == T0 + 45


def test_object_left_ignores_scene_objects_and_brief_visits() -> None:
    present_at_start = bag_frames(T0, 60, True)
    assert run(engine_for(LEFT), script(present_at_start)) == []
    brief = (
        bag_frames(T0, 10, False) + bag_frames(T0 + 10, 15, True) + bag_frames(T0 + 25, 10, False)
    )
    assert run(engine_for(LEFT), script(brief)) == []


def test_object_removed() -> None:
    frames = bag_frames(T0, 40, True) + bag_frames(T0 + 40, 15, False)
    alerts = run(engine_for(REMOVED), script(frames))
    assert [a["status"] for a in alerts] == ["started", "ended"]
    assert alerts[0]["started_at"] == T0 + 39  # last seen
    assert alerts[0]["updated_at"] == T0 + 49  # missing for 10 s
    assert alerts[1]["details"]["reason"] == "removed"
    # Not in place long enough to count as part of the scene: no alert.
    short = bag_frames(T0, 20, True) + bag_frames(T0 + 20, 15, False)
    assert run(engine_for(REMOVED), script(short)) == []
    # A brief occlusion is not a removal.
    occluded = (
        bag_frames(T0, 40, True) + bag_frames(T0 + 40, 5, False) + bag_frames(T0 + 45, 20, True)
    )
    assert run(engine_for(REMOVED), script(occluded)) == []


# -- count anomaly ------------------------------------------------------------------------------

ANOMALY = {
    "id": "busy",
    "type": "count_anomaly",
    "classes": ["person"],
    "min_samples": 20,
    "z_threshold": 3,
}


def minutes(t_start: float, counts: list[int], fps: float = 0.2, first_tid: int = 1) -> list:
    """One entry per minute: ``counts[i]`` distinct people seen during minute i."""
    frames, tid = [], first_tid
    per_min = int(60 * fps)
    for m, n in enumerate(counts):
        ids = list(range(tid, tid + n))
        tid += n
        for f in range(per_min):
            ts = t_start + m * 60 + f / fps
            frames.append(
                (ts, [person(0.1 + 0.8 * (k / max(n, 1)), 0.5, i) for k, i in enumerate(ids)])
            )
    return frames


def test_count_anomaly_flags_burst_after_baseline() -> None:
    t = 1_700_000_400.0  # a minute boundary (22:20 UTC); all minutes below fall in hour 22
    normal = [2, 3, 2, 4, 3, 2, 3, 3, 2, 4] * 3
    frames = minutes(t, normal + [25, 3, 2])
    alerts = run(engine_for(ANOMALY), script(frames))
    assert [a["status"] for a in alerts] == ["started", "ended"]
    started, ended = alerts
    assert started["started_at"] == t + 30 * 60  # the burst minute
    assert started["count"] == 25 and started["details"]["z"] >= 3
    assert 2.0 < started["details"]["expected"] < 4.0 and started["details"]["samples"] == 30
    assert ended["ended_at"] == t + 31 * 60


def test_count_anomaly_silent_during_warm_up() -> None:
    t = 1_700_000_400.0
    frames = minutes(t, [2, 3, 2, 3, 2, 25, 2, 3])
    assert run(engine_for(ANOMALY), script(frames)) == []


def test_count_anomaly_baseline_is_per_hour() -> None:
    t = 1_700_000_400.0  # 22:20 UTC
    frames = minutes(t, [2, 3] * 10 + [2] * 20 + [25, 2])  # the burst falls at 23:00: no history
    assert run(engine_for(ANOMALY), script(frames)) == []


# -- determinism, snapshots, replays ------------------------------------------------------------

ALL_RULES = [INTRUSION, LOITER, LINE, CROWD, LEFT, REMOVED, ANOMALY]


def mixed_script(cam: str = "lobby", ids: bool = True) -> list[dict]:
    """A sequence that fires every rule type (people, a crossing, a crowd, a bag)."""
    frames: list[tuple[float, list[dict]]] = []
    t = 1_700_000_400.0
    for m, n in enumerate([2, 3] * 12 + [25, 2, 3]):
        for f in range(15):
            ts = t + m * 60 + f * 4
            # person 0 walks down across the door line; the others stand in the lobby
            dets = [
                person(0.2 + 0.02 * k, 0.3 + (f / 28 if k == 0 else 0), 1000 * m + k)
                for k in range(n)
            ]
            if 3 <= m < 9:
                dets.append(det("backpack", BAG, 0.7, 555))
            frames.append((ts, dets))
    msgs = script(frames, cam)
    if not ids:
        for m_ in msgs:
            for d in m_["detections"]:
                d.pop("track_id", None)
    return msgs


@pytest.mark.parametrize("ids", [True, False])
def test_deterministic_ids_across_runs(ids: bool) -> None:
    msgs = mixed_script(ids=ids)
    a = run(RuleEngine({"rules": ALL_RULES}), msgs)
    b = run(RuleEngine({"rules": ALL_RULES}), json.loads(json.dumps(msgs)))
    assert a == b
    assert {x["rule_type"] for x in a} >= {
        "zone_intrusion",
        "crowding",
        "object_left",
        "object_removed",
    }
    assert "count_anomaly" in {x["rule_type"] for x in a}
    assert "line_crossing" in {x["rule_type"] for x in a}
    assert len({(x["id"], x["status"]) for x in a}) == len(a)


@pytest.mark.parametrize("cut", [7, 100, 150, 301, 380])
@pytest.mark.parametrize("ids", [True, False])
def test_snapshot_restore_matches_uninterrupted_run(cut: int, ids: bool) -> None:
    msgs = mixed_script(ids=ids)
    whole = run(RuleEngine({"rules": ALL_RULES}), msgs)
    first = RuleEngine({"rules": ALL_RULES})
    part1 = run(first, msgs[:cut])
    snap = json.loads(json.dumps(first.snapshot()))
    second = RuleEngine({"rules": ALL_RULES})
    second.restore(snap)
    part2 = run(second, msgs[cut:])
    assert part1 + part2 == whole


def test_replayed_messages_are_ignored() -> None:
    msgs = script(visit(T0, 5) + empty(T0 + 5, 4))
    eng = engine_for(INTRUSION)
    once = run(eng, msgs[:6])
    snap = eng.snapshot()
    assert run(eng, msgs[:6]) == []  # the same messages again: already processed
    assert eng.stats["duplicates"] == 6
    rest = run(eng, msgs[6:])
    eng2 = engine_for(INTRUSION)
    eng2.restore(snap)
    assert run(eng2, msgs[3:]) == rest  # replay from an earlier offset than the snapshot
    assert [a["status"] for a in once + rest] == ["started", "ended"]


def test_later_reader_wins_and_older_epochs_are_refused_and_counted(caplog) -> None:
    eng = engine_for({**INTRUSION, "min_frames": 1})
    run(eng, [msg(T0, [], 5, epoch=100)])
    assert eng.stats["frames"] == 1
    with caplog.at_level(logging.INFO, logger="alerts.engine"):
        run(eng, [msg(T0 + 1, [], 0, epoch=200)])  # a reader that started later: it takes over
        for seq in (9, 10, 11):
            run(eng, [msg(T0 + 2, [], seq, epoch=100)])  # the older reader's late frames: refused
    assert eng.stats == {
        "frames": 2,
        "duplicates": 0,
        "alerts": 0,
        "epoch_switches": 1,
        "stale_epoch": 3,
    }
    lines = [r.getMessage() for r in caplog.records]
    assert sum("new reader epoch 200 replaces 100" in line for line in lines) == 1
    assert sum("reader epoch 100 refused" in line for line in lines) == 1  # once, not per frame


def test_one_message_of_another_epoch_does_not_silence_the_camera() -> None:
    """Defect: a single well-formed message with another (older) epoch was taken as a new
    reader, and every later frame of the real reader was then dropped as a replay."""
    eng = engine_for({**INTRUSION, "min_frames": 2, "clear_after_s": 1})
    real = 1_700_000_100_000
    run(eng, [msg(T0 + i * 0.2, [], i, epoch=real) for i in range(5)])
    run(eng, [msg(T0 + 1.1, [], 0, epoch=real - 60_000)])  # forged / stray: refused
    inside = [person(0.5, 0.5, tid=1)]
    alerts = run(eng, [msg(T0 + 1.2 + i * 0.2, inside, 5 + i, epoch=real) for i in range(5)])
    assert [(a["rule_id"], a["status"]) for a in alerts] == [("lobby-intrusion", "started")]
    assert eng.stats["stale_epoch"] == 1 and eng.stats["frames"] == 10


def test_snapshot_is_per_camera_and_changed_rules_start_fresh() -> None:
    eng = engine_for({**INTRUSION, "cameras": "*"})
    run(eng, script(visit(T0, 4), cam="a") + script(visit(T0, 2), cam="b"))
    snap_a = eng.snapshot("a")
    assert list(snap_a["cameras"]) == ["a"]
    changed = engine_for({**INTRUSION, "cameras": "*", "clear_after_s": 9})
    changed.restore(snap_a)
    # The open alert of the old rule version is not carried over: no "ended" for it.
    assert run(changed, [msg(T0 + 20, [], 99, cam="a")]) == []
    same = engine_for({**INTRUSION, "cameras": "*"})
    same.restore(snap_a)
    ended = run(same, [msg(T0 + 20, [], 99, cam="a")])
    assert [a["status"] for a in ended] == ["ended"]


def test_cameras_are_independent_and_rule_camera_filter() -> None:
    eng = engine_for(INTRUSION)  # lobby only
    frames = visit(T0, 4)
    assert run(eng, script(frames, cam="yard")) == []
    alerts = run(eng, script(frames, cam="lobby"))
    assert [a["camera_id"] for a in alerts] == ["lobby"]


# -- tracker ------------------------------------------------------------------------------------


def test_tracker_assigns_stable_negative_ids() -> None:
    from alerts.events import Det

    tr = IouTracker(iou_threshold=0.3, max_age_s=2.0)

    def frame(ts: float, boxes: list[tuple[str, tuple]]) -> list[Det]:
        dets = [Det(0, lb, 0.9, b) for lb, b in boxes]
        tr.update(dets, ts)
        return dets

    a = frame(0.0, [("person", (0.1, 0.1, 0.2, 0.4)), ("person", (0.5, 0.1, 0.6, 0.4))])
    assert [d.track_id for d in a] == [-1, -2]
    b = frame(0.2, [("person", (0.52, 0.1, 0.62, 0.4)), ("person", (0.11, 0.1, 0.21, 0.4))])
    assert [d.track_id for d in b] == [-2, -1]
    c = frame(0.4, [("dog", (0.11, 0.1, 0.21, 0.4))])  # other class: new track
    assert c[0].track_id == -3
    d = frame(3.0, [("person", (0.11, 0.1, 0.21, 0.4))])  # older than max_age: new track
    assert d[0].track_id == -4
    kept = [Det(0, "person", 0.9, (0.11, 0.1, 0.21, 0.4), track_id=42)]
    tr.update(kept, 3.2)
    assert kept[0].track_id == 42  # ingest ids are left alone


def test_engine_tracker_gives_ids_to_untracked_detections() -> None:
    frames = [(T0 + i, [person(0.3 + 0.01 * i, 0.5)]) for i in range(5)] + empty(T0 + 5, 4)
    alerts = run(engine_for(INTRUSION), script(frames))
    assert [a["status"] for a in alerts] == ["started", "ended"]
    assert alerts[0]["track_id"] == -1


# -- messages and geometry ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mutate", "fragment"),
    [
        (lambda m: m.pop("capture_ts"), "missing field 'capture_ts'"),
        (lambda m: m.update(schema_version=2), "schema_version"),
        (lambda m: m.update(camera_id="bad id"), "camera_id"),
        (lambda m: m.update(seq=-1), "seq"),
        (lambda m: m.update(capture_ts=float("nan")), "capture_ts"),
        (lambda m: m.update(detections={}), "detections must be a list"),
        (lambda m: m["detections"][0].update(box=[0.5, 0.5, 0.4, 0.6]), "x1 <= x2"),
        (lambda m: m["detections"][0].update(box=[0.1, 0.1, 1.2, 0.3]), "[0, 1]"),
        (lambda m: m["detections"][0].update(confidence=2), "confidence"),
        (lambda m: m["detections"][0].update(track_id="7"), "track_id"),
        (lambda m: m["detections"][0].pop("label"), "detections[0]: missing field 'label'"),
    ],
)
def test_frame_event_rejects_malformed(mutate, fragment: str) -> None:
    m = msg(T0, [person(0.5, 0.5, 1)], 0)
    mutate(m)
    with pytest.raises(ValueError) as e:
        FrameEvent.from_message(m)
    assert fragment in str(e.value)
    with pytest.raises(ValueError):
        RuleEngine({"rules": [INTRUSION]}).process(m)


def test_geometry() -> None:
    tri = Polygon([(0.0, 0.0), (1.0, 0.0), (0.0, 1.0)])
    assert tri.contains(0.2, 0.2) and not tri.contains(0.8, 0.8)
    assert Polygon(BOX_ZONE).is_rect and Polygon(BOX_ZONE).contains(0.5, 0.5)
    assert segments_intersect((0, 0), (1, 1), (0, 1), (1, 0))
    assert not segments_intersect((0, 0), (1, 0), (0, 1), (1, 1))


# -- extension ----------------------------------------------------------------------------------


def test_plugin_rule_type() -> None:
    class AnyPersonConfig(RuleConfig):
        type: Literal["any_person"]

    @register_rule
    class AnyPerson(Rule):
        type = "any_person"
        config_model = AnyPersonConfig

        def process(self, frame):
            out = []
            for d in self.select(frame):
                self._start(out, frame, f"seq:{frame.seq}", frame.ts, label=d.label)
            return out

    try:
        alerts = run(
            engine_for({"id": "p", "type": "any_person", "cooldown_s": 0}), script(visit(T0, 2))
        )
        assert [a["rule_type"] for a in alerts] == ["any_person", "any_person"]
    finally:
        RULE_TYPES.pop("any_person")
        RULE_CONFIGS.pop("any_person")


def test_bench_runs() -> None:
    from pipeline.bench.rule_engine import bench_rules

    assert bench_rules(n_messages=500, n_cameras=5, n_rules=10) > 0
