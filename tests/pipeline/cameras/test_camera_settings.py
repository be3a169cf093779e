"""A camera's own settings (pipeline/cameras/settings.py): ``record:`` with its defaults and errors
that name the key, wherever a camera is defined."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from pipeline.cameras.registry import CAMERAS
from pipeline.cameras.settings import RecordConfig
from pipeline.cameras.spec import CameraSpec
from pipeline.config import ConfigError, parse_config


def test_record_settings_per_camera():
    rec = RecordConfig.model_validate(
        {"enabled": True, "mode": "events", "retain": {"event_days": 90}, "pre_s": 10}
    )
    assert (rec.mode, rec.retain.event_days, rec.retain.continuous_days) == ("events", 90, 7)
    assert (rec.pre_s, rec.post_s) == (10, 5)
    assert not RecordConfig().enabled
    with pytest.raises(ValidationError, match="mode"):
        RecordConfig.model_validate({"mode": "always"})
    with pytest.raises(ValidationError, match="retain.continuous_days"):
        RecordConfig.model_validate({"retain": {"continuous_days": 0}})


def test_a_camera_carries_its_recording_settings_from_yaml_and_through_the_registry():
    plain = CameraSpec(id="door", url="rtsp://127.0.0.1:8554/sub")
    assert not plain.record.enabled and plain.record_url is None
    assert plain.recording_url == plain.url  # without record_url the recording is of url
    spec = CameraSpec(
        id="door",
        url="rtsp://127.0.0.1:8554/sub",
        record_url="rtsp://127.0.0.1:8554/main",
        record={"enabled": True, "mode": "events", "pre_s": 10},
    )
    assert spec.recording_url == "rtsp://127.0.0.1:8554/main"
    assert CAMERAS.parse_record(b"door", json.dumps(spec.model_dump(mode="json")).encode()) == spec
    cfg = parse_config({"cameras": [spec.model_dump(mode="json")]})
    assert cfg.cameras == [spec]
    with pytest.raises(ConfigError, match=r"cameras\.0\.record\.mode"):
        parse_config({"cameras": [{"id": "door", "url": plain.url, "record": {"mode": "x"}}]})
