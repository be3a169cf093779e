"""The CLI turns bad input into one clear line on stderr and exit code 2 (no traceback)."""

from __future__ import annotations

import pytest

from pipeline.cli import main


def run(capsys, *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    return code, capsys.readouterr().err


def test_malformed_yaml(tmp_path, capsys):
    cfg = tmp_path / "vigil.yaml"
    cfg.write_text("cameras: [ {id: a\n")
    code, err = run(capsys, "run", "-c", str(cfg), "--max-seconds", "1")
    assert code == 2 and "malformed YAML" in err and str(cfg) in err


def test_unknown_key(tmp_path, capsys):
    cfg = tmp_path / "vigil.yaml"
    cfg.write_text("kafka:\n  bootstrap: 127.0.0.1:9092\n")
    code, err = run(capsys, "ingest", "-c", str(cfg))
    assert code == 2 and "kafka.bootstrap: unknown key" in err


def test_bad_camera_add_names_the_problem(capsys):
    code, err = run(capsys, "cameras", "add", "bad id!", "rtsp://127.0.0.1/x")
    assert code == 2 and "invalid camera id" in err
    code, err = run(capsys, "cameras", "add", "door", "gopher://admin:pw@127.0.0.1/x")
    assert code == 2 and "unsupported scheme" in err and "pw@" not in err


def test_camera_file_errors_name_the_entry(tmp_path, capsys):
    f = tmp_path / "cams.yaml"
    f.write_text(
        "cameras:\n  - {id: ok, url: 'rtsp://127.0.0.1/a'}\n  - {id: broken, url: 'rtsp://'}\n"
    )
    code, err = run(capsys, "cameras", "apply", "-f", str(f))
    assert code == 2 and "cameras.1 (broken)" in err and "missing host" in err


def test_unreachable_kafka_is_a_clear_error(tmp_path, capsys):
    cfg = tmp_path / "vigil.yaml"
    cfg.write_text("kafka:\n  bootstrap_servers: 127.0.0.1:9\n  bootstrap_timeout_ms: 1000\n")
    code, err = run(capsys, "cameras", "list", "-c", str(cfg))
    assert code == 2 and "cannot reach Kafka at 127.0.0.1:9" in err and "make infra-up" in err


@pytest.mark.parametrize("argv", [["--help"], ["cameras", "--help"]])
def test_help(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 0


@pytest.mark.parametrize("command", ["run", "ingest", "alerts serve"])
def test_bad_rule_is_a_clean_config_error(tmp_path, capsys, command):
    """Defect: a 2-point zone made `vigil run` end with a RulesError traceback and exit 1."""
    cfg = tmp_path / "vigil.yaml"
    cfg.write_text(
        "alerts:\n  rules:\n    - {id: door, type: zone_intrusion, zone: [[0.1, 0.1], [0.5, 0.5]]}\n"
    )
    code, err = run(capsys, *command.split(), "-c", str(cfg))
    assert code == 2
    assert err.startswith(f"vigil: invalid config {cfg}:")
    assert "rule 'door': zone: polygon needs at least 3 points" in err
    assert "Traceback" not in err
