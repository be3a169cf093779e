"""``review.frames``: reviewing a recorded camera's alert adds frames of its clip to the dataset
besides the triggering frame (docs/retraining.md, "Reviewed examples"), through the console's
``POST /api/alerts/{id}/review``; FFmpeg's ``ffmpeg`` judges that they are the recorded frames."""

from __future__ import annotations

import uuid
from pathlib import Path

import cv2
import numpy as np
import pytest
import redis

from alerts.store import AlertStore
from detectors.retrain.dataset.manifest import Manifest
from pipeline.common.redis import RedisKeys
from pipeline.config import parse_config
from pipeline.console.review_frames import add_clip_frames
from pipeline.record.index import SegmentIndex
from pipeline.record.layout import segment_path
from tests.support.console import console_stack
from tests.support.recordings import (
    CLIP_FRAME_S,
    block_diff,
    copy_recording_as,
    ffmpeg_frames,
    store_alert,
)


@pytest.mark.integration
def test_a_review_with_three_frames_adds_two_recorded_frames_of_the_clip(
    camera_recording, kafka_bootstrap, tmp_path
):
    dataset = tmp_path / "dataset"
    with console_stack(
        kafka_bootstrap,
        tmp_path,
        roles=("operator",),
        collection={"dir": str(dataset)},
        recordings={"dir": str(tmp_path / "recordings")},
        review={"frames": 3},
    ) as stack:
        cfg = stack.cfg
        client = redis.Redis.from_url(camera_recording.redis_url)
        camera = f"rv{uuid.uuid4().hex[:6]}"
        segments = copy_recording_as(
            camera_recording,
            Path(cfg.recordings.dir),
            SegmentIndex(client, RedisKeys(cfg.redis.key_prefix)),
            camera,
        )
        s0 = segments[0].start
        trigger = cv2.imencode(".jpg", np.zeros((120, 160, 3), np.uint8))[1].tobytes()
        aid = store_alert(AlertStore(cfg.redis), camera, s0 + 5, s0 + 9, source=trigger)

        r = stack.login("operator").post(
            f"/api/alerts/{aid}/review", json={"verdict": "false_positive"}
        )
        assert r.status_code == 200, r.text
        out = r.json()
        assert out["review_image"] and len(out["clip_images"]) == 2, out
        assert out["clip_frames"].startswith("2 frame(s) of its clip added"), out

    records = Manifest.load(dataset).records.values()
    reviewed = [r for r in records if (r.get("review") or {}).get("alert_id") == aid]
    clip = sorted(
        (r for r in records if (r.get("review_clip") or {}).get("alert_id") == aid),
        key=lambda r: r["capture_ts"],
    )
    assert len(reviewed) == 1 and len(clip) == 2  # 3 frames of the alert in the dataset
    # spread over the alert (5 s to 9 s; the first is the triggering frame's moment)
    assert [round(r["capture_ts"] - s0, 1) for r in clip] == [7.0, 9.0]
    for r in clip:
        assert r["review_clip"]["verdict"] == "false_positive" and r["label_source"] is None
        seg = next(s for s in segments if s.start <= r["capture_ts"] < s.end)
        k = round((r["capture_ts"] - seg.start) / CLIP_FRAME_S)
        frames = ffmpeg_frames(segment_path(Path(cfg.recordings.dir), camera, seg.start), {k})
        img = cv2.imread(str(dataset / r["image"]))
        assert block_diff(img, frames[k]) <= 6, f"{r['image']} is not the frame recorded then"


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        ({"camera_id": "../../etc"}, "camera_id is not a camera id"),
        ({"started_at": "nan"}, "started_at is not a time"),
        ({"ended_at": 1.0}, "ended_at is before started_at"),
    ],
)
def test_a_forged_alert_adds_no_frames_and_reads_no_footage(fields, says, tmp_path):
    """Alert hashes are Redis data: fields that cannot place a clip choose no footage (the index
    is never asked) and the review's answer says why."""
    cfg = parse_config(
        {
            "review": {"frames": 3},
            "collection": {"dir": str(tmp_path / "dataset")},
            "recordings": {"dir": str(tmp_path / "recordings")},
        }
    )
    alert = {"id": "a1", "camera_id": "door", "started_at": 100.0, "ended_at": 104.0, **fields}
    images, note = add_clip_frames(cfg, None, {}, alert, "a1", "false_positive", "op", now=200.0)
    assert images == [] and note is not None and says in note, note
    assert not (tmp_path / "dataset").exists()
