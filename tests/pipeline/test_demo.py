"""The demo's clips (pipeline/demo.py): at the end, each alert's clip exported from its camera's
recording, or one line saying why it has none. ffprobe judges the clips."""

from __future__ import annotations

import uuid

import pytest
import redis

import pipeline.demo as demo
from alerts.store import AlertStore
from pipeline.cameras.spec import CameraSpec
from pipeline.record.index import SegmentIndex
from tests.support.config import KAFKA, make_config
from tests.support.recordings import copy_recording, decode_errors, ffprobe_duration, store_alert
from tests.support.redis import cleanup

pytestmark = pytest.mark.integration


def test_each_alert_gets_its_clip_or_a_line_saying_why_not(
    camera_recording, tmp_path, monkeypatch, capsys
):
    rec = camera_recording
    cfg = make_config(KAFKA, recordings={"dir": str(tmp_path / "recordings")})
    client = redis.Redis.from_url(rec.redis_url)
    copy_recording(rec, tmp_path / "recordings", SegmentIndex.from_config(cfg.redis))
    cameras = {
        rec.camera: CameraSpec(
            id=rec.camera, url="rtsp://127.0.0.1:1/a", record={"enabled": True, "pre_s": 2}
        ),
        "hall": CameraSpec(id="hall", url="rtsp://127.0.0.1:1/b"),  # recording off
    }
    monkeypatch.setattr(demo, "read_registry", lambda kafka: cameras)
    store = AlertStore(cfg.redis)
    t = rec.segments[0].start
    try:
        recorded = store_alert(store, rec.camera, t + 6, t + 9)
        off = store_alert(store, "hall", t + 6, t + 9)
        before = store_alert(store, rec.camera, t - 900, t - 890)  # before the recording began
        gone = uuid.uuid4().hex[:20]  # its hash expired
        started = {a: (cam, "zone") for a, cam in ((recorded, rec.camera), (off, "hall"))}
        started |= {before: (rec.camera, "zone"), gone: (rec.camera, "zone")}
        folder = tmp_path / "state" / "demo-clips"
        assert demo.export_clips(cfg, store, started, folder, wait=False) == 1
    finally:
        cleanup(client, cfg.redis.key_prefix)
    lines = capsys.readouterr().out.splitlines()
    (clip,) = folder.iterdir()
    assert clip.name == f"{rec.camera}-zone-{recorded}.mp4"
    (line,) = [x for x in lines if recorded in x]
    assert str(clip) in line
    # pre_s 2 before its start (from the keyframe at or before), post_s 5 after its end
    assert 2 + 3 + 5 <= ffprobe_duration(clip) <= 2 + 3 + 5 + 1.1
    assert decode_errors(clip) == ""
    (line,) = [x for x in lines if off in x]
    assert "no clip: camera hall has recording off" in line
    (line,) = [x for x in lines if before in x]
    assert "no clip: nothing recorded from" in line
    (line,) = [x for x in lines if gone in x]
    assert "no clip: the alert expired from Redis" in line
