"""``review.frames``: its validation, and where the extra frames of a reviewed alert are taken
(docs/retraining.md, "Reviewed examples")."""

from __future__ import annotations

import pytest

from detectors.retrain.review_frames import spread_times
from pipeline.common.config import ConfigError
from pipeline.config import parse_config


@pytest.mark.parametrize(
    ("review", "says"),
    [
        ({"frames": 0}, "review.frames"),
        ({"frames": 21}, "review.frames"),
        ({"frames": "many"}, "review.frames"),
        ({"frames": 2.5}, "review.frames"),
        ({"min_span_s": 0}, "review.min_span_s"),
        ({"frame": 3}, "review.frame"),
    ],
)
def test_bad_review_settings_are_an_error_naming_the_key(review, says):
    with pytest.raises(ConfigError, match=r"(?s)" + says.replace(".", r"\.")):
        parse_config({"review": review})


def test_review_frames_defaults_to_the_triggering_frame_alone():
    assert parse_config({}).review.frames == 1
    assert spread_times(100.0, 110.0, 100.0, 1, 2.0) == []


def test_frames_are_spread_over_the_alert_or_around_a_short_one_never_at_the_trigger():
    # a 10 s alert triggered at its start: the trigger stands for the first of 5 even times
    assert spread_times(100.0, 110.0, 100.0, 5, 2.0) == [102.5, 105.0, 107.5, 110.0]
    # an alert shorter than min_span_s: spread over 4 s around its triggering frame
    assert spread_times(100.0, 100.5, 100.2, 3, 4.0) == [98.2, 102.2]
