"""The demo (pipeline/demo.py): at the end, each alert's clip exported from its camera's
recording, or one line saying why it has none (ffprobe judges the clips); from a terminal the
pipeline runs on after the summary until it is stopped, from a script it ends by itself."""

from __future__ import annotations

import argparse
import threading
import time
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


@pytest.mark.integration
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
    # pre_s 2 before its start (from the keyframe at or before: the footage has one a second,
    # and a keyframe a few ms late moves the start a whole second back), post_s 5 after its end
    # (the default pre_s, 5, would make it 13 s or more)
    assert 2 + 3 + 5 <= ffprobe_duration(clip) <= 2 + 3 + 5 + 2.1
    assert decode_errors(clip) == ""
    (line,) = [x for x in lines if off in x]
    assert "no clip: camera hall has recording off" in line
    (line,) = [x for x in lines if before in x]
    assert "no clip: nothing recorded from" in line
    (line,) = [x for x in lines if gone in x]
    assert "no clip: the alert expired from Redis" in line


class _Sim:
    """Stands in for the camera simulator."""

    def __init__(self, *_args, **_kw) -> None:
        self.stopped = False

    def start(self) -> _Sim:
        return self

    def stop(self) -> None:
        self.stopped = True


@pytest.mark.parametrize("interactive", [True, False])
def test_from_a_terminal_the_pipeline_runs_on_after_the_summary(
    interactive, monkeypatch, tmp_path, capsys
):
    def subscribe(cfg, backend, on_ready):
        on_ready()
        yield from ()

    monkeypatch.setattr(demo, "CameraSim", _Sim)
    monkeypatch.setattr(demo, "subscribe", subscribe)
    exported: list[bool] = []
    monkeypatch.setattr(
        demo, "export_clips", lambda cfg, store, started, folder, wait: exported.append(wait)
    )
    seen: dict = {}

    def run_ingest(cfg, stop: threading.Event, max_seconds, sync_cameras, extra_services):
        # the pipeline: until stopped, or (standing in for Ctrl-C) 1.5 s after it began
        seen["max_seconds"] = max_seconds
        seen["stopped"] = stop.wait(max_seconds if max_seconds is not None else 1.5)
        seen["ran_s"] = time.monotonic() - began

    args = argparse.Namespace(port=1, seconds=0.3, linger=False)
    began = time.monotonic()
    demo._run(args, None, None, [], None, tmp_path, tmp_path, interactive, run_ingest)
    out = capsys.readouterr().out
    assert "demo: summary after" in out
    if interactive:
        # no time limit: still running after the summary and the clips, until stopped
        assert seen["max_seconds"] is None and not seen["stopped"]
        assert out.index("demo: summary after") < out.index("demo: still running")
        assert "Ctrl-C ends the demo" in out and seen["ran_s"] >= 1.5
        assert exported == [True]  # waits for the recordings of the latest alerts
    else:
        assert seen["max_seconds"] == 0.3 and "still running" not in out
        assert exported == [False]  # the recorder has stopped: every segment is finished
