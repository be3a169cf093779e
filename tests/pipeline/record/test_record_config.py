"""The ``recordings:`` section and the per-camera ``record:`` model: defaults that let existing
configs parse, and errors that name the key."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from pipeline.config import ConfigError, VigilConfig, parse_config
from pipeline.record.config import RecordConfig, RecordingsConfig


def test_an_existing_config_parses_with_recording_defaults(monkeypatch):
    monkeypatch.setenv("VIGIL_STATE", "/var/lib/vigil")
    cfg = parse_config({"cameras": []})
    assert cfg.recordings == RecordingsConfig()
    assert cfg.recordings.dir == "/var/lib/vigil/recordings"
    assert cfg.recordings.segment_s == 10 and cfg.recordings.max_disk_gb is None
    assert VigilConfig().recordings.min_free_gb == 1.0


def test_recordings_keys_are_checked_and_named():
    cfg = parse_config({"recordings": {"dir": "/srv/rec", "segment_s": 4, "max_disk_gb": 500}})
    assert (cfg.recordings.dir, cfg.recordings.segment_s) == ("/srv/rec", 4)
    for bad, key in (
        ({"segmnt_s": 4}, "recordings.segmnt_s"),
        ({"segment_s": 0.5}, "recordings.segment_s"),
        ({"max_disk_gb": 0}, "recordings.max_disk_gb"),
        ({"backoff_initial_s": 5, "backoff_max_s": 1}, "backoff_max_s must be at least"),
    ):
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            parse_config({"recordings": bad})


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
