"""Config and camera validation: bad input gets an error naming the file and the key."""

from __future__ import annotations

import pytest

from pipeline.cameras.spec import CameraSpec, mask_url
from pipeline.common.config import ConfigError, expand_env
from pipeline.config import load_config, parse_config


def write(tmp_path, text: str):
    p = tmp_path / "vigil.yaml"
    p.write_text(text)
    return p


def test_minimal_config_gets_defaults(tmp_path):
    cfg = load_config(
        write(tmp_path, "cameras:\n  - {id: lobby, url: 'rtsp://127.0.0.1:8554/lobby', fps: 4}\n")
    )
    assert cfg.kafka.bootstrap_servers == "127.0.0.1:9092"
    assert cfg.kafka.topics.detections == "vigil.detections"
    assert cfg.cameras[0].id == "lobby" and cfg.cameras[0].fps == 4
    assert cfg.detector.weights.endswith("models/yolov5n.pt") and "${" not in cfg.detector.weights


def test_malformed_yaml_names_the_file(tmp_path):
    p = write(tmp_path, "kafka: [unclosed\n")
    with pytest.raises(ConfigError, match=r"malformed YAML in .*vigil.yaml"):
        load_config(p)


def test_unknown_key_is_named(tmp_path):
    p = write(tmp_path, "detector:\n  imgsize: 640\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert "detector.imgsize: unknown key" in str(e.value)


def test_wrong_type_and_range_are_named():
    with pytest.raises(ConfigError) as e:
        parse_config({"detector": {"conf": 3, "imgsz": 650}})
    msg = str(e.value)
    assert "detector.conf" in msg and "detector.imgsz" in msg and "multiple of 32" in msg


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")


def test_duplicate_camera_ids_rejected():
    with pytest.raises(ConfigError, match="duplicate camera id 'a'"):
        parse_config(
            {"cameras": [{"id": "a", "url": "rtsp://h/x"}, {"id": "a", "url": "rtsp://h/y"}]}
        )


@pytest.mark.parametrize(
    "url, reason",
    [
        ("ftp://host/x", "unsupported scheme"),
        ("rtsp:///nohost", "missing host"),
        ("rtsp://host:99999/x", "invalid port"),
        ("/definitely/not/here.mp4", "no such file"),
        ("", "empty"),
    ],
)
def test_bad_camera_urls(url, reason):
    with pytest.raises(ValueError, match=reason):
        CameraSpec(id="cam1", url=url)


@pytest.mark.parametrize("cid", ["bad id", "-lead", "x" * 65, "a/b"])
def test_bad_camera_ids(cid):
    with pytest.raises(ValueError, match="invalid camera id"):
        CameraSpec(id=cid, url="rtsp://127.0.0.1/x")


def test_password_never_printed():
    spec = CameraSpec(id="door", url="rtsp://admin:s3cret@127.0.0.1:8554/door")
    for text in (str(spec), repr(spec), spec.safe_url, mask_url(spec.url)):
        assert "s3cret" not in text
    assert spec.safe_url == "rtsp://admin:***@127.0.0.1:8554/door"


def test_config_errors_do_not_leak_url_passwords():
    with pytest.raises(ConfigError) as e:
        parse_config({"cameras": [{"id": "door", "url": "ftp://admin:s3cret@host/x"}]})
    assert "s3cret" not in str(e.value)


def test_env_expansion(monkeypatch):
    monkeypatch.setenv("CAM_HOST", "10.1.2.3")
    assert expand_env("rtsp://${CAM_HOST}/a ${MISSING:-dflt}") == "rtsp://10.1.2.3/a dflt"
    monkeypatch.delenv("NOPE_X", raising=False)
    with pytest.raises(ConfigError, match="NOPE_X"):
        expand_env("${NOPE_X}")
