"""``vigil rules list | put | rm | preview``: the live rules (the ``vigil.rules`` topic, docs/rules.md).

A rule file holds one rule mapping, exactly as an item of the YAML's ``alerts.rules``; it is
validated like the YAML (same error texts, one line, exit code 2) before anything is sent.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml
from kafka.errors import KafkaError

from alerts.errors import RulesError
from alerts.preview import preview_rule
from alerts.rules import RuleConfig
from alerts.rules_topic import delete_rule, put_rule, read_rules, rule_value, validate_rule
from pipeline.cli.support import audit, config_args, config_from_args, fail
from pipeline.common.config import ConfigError, expand_env_values
from pipeline.common.errors import UsageError

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_UNIT_S = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def register(sub: argparse._SubParsersAction) -> None:
    rules = sub.add_parser("rules", help="live alert rules (applied without a restart)")
    rsub = rules.add_subparsers(dest="rules_command", required=True, metavar="ACTION")

    p = rsub.add_parser("list", help="the rules the alert services apply now")
    config_args(p, required=False)
    p.add_argument("--json", action="store_true", help="one rule mapping (JSON) per line")
    p.set_defaults(func=cmd_list)

    p = rsub.add_parser("put", help="add or replace a rule (alert services apply it within 5 s)")
    config_args(p, required=False)
    p.add_argument("--rule", required=True, metavar="FILE", help="YAML file with one rule")
    p.set_defaults(func=cmd_put)

    p = rsub.add_parser("rm", help="delete a rule (its open alerts end: rule_changed)")
    config_args(p, required=False)
    p.add_argument("rule_id")
    p.set_defaults(func=cmd_rm)

    p = rsub.add_parser(
        "preview", help="the alerts a rule would have raised on the recorded detections"
    )
    config_args(p, required=False)
    p.add_argument("--rule", required=True, metavar="FILE", help="YAML file with one rule")
    p.add_argument(
        "--since",
        default="1h",
        type=duration_s,
        metavar="DURATION",
        help="how far back: 90s, 30m, 1h, 2d (default 1h)",
    )
    p.add_argument(
        "--camera",
        dest="cameras",
        action="extend",
        nargs="+",
        default=None,
        metavar="ID",
        help="cameras to try it on (default: the rule's cameras)",
    )
    p.add_argument("--timeout", type=float, default=120.0, metavar="S", help="default 120")
    p.add_argument("--json", action="store_true", help="one JSON object (no snapshot bytes)")
    p.set_defaults(func=cmd_preview)


def duration_s(text: str) -> float:
    """``90``, ``90s``, ``30m``, ``1h``, ``2d`` -> seconds (argparse type)."""
    m = _DURATION.match(text)
    if m is None or float(m.group(1)) <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: a positive duration like 90s, 30m, 1h, 2d")
    return float(m.group(1)) * _UNIT_S[m.group(2)]


def load_rule_file(path: str) -> RuleConfig:
    """The one rule of a YAML file, validated like the YAML config: ``RulesError`` with its
    texts, ``ConfigError`` when the file cannot be read or is not one mapping."""
    try:
        raw = expand_env_values(yaml.safe_load(Path(path).read_text()))
    except FileNotFoundError:
        raise ConfigError(f"rule file {path} not found") from None
    except OSError as e:
        raise ConfigError(f"cannot read rule file {path}: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"malformed YAML in {path}: {one_line(e)}") from None
    except ConfigError as e:
        raise ConfigError(f"rule file {path}: {e}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected one rule (a mapping with id and type)")
    return validate_rule(raw)


def one_line(e: BaseException) -> str:
    return "; ".join(line.strip() for line in str(e).splitlines() if line.strip())


def _rule_or_fail(path: str) -> RuleConfig | int:
    try:
        return load_rule_file(path)
    except (RulesError, ConfigError) as e:
        return fail(one_line(e))


def cmd_list(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    try:
        rules = read_rules(cfg.kafka)
    except (KafkaError, TimeoutError) as e:
        return fail(f"cannot read {cfg.kafka.topics.rules}: {type(e).__name__}: {e}")
    if args.json:
        for rule in rules.values():
            print(json.dumps(rule_value(rule), ensure_ascii=False))
        return 0
    if not rules:
        print(f"no rules in {cfg.kafka.topics.rules}", file=sys.stderr)
    for rule in rules.values():
        cams = ",".join(rule.cameras)
        state = "enabled" if rule.enabled else "disabled"
        print(
            f"{rule.id:<24} {rule.type:<16} {state:<9} {rule.severity:<8} {cams:<20} "
            f"{rule.description}".rstrip()
        )
    return 0


def cmd_put(args: argparse.Namespace) -> int:
    rule = _rule_or_fail(args.rule)
    if isinstance(rule, int):
        return rule
    cfg = config_from_args(args)
    try:
        before = read_rules(cfg.kafka).get(rule.id)
        put_rule(cfg.kafka, rule)
    except (KafkaError, TimeoutError) as e:
        return fail(f"rule {rule.id} not saved: {type(e).__name__}: {e}")
    if before is None:
        what = "added"
    elif before.fingerprint() == rule.fingerprint():
        what = "unchanged"
    else:
        what = "updated (its open alerts end: rule_changed)"
    print(f"rule {rule.id} ({rule.type}) {what}")
    if what != "unchanged":
        audit(cfg, "rule.save", rule.id, rule.model_dump(mode="json", exclude_none=True))
    return 0


def cmd_rm(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    try:
        if args.rule_id not in read_rules(cfg.kafka):
            return fail(f"no such rule: {args.rule_id} (see `vigil rules list`)")
        delete_rule(cfg.kafka, args.rule_id)
    except (KafkaError, TimeoutError) as e:
        return fail(f"rule {args.rule_id} not removed: {type(e).__name__}: {e}")
    print(f"removed rule {args.rule_id}")
    audit(cfg, "rule.delete", args.rule_id)
    return 0


def _time(v: Any) -> str:
    if not isinstance(v, int | float):
        return "-"
    return datetime.fromtimestamp(v, timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def cmd_preview(args: argparse.Namespace) -> int:
    rule = _rule_or_fail(args.rule)
    if isinstance(rule, int):
        return rule
    cfg = config_from_args(args, "console")  # reads frames, as the console's preview does
    end = time.time()
    start = end - args.since
    try:
        result = preview_rule(cfg, rule, start, end, args.cameras, timeout_s=args.timeout)
    except (UsageError, TimeoutError, KafkaError) as e:
        return fail(f"preview of rule {rule.id} failed: {one_line(e)}")
    alerts = [{k: v for k, v in a.items() if k != "snapshot"} for a in result.alerts]
    if args.json:
        out = {
            "rule_id": rule.id,
            "start": start,
            "end": end,
            "alerts": alerts,
            "messages": result.messages,
            "frames": result.frames,
            "seconds": result.seconds,
        }
        print(json.dumps(out, ensure_ascii=False))
        return 0
    print(f"{'start (UTC)':<19}  {'end (UTC)':<19}  {'camera':<16}  {'label':<12}  count")
    for a in alerts:
        count = a.get("count")
        print(
            f"{_time(a.get('started_at')):<19}  {_time(a.get('ended_at')):<19}  "
            f"{str(a.get('camera_id')):<16}  {str(a.get('label') or '-'):<12}  "
            f"{count if count is not None else '-'}"
        )
    print(
        f"rule {rule.id}: {len(alerts)} alert(s) from {_time(start)} to {_time(end)} UTC; "
        f"{result.messages} detection message(s) read, {result.frames} frame(s) of its cameras, "
        f"{result.seconds:.1f} s"
    )
    if getattr(result, "truncated", False):
        print("(more alerts than the preview keeps: the oldest are shown)")
    return 0
