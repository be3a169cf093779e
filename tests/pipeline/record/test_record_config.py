"""The ``recordings:`` section: defaults that let existing configs parse, and errors that name the
key."""

from __future__ import annotations

import pytest

from pipeline.config import ConfigError, VigilConfig, parse_config
from pipeline.record.config import RecordingsConfig


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
