"""The CLI loads only what a command needs: ``vigil bench``'s detector path runs where the
console, the notifier, the Kafka and Redis clients and OpenVINO are not installed (a bare GPU
machine, deploy/gpu/bench_gpu.sh), and ``vigil --help`` still lists every command."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from pipeline.common.assets import REPO_ROOT
from pipeline.common.bare import NOT_FOR_THE_BENCH

# Run in a child: the hidden packages must never have been imported there.
CHILD = textwrap.dedent(
    """
    import json, sys
    from pipeline.common.bare import NOT_FOR_THE_BENCH, hide
    hide(NOT_FOR_THE_BENCH)
    from pipeline.cli import main
    code = main(sys.argv[1:])
    loaded = sorted({m.partition(".")[0] for m in sys.modules})
    print("LOADED " + json.dumps(loaded))
    sys.exit(code)
    """
)


def _vigil_bare(*argv: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), OMP_NUM_THREADS="1")
    return subprocess.run(
        [sys.executable, "-c", CHILD, *argv],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_bench_detector_path_without_service_packages(tmp_path):
    out = tmp_path / "bench.json"
    p = _vigil_bare(
        "bench",
        "--device",
        "cpu",
        "--backends",
        "torch",
        "--skip",
        "pipeline,gating,alerts",
        "--imgsz",
        "320",
        "--batch-sizes",
        "1",
        "--detector-seconds",
        "0.2",
        "--accuracy-frames",
        "1",
        "--out",
        str(out),
    )
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-4000:]
    result = json.loads(out.read_text())
    assert [r["backend"] for r in result["detector"]] == ["torch"]
    assert result["accuracy"]["torch"]["ok"]
    loaded = json.loads(p.stdout.split("LOADED ", 1)[1].splitlines()[0])
    assert not set(loaded) & set(NOT_FOR_THE_BENCH)


def test_help_lists_every_command_without_service_packages():
    from pipeline.cli import GROUPS

    p = _vigil_bare("--help", timeout=120)
    assert p.returncode == 0, p.stderr[-4000:]
    for commands in GROUPS.values():
        for command in commands:
            assert f"\n    {command} " in p.stdout, command
    assert "unavailable here" in p.stdout  # e.g. the console: no fastapi


def test_group_table_names_what_each_module_registers():
    from pipeline.cli import GROUPS

    for name, commands in GROUPS.items():
        sub = argparse.ArgumentParser().add_subparsers()
        importlib.import_module(name).register(sub)
        assert tuple(sub.choices) == commands, name


def test_help_and_a_command_parse_with_the_whole_cli(capsys):
    from pipeline.cli import build_parser

    full = build_parser()
    one = build_parser(["-v", "bench", "--help"])
    assert set(full._subparsers._group_actions[0].choices) >= {"bench", "console", "alerts"}
    assert list(one._subparsers._group_actions[0].choices) == ["bench"]
    assert Path(REPO_ROOT, "pipeline", "cli", "__init__.py").is_file()


def test_alert_benches_are_subcommands_of_vigil_alerts():
    """The rule-preview bench is ``vigil alerts bench-preview`` (no argparse of its own)."""
    from pipeline.bench.rule_preview import cmd_bench_preview
    from pipeline.cli import build_parser

    args = build_parser(["alerts"]).parse_args(["alerts", "bench-preview", "--minutes", "2"])
    assert args.func is cmd_bench_preview and args.minutes == 2.0 and args.cameras == 4
    args = build_parser(["alerts"]).parse_args(["alerts", "bench", "--messages", "10"])
    assert args.func.__module__ == "pipeline.bench.alert_service" and args.messages == 10
