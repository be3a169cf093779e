"""The CLI turns bad input into one clear line on stderr and exit code 2 (no traceback)."""

from __future__ import annotations

import argparse
import io
import socket
import subprocess
import sys

import pytest

from pipeline.cli import main
from pipeline.cli.cameras import camera_url, register
from pipeline.common.assets import footage


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


# -- camera secrets off the command line, --check (issue 12, defect 9) ----------------------------

UNREACHABLE_KAFKA = ["--bootstrap", "127.0.0.1:9"]


def test_camera_url_from_stdin_env_or_password_env(monkeypatch, capsys):
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())

    def url(*argv: str, stdin: str = "") -> str:
        monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
        return camera_url(parser.parse_args(["cameras", "add", "door", *argv]))

    assert url("-", stdin="rtsp://admin:s3cret@10.0.0.5/s1\n") == "rtsp://admin:s3cret@10.0.0.5/s1"
    monkeypatch.setenv("DOOR_URL", "rtsp://admin:s3cret@10.0.0.5/s1")
    assert url("--url-env", "DOOR_URL") == "rtsp://admin:s3cret@10.0.0.5/s1"
    monkeypatch.setenv("DOOR_PW", "p@ss:w/rd")
    assert url("rtsp://admin@10.0.0.5:554/s1", "--password-env", "DOOR_PW") == (
        "rtsp://admin:p%40ss%3Aw%2Frd@10.0.0.5:554/s1"
    )
    assert url("rtsp://admin@10.0.0.5/s1", "--password-stdin", stdin="pw\n") == (
        "rtsp://admin:pw@10.0.0.5/s1"
    )
    assert "warning" not in capsys.readouterr().err  # nothing secret was on the command line
    url("rtsp://admin:s3cret@10.0.0.5/s1")
    err = capsys.readouterr().err
    assert "password is on the command line" in err and "s3cret" not in err


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--url-env", "NOPE_UNSET"], "--url-env: environment variable NOPE_UNSET is not set"),
        (["rtsp://10.0.0.5/s1", "--password-env", "NOPE_UNSET"], "NOPE_UNSET is not set"),
        (["rtsp://10.0.0.5/s1", "--password-env", "HOME"], "a password needs a user in the URL"),
        ([], "give the camera URL once"),
    ],
)
def test_camera_url_errors_name_the_input(argv, expected, capsys):
    code, err = run(capsys, "cameras", "add", "door", *argv, *UNREACHABLE_KAFKA)
    assert code == 2 and expected in err


def test_camera_check_reports_the_stream_or_the_error(capsys, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code, err = run(
        capsys,
        "cameras",
        "add",
        "door",
        f"rtsp://admin:s3cret@127.0.0.1:{port}/s1",
        "--check",
        "--check-timeout",
        "2",
        *UNREACHABLE_KAFKA,
    )
    assert code == 2 and "cannot open rtsp://admin:***@127.0.0.1" in err and "not added" in err
    assert "s3cret" not in err
    clip = str(footage("people-detection.mp4"))
    # Kafka unreachable: given up after 1 s (the default waits 15 s for a broker to come)
    conf = tmp_path / "vigil.yaml"
    conf.write_text("kafka: {bootstrap_servers: '127.0.0.1:9', bootstrap_timeout_ms: 1000}\n")
    code = main(["cameras", "add", "hall", clip, "--check", "-c", str(conf)])
    out, err = capsys.readouterr()
    assert "checked camera hall" in out and "480x270, 12 fps" in out
    assert code == 2 and "cannot reach Kafka" in err  # checked first, then registered


# -- a bug is a traceback, a user mistake one line --------------------------------------------


@pytest.mark.parametrize("error", [ValueError, OSError])
def test_a_bug_in_a_handler_is_not_a_user_error(error, monkeypatch, tmp_path, capsys):
    from detectors.retrain import dataset as ds

    def bug(*_args, **_kwargs):
        raise error("a bug, not the user's input")

    monkeypatch.setattr(ds, "stats", bug)
    with pytest.raises(error, match="a bug"):
        main(["dataset", "stats", str(tmp_path)])
    assert "vigil:" not in capsys.readouterr().err


def test_a_bug_exits_with_a_traceback_not_vigil_colon(tmp_path):
    script = (
        "import sys\n"
        "from detectors.retrain import dataset as ds\n"
        "ds.stats = lambda *a, **k: int('not a number')\n"  # the ValueError of a bug
        "from pipeline.cli import main\n"
        f"sys.exit(main(['dataset', 'stats', {str(tmp_path)!r}]))\n"
    )
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert res.returncode == 1, res.stderr
    assert "Traceback" in res.stderr and "ValueError: invalid literal" in res.stderr
    assert "vigil:" not in res.stderr


def test_user_mistakes_are_one_line_naming_the_input(tmp_path, capsys):
    from detectors.retrain import dataset as ds

    not_a_video = tmp_path / "x.mp4"
    not_a_video.write_text("not a video")
    a_file = tmp_path / "file"
    a_file.write_text("")
    (tmp_path / "ds").mkdir()
    ds.write_data_yaml(tmp_path / "ds", {0: "person"})
    rule = tmp_path / "rule.yaml"
    rule.write_text("id: door\ntype: zone_intrusion\nzone: [[0, 0], [1, 0], [1, 1]]\n")
    for argv, expected in (
        (["dataset", "stats", str(tmp_path / "missing")], f"{tmp_path / 'missing'} not found"),
        (["dataset", "collect", str(tmp_path / "no.mp4"), "-o", str(tmp_path / "o"),
          "--no-detect"], f"video {tmp_path / 'no.mp4'} not found"),
        (["dataset", "collect", str(not_a_video), "-o", str(tmp_path / "o"), "--no-detect"],
         f"cannot open {not_a_video} as a video"),
        (["dataset", "collect", str(not_a_video), "-o", str(a_file / "o"), "--no-detect"],
         f"cannot create the dataset folder {a_file / 'o'}"),
        (["dataset", "collect", str(not_a_video), "-o", str(tmp_path / "o"), "--no-detect",
          "--uncertain", "0.3"], "--uncertain expects 2 comma-separated numbers, got '0.3'"),
        (["dataset", "collect", str(not_a_video), "-o", str(tmp_path / "o"), "--no-detect",
          "--camera", "a", "--camera", "b"], "2 camera id(s) (--camera) for 1 video(s)"),
        (["dataset", "split", str(tmp_path / "ds"), "--val", "2"], "must be fractions"),
        (["retrain", "--data", str(tmp_path / "ds"), "--no-registry", "--project", str(a_file)],
         f"cannot create the run folder {a_file}/"),
        (["rules", "preview", "--rule", str(rule), "--camera", "bad id!", *UNREACHABLE_KAFKA],
         "preview of rule door failed: 'bad id!' is not a camera id"),
    ):  # fmt: skip
        code, err = run(capsys, *argv)
        assert code == 2 and err.startswith("vigil: ") and len(err.splitlines()) == 1, err
        assert expected in err, err


def test_the_errors_users_see_are_user_errors():
    """What the CLI reports as one line: every such class is a UserError (a plain ValueError or
    OSError is a bug and keeps its traceback)."""
    from alerts.errors import RulesError
    from alerts.subscribe import SubscribeError
    from detectors.backends.base import BackendError
    from detectors.errors import WeightsError
    from detectors.quantize import QuantizeError
    from detectors.retrain.dataset import DatasetError
    from detectors.retrain.model_registry import ModelRefused, RegistryError
    from detectors.retrain.signing import SigningKeyError
    from detectors.retrain.train_options import TrainingError
    from pipeline.camera_sim import CameraSimError
    from pipeline.common import errors
    from pipeline.common.kafka import KafkaUnavailable
    from pipeline.console.auth import AuthError
    from pipeline.ingest.capture import CameraUnavailable

    for cls in (
        errors.ConfigError, errors.UsageError, errors.InputError, errors.InputNotFound,
        RulesError, SubscribeError, BackendError, WeightsError, QuantizeError, DatasetError,
        RegistryError, ModelRefused, SigningKeyError, TrainingError, CameraSimError,
        KafkaUnavailable, AuthError, CameraUnavailable,
    ):  # fmt: skip
        assert issubclass(cls, errors.UserError), cls
    assert issubclass(errors.InputNotFound, FileNotFoundError)  # what callers caught before
