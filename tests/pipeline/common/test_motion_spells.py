"""Motion spells: the messages a camera's motion checks turn into, and the record parser that
reads them as hostile input."""

from __future__ import annotations

import json
import math

import pytest

from pipeline.common.motion_spells import (
    MAX_SPELL_S,
    MotionSpell,
    MotionSpells,
    parse_motion,
)


def _run(spells: MotionSpells, frames: list[tuple[float, bool]], cid: str = "gate") -> list:
    out = []
    for ts, motion in frames:
        spell = spells.update(cid, ts, motion)
        if spell is not None:
            out.append((spell.started_at, spell.last_at, spell.ended))
    return out


def test_a_spell_starts_renews_and_ends_after_a_quiet_spell():
    # 10 fps: motion from 1.0 to 6.0, quiet until 12.0, motion again at 12.0-12.5
    frames = [(round(t * 0.1, 1), 10 <= t <= 60) for t in range(0, 121)]
    frames += [(12.0 + i * 0.1, True) for i in range(6)]
    got = _run(MotionSpells(quiet_s=3.0, renew_s=2.0), frames)
    assert got == [
        (1.0, 1.0, False),  # the first frame with motion starts it: said at once
        (1.0, 3.0, False),  # renewed every 2 s while it goes on
        (1.0, 5.0, False),
        (1.0, 6.0, True),  # ended with its last motion, once 3 s passed without any
        (12.0, 12.0, False),  # a new spell
    ]


def test_motion_returning_within_the_quiet_time_is_the_same_spell():
    frames = [(0.0, True), (1.0, False), (2.5, True), (4.0, False), (5.6, False)]
    got = _run(MotionSpells(quiet_s=3.0, renew_s=2.0), frames)
    assert got == [(0.0, 0.0, False), (0.0, 2.5, False), (0.0, 2.5, True)]


def test_cameras_are_separate_and_a_forgotten_camera_starts_afresh():
    spells = MotionSpells()
    assert spells.update("a", 1.0, True).camera_id == "a"
    assert spells.update("b", 1.0, False) is None
    assert spells.update("b", 1.1, True) == MotionSpell("b", 1.1, 1.1)
    spells.forget("a")
    assert spells.update("a", 1.2, True) == MotionSpell("a", 1.2, 1.2)  # a new start


def test_a_spell_never_outgrows_the_longest_one_a_message_may_describe():
    spells = MotionSpells(quiet_s=3.0, renew_s=2.0)
    sent = [s for t in range(1, int(MAX_SPELL_S) + 10) if (s := spells.update("c", t, True))]
    ended = [s for s in sent if s.ended]
    assert len(ended) == 1 and ended[0].last_at - ended[0].started_at <= MAX_SPELL_S
    assert all(parse_motion(s.message()) == s for s in sent)  # every one is a valid record


def test_a_message_round_trips_and_names_its_hold():
    spell = MotionSpell("gate", 1796680000.125, 1796680004.5, ended=True)
    assert parse_motion(json.loads(json.dumps(spell.message()))) == spell
    assert spell.key == "motion-1796680000125"


@pytest.mark.parametrize(
    ("msg", "why"),
    [
        ([], "not a JSON object"),
        ({"camera_id": "gate", "started_at": 1.0, "last_at": 2.0}, "v:"),
        ({"v": 1, "camera_id": "../x", "started_at": 1.0, "last_at": 2.0}, "camera id"),
        ({"v": 1, "camera_id": "gate", "started_at": "1", "last_at": 2.0}, "started_at"),
        ({"v": 1, "camera_id": "gate", "started_at": 1.0, "last_at": math.nan}, "last_at"),
        ({"v": 1, "camera_id": "gate", "started_at": True, "last_at": 2.0}, "started_at"),
        ({"v": 1, "camera_id": "gate", "started_at": 1e300, "last_at": 1e300}, "out of range"),
        ({"v": 1, "camera_id": "gate", "started_at": 5.0, "last_at": 2.0}, "last_at"),
        ({"v": 1, "camera_id": "gate", "started_at": 1.0, "last_at": 1e6}, "last_at"),
        ({"v": 1, "camera_id": "gate", "started_at": 1.0, "last_at": 2.0, "ended": 1}, "ended"),
    ],
)
def test_hostile_records_are_refused_saying_why(msg, why):
    with pytest.raises(ValueError, match=why):
        parse_motion(msg)
