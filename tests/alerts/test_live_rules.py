"""Live rules without services: ``RuleEngine.replace_rules`` and a restore across a rule change,
the record format of the rules topic (round trip, validation with the YAML's texts), and
``vigil rules`` refusing a bad rule file. Kafka itself: test_rules_topic.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from alerts.config import RULE_CONFIGS, RulesError, parse_alerts_config
from alerts.engine import RuleEngine
from alerts.rules import parse_rule
from alerts.rules_topic import RuleRecordError, rule_from_record, rule_value, validate_rule
from pipeline.cli import main
from pipeline.cli.rules import duration_s
from tests.support.rules import BOX_ZONE, INTRUSION, LOITER, T0, VALIDATOR, empty, msg, run, visit

TWO = {"rules": [INTRUSION, LOITER]}


def frames(start_seq: int, items: list[tuple[float, list[dict]]]) -> list[dict]:
    return [msg(ts, dets, start_seq + i) for i, (ts, dets) in enumerate(items)]


def changed(**patch) -> dict:
    return {"rules": [{**INTRUSION, **patch}, LOITER]}


# -- replace_rules --------------------------------------------------------------------------------


def test_changed_rule_ends_its_open_alert_and_unchanged_rule_keeps_state() -> None:
    eng = RuleEngine(TWO)
    before = run(eng, frames(0, visit(T0, 12)))  # intrusion at frame 3, loitering at 10 s
    assert [(a["rule_id"], a["status"]) for a in before] == [
        ("lobby-intrusion", "started"),
        ("loiter", "started"),
    ]
    intrusion = before[0]

    ends = [e.to_dict() for e in eng.replace_rules(changed(severity="critical"))]
    assert len(ends) == 1
    end = ends[0]
    VALIDATOR.validate(end)
    assert end["id"] == intrusion["id"] and end["status"] == "ended"
    assert end["details"]["reason"] == "rule_changed"
    # at the camera's last frame: no new frame needed, deterministic
    assert end["ended_at"] == end["updated_at"] == T0 + 11
    assert end["frame_seq"] == 11 and end["epoch"] == 1
    assert end["severity"] == "high" and end["started_at"] == intrusion["started_at"]

    after = run(eng, frames(12, visit(T0 + 12, 4) + empty(T0 + 16, 10)))
    # the new intrusion version starts afresh (new id, new severity); loitering was not
    # restarted: its alert of before ends normally, with its full dwell time
    got = [(a["rule_id"], a["status"]) for a in after]
    assert got == [
        ("lobby-intrusion", "started"),
        ("lobby-intrusion", "ended"),
        ("loiter", "ended"),
    ]
    assert after[0]["severity"] == "critical" and after[0]["id"] != intrusion["id"]
    assert after[0]["started_at"] == T0 + 12
    assert after[2]["id"] == before[1]["id"] and after[2]["details"]["reason"] == "cleared"
    assert after[2]["details"]["dwell_s"] == 15.0


def test_removed_rule_ends_and_raises_nothing_more() -> None:
    eng = RuleEngine(TWO)
    run(eng, frames(0, visit(T0, 4)))
    ends = eng.replace_rules({"rules": [LOITER]})
    assert [(e.rule_id, e.status, e.details["reason"]) for e in ends] == [
        ("lobby-intrusion", "ended", "rule_changed")
    ]
    later = run(eng, frames(4, empty(T0 + 4, 5) + visit(T0 + 9, 8)))
    assert all(a["rule_id"] == "loiter" for a in later)


def test_unchanged_rules_change_nothing() -> None:
    eng = RuleEngine(TWO)
    run(eng, frames(0, visit(T0, 12)))
    snap = eng.snapshot()
    assert eng.replace_rules(parse_alerts_config(TWO)) == []
    assert eng.snapshot() == snap


def test_suppressed_alert_is_not_ended() -> None:
    """An alert held back by the cooldown was never sent: its end is not sent either."""
    eng = RuleEngine({"rules": [INTRUSION]})
    out = run(eng, frames(0, visit(T0, 4) + empty(T0 + 4, 4) + visit(T0 + 8, 4)))
    assert [a["status"] for a in out] == ["started", "ended"]  # the second visit: suppressed
    assert eng.replace_rules({"rules": [{**INTRUSION, "severity": "low"}]}) == []


def test_new_rule_applies_to_known_cameras() -> None:
    eng = RuleEngine({"rules": [LOITER]})
    run(eng, frames(0, visit(T0, 2)))
    assert eng.replace_rules(TWO) == []
    out = run(eng, frames(2, visit(T0 + 2, 3)))
    assert [(a["rule_id"], a["status"]) for a in out] == [("lobby-intrusion", "started")]


def test_bad_config_changes_nothing() -> None:
    eng = RuleEngine(TWO)
    run(eng, frames(0, visit(T0, 4)))
    snap = eng.snapshot()
    with pytest.raises(RulesError):
        eng.replace_rules({"rules": [{**INTRUSION, "zone": [[0, 0], [1, 1]]}]})
    assert eng.snapshot() == snap and eng.config.rules[0].id == "lobby-intrusion"


# -- restore across a change ------------------------------------------------------------------------


def test_restore_of_a_checkpoint_from_before_the_change_ends_the_same_alerts() -> None:
    """A crash between a rule change and the next checkpoint: the old checkpoint is restored
    under the new rules and the same alerts end with the same messages (Redis keeps one)."""
    live = RuleEngine(TWO)
    run(live, frames(0, visit(T0, 12)))
    before = live.snapshot()
    new = parse_alerts_config(changed(severity="critical"))
    ends = [e.to_dict() for e in live.replace_rules(new)]
    assert len(ends) == 1

    restored = RuleEngine(new)
    restored.restore(before)
    assert [e.to_dict() for e in restored.pop_changed_ends()] == ends
    assert restored.pop_changed_ends() == []
    # same state from then on: both engines raise the same alerts
    rest = frames(12, visit(T0 + 12, 4) + empty(T0 + 16, 10))
    assert run(restored, rest) == run(live, rest)


def test_restore_of_a_checkpoint_from_after_the_change_keeps_everything() -> None:
    live = RuleEngine(TWO)
    run(live, frames(0, visit(T0, 12)))
    new = parse_alerts_config(changed(severity="critical"))
    live.replace_rules(new)
    run(live, frames(12, visit(T0 + 12, 3)))  # the new version's alert is open
    after = live.snapshot()

    restored = RuleEngine(new)
    restored.restore(after)
    assert restored.pop_changed_ends() == []
    assert restored.snapshot() == after
    rest = frames(15, visit(T0 + 15, 2) + empty(T0 + 17, 10))
    out = run(restored, rest)
    assert out == run(live, rest)
    assert [(a["rule_id"], a["status"]) for a in out] == [
        ("lobby-intrusion", "ended"),
        ("loiter", "ended"),
    ]


def test_restore_with_a_rule_gone_ends_its_alerts() -> None:
    eng = RuleEngine(TWO)
    run(eng, frames(0, visit(T0, 12)))
    snap = eng.snapshot()
    only_intrusion = RuleEngine({"rules": [INTRUSION]})
    only_intrusion.restore(snap)
    ends = only_intrusion.pop_changed_ends()
    assert [(e.rule_id, e.details["reason"]) for e in ends] == [("loiter", "rule_changed")]
    VALIDATOR.validate(ends[0].to_dict())


# -- the record format ------------------------------------------------------------------------------

EXAMPLES = {
    "zone_intrusion": {**INTRUSION, "schedule": {"windows": [{"days": ["mon"], "end": "06:00"}]}},
    "loitering": LOITER,
    "line_crossing": {
        "id": "door",
        "type": "line_crossing",
        "line": [[0.0, 0.5], [1.0, 0.5]],
        "inside": [0.5, 0.9],
        "direction": "in",
    },
    "crowding": {"id": "crowd", "type": "crowding", "min_count": 3, "zone": BOX_ZONE},
    "object_left": {"id": "left", "type": "object_left", "min_seconds": 20, "cameras": ["a"]},
    "object_removed": {"id": "gone", "type": "object_removed", "present_s": 30},
    "count_anomaly": {"id": "burst", "type": "count_anomaly", "timezone": "Europe/Paris"},
}


def test_examples_cover_every_built_in_type() -> None:
    assert set(EXAMPLES) <= set(RULE_CONFIGS)
    assert set(RULE_CONFIGS) - set(EXAMPLES) <= {"any_person"}  # test_rules' plug-in type


@pytest.mark.parametrize("rtype", sorted(EXAMPLES))
def test_record_value_round_trips(rtype: str) -> None:
    rule = parse_rule(EXAMPLES[rtype])
    value = rule_value(rule)
    text = json.dumps(value)  # what goes on the topic
    back = rule_from_record(rule.id.encode(), text.encode())
    assert back is not None and type(back) is type(rule)
    assert back.model_dump() == rule.model_dump()
    assert back.fingerprint() == rule.fingerprint()
    assert set(value) == set(EXAMPLES[rtype])  # only what was given, like the YAML


@pytest.mark.parametrize(
    "bad",
    [
        {**INTRUSION, "zone": [[0.1, 0.1], [0.9, 0.1]]},
        {**INTRUSION, "zoen": BOX_ZONE},
        {**INTRUSION, "type": "teleport"},
        {"type": "loitering", "zone": BOX_ZONE},
        {"id": "x"},
        {**INTRUSION, "min_seconds": 2, "severity": "urgent"},
    ],
)
def test_validate_rule_says_what_the_yaml_says(bad: dict) -> None:
    with pytest.raises(RulesError) as yaml_err:
        parse_alerts_config({"rules": [bad]})
    with pytest.raises(RulesError) as live_err:
        validate_rule(bad)
    assert str(live_err.value) == str(yaml_err.value)
    assert live_err.value.errors == yaml_err.value.errors


def test_records_that_are_not_rules() -> None:
    assert rule_from_record(b"a", None) is None  # tombstone
    with pytest.raises(RuleRecordError, match="not JSON"):
        rule_from_record(b"a", b"{nope")
    with pytest.raises(RuleRecordError, match="polygon needs at least 3 points"):
        rule_from_record(b"lobby-intrusion", json.dumps({**INTRUSION, "zone": [[0, 0]]}).encode())
    with pytest.raises(RuleRecordError, match="does not match"):
        rule_from_record(b"other", json.dumps(INTRUSION).encode())
    # one line, even with several problems
    with pytest.raises(RuleRecordError) as e:
        rule_from_record(b"a", json.dumps({"id": "a", "type": "crowding", "zoen": 1}).encode())
    assert "\n" not in str(e.value) and str(e.value).count("rule 'a'") == 2


def test_with_rules_refuses_duplicate_ids() -> None:
    cfg = parse_alerts_config(TWO)
    with pytest.raises(RulesError, match="duplicate rule id"):
        cfg.with_rules([cfg.rules[0], cfg.rules[0]])
    other = cfg.with_rules([cfg.rules[1]])
    assert [r.id for r in other.rules] == ["loiter"] and [r.id for r in cfg.rules] == [
        "lobby-intrusion",
        "loiter",
    ]


# -- vigil rules -------------------------------------------------------------------------------------


def test_cli_put_refuses_a_bad_rule_with_the_yaml_text(tmp_path: Path, capsys) -> None:
    bad = {**INTRUSION, "zone": [[0.1, 0.1], [0.9, 0.1]]}
    path = tmp_path / "rule.yaml"
    path.write_text(json.dumps(bad))  # JSON is YAML
    with pytest.raises(RulesError) as yaml_err:
        parse_alerts_config({"rules": [bad]})
    # no Kafka here: the rule is refused before anything is sent
    code = main(["rules", "put", "--bootstrap", "127.0.0.1:1", "--rule", str(path)])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert err.splitlines() == [f"vigil: {yaml_err.value}"]
    assert err == "vigil: rule 'lobby-intrusion': zone: polygon needs at least 3 points\n"


def test_cli_rule_file_problems_are_one_line(tmp_path: Path, capsys) -> None:
    several = tmp_path / "several.yaml"
    several.write_text("id: a\ntype: crowding\nzoen: 1\n")
    listed = tmp_path / "list.yaml"
    listed.write_text("- id: a\n")
    for path in (several, listed, tmp_path / "missing.yaml"):
        code = main(["rules", "preview", "--rule", str(path), "--since", "10m"])
        _, err = capsys.readouterr()
        assert code == 2 and len(err.splitlines()) == 1 and err.startswith("vigil: "), err
    code = main(["rules", "put", "--rule", str(several)])
    _, err = capsys.readouterr()
    assert err.strip() == (
        "vigil: rule 'a': min_count: required key is missing; rule 'a': zoen: unknown key "
        "(check the spelling; see docs/rules.md)"
    )


def test_durations() -> None:
    assert duration_s("90") == 90 and duration_s("90s") == 90
    assert duration_s("30m") == 1800 and duration_s("1h") == 3600 and duration_s("2d") == 172800
    assert duration_s("1.5h") == 5400
    for bad in ("", "h", "-1h", "0", "1w"):
        with pytest.raises(Exception, match="positive duration"):
            duration_s(bad)


def test_two_parses_of_the_same_rule_are_equal_and_a_change_is_not():
    """The console waits for its own write by comparing rules: equality is the config's, not
    the compiled polygon's or schedule's identity."""
    from alerts.rules.config import parse_rule

    raw = {
        "id": "door",
        "type": "zone_intrusion",
        "zone": [[0.1, 0.1], [0.9, 0.1], [0.9, 0.9]],
        "schedule": {"windows": [{"days": ["mon"], "start": "08:00", "end": "18:00"}]},
    }
    assert parse_rule(raw) == parse_rule(dict(raw))
    assert parse_rule(raw) != parse_rule({**raw, "severity": "high"})
    assert parse_rule(raw) != parse_rule({**raw, "zone": [[0.2, 0.1], [0.9, 0.1], [0.9, 0.9]]})
