"""A camera's own settings (pipeline/cameras/settings.py): ``record:`` with its defaults and errors
that name the key, wherever a camera is defined."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from pipeline.cameras.settings import RecordConfig


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
