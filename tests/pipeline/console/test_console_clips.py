"""``GET /api/alerts/{id}/clip.mp4``: the alert's clip from the recording, served with HTTP Range
(a browser's ``<video>`` seeks in it), to a viewer and not to a caller who is not logged in; 404
saying so when the alert is unknown or its footage expired; ``vigil clips export`` writes the
same clip."""

from __future__ import annotations

from datetime import datetime

import pytest

from alerts.store import AlertStore
from pipeline.cameras.spec import CameraSpec
from pipeline.console.clips import why_no_clip
from pipeline.record.clips import ClipRange
from pipeline.record.index import SegmentIndex
from pipeline.record.layout import relative_path, start_ms
from pipeline.record.segment import Segment
from tests.support.browser import log_in
from tests.support.cli import run_vigil
from tests.support.console import PASSWORD, ConsoleStack
from tests.support.recordings import (
    CLIP_GOP_S,
    decode_errors,
    ffprobe_duration,
    ffprobe_packets,
    store_alert,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stack(recorded_stack) -> ConsoleStack:
    """A console whose recordings are a copy of the shared recording, indexed under its keys."""
    return recorded_stack


@pytest.fixture(scope="module")
def alert_id(stack, camera_recording) -> str:
    """An ended alert 8.05 s into the recording, 4 s long (the clip: 5 + 4 + 5 s)."""
    started = camera_recording.segments[0].start + 8.05
    return store_alert(AlertStore(stack.cfg.redis), "cam1", started, started + 4.0)


def test_a_viewer_gets_the_clip_of_an_alert(stack, alert_id, viewer, tmp_path):
    r = viewer.get(f"/api/alerts/{alert_id}/clip.mp4")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "video/mp4"
    assert r.headers["accept-ranges"] == "bytes"
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(r.content)
    assert ffprobe_packets(clip)[0][1], "the clip does not start on a keyframe"
    assert decode_errors(clip) == ""
    # the default pre_s and post_s (5 s each) around the 4 s alert
    assert ffprobe_duration(clip) == pytest.approx(14.0, abs=CLIP_GOP_S)


def test_a_range_request_gets_those_bytes_and_a_range_past_the_end_416(stack, alert_id, viewer):
    whole = viewer.get(f"/api/alerts/{alert_id}/clip.mp4").content
    r = viewer.get(f"/api/alerts/{alert_id}/clip.mp4", headers={"Range": "bytes=1000-4999"})
    assert r.status_code == 206, (r.status_code, dict(r.headers))
    assert r.headers["content-range"] == f"bytes 1000-4999/{len(whole)}"
    assert r.content == whole[1000:5000]
    r = viewer.get(f"/api/alerts/{alert_id}/clip.mp4", headers={"Range": "bytes=-100"})
    assert r.status_code == 206, (r.status_code, dict(r.headers))
    assert r.content == whole[-100:]
    r = viewer.get(f"/api/alerts/{alert_id}/clip.mp4", headers={"Range": f"bytes={len(whole)}-"})
    assert r.status_code == 416
    assert r.headers["content-range"] == f"bytes */{len(whole)}"


def test_the_clip_names_the_stretches_of_its_range_not_recorded(
    stack, alert_id, camera_recording, viewer
):
    assert "x-vigil-clip-gaps" not in viewer.get(f"/api/alerts/{alert_id}/clip.mp4").headers
    last = camera_recording.segments[-1]
    # the clip: 5 s before to 5 s after, past the end of the recording by 7 s
    late = store_alert(AlertStore(stack.cfg.redis), "cam1", last.end - 3, last.end + 2)
    r = viewer.get(f"/api/alerts/{late}/clip.mp4")
    assert r.status_code == 200
    (gap,) = r.headers["x-vigil-clip-gaps"].split(", ")
    a, b = (datetime.fromisoformat(t).timestamp() for t in gap.split("/"))
    assert a == pytest.approx(last.end, abs=0.002) and b == pytest.approx(last.end + 7, abs=0.002)


def test_not_logged_in_gets_no_clip(stack, alert_id):
    with stack.client() as c:
        r = c.get(f"/api/alerts/{alert_id}/clip.mp4")
    assert r.status_code == 401
    assert r.headers["content-type"].startswith("application/json")


def test_an_unknown_alert_or_expired_footage_is_404_saying_so(stack, camera_recording, viewer):
    first = camera_recording.segments[0]
    expired = store_alert(AlertStore(stack.cfg.redis), "cam1", first.start - 600, first.start - 590)
    r = viewer.get(f"/api/alerts/{expired}/clip.mp4")
    assert r.status_code == 404
    assert "footage expired or not recorded (camera cam1" in r.json()["detail"]
    r = viewer.get("/api/alerts/ffffffffffffffffffff/clip.mp4")
    assert r.status_code == 404 and r.json()["detail"] == "no alert 'ffffffffffffffffffff'"
    r = viewer.get("/api/alerts/..%2F..%2Fetc%2Fpasswd/clip.mp4")
    assert r.status_code == 404


def test_no_clip_says_why_recording_off_expired_or_not_recorded(stack, camera_recording, viewer):
    store, index = AlertStore(stack.cfg.redis), SegmentIndex.from_config(stack.cfg.redis)
    last = camera_recording.segments[-1]
    after = store_alert(store, "cam1", last.end + 600, last.end + 610)
    r = viewer.get(f"/api/alerts/{after}/clip.mp4")
    assert r.status_code == 404
    assert (r.json()["reason"], r.json()["camera_id"]) == ("not_recorded", "cam1")
    assert "footage expired or not recorded" in r.json()["detail"]  # the detail as before
    # cam2's recordings kept start after its alert: retention deleted that footage
    t = last.end + 3600
    index.add(Segment("cam2", relative_path("cam2", t), t, t + 10, 1000, 100))
    old = store_alert(store, "cam2", t - 600, t - 590)
    r = viewer.get(f"/api/alerts/{old}/clip.mp4")
    assert (r.status_code, r.json()["reason"]) == (404, "expired")
    cameras = {"hall": CameraSpec(id="hall", url="rtsp://127.0.0.1:1/h")}  # record off
    rng = ClipRange("a1", "hall", t - 5, t + 5, False)
    assert why_no_clip(cameras, index, rng) == "recording_off"


def test_a_forged_index_entry_serves_nothing_from_outside_the_recordings(
    stack, camera_recording, viewer, tmp_path
):
    """An alert at a time with no footage, and an index entry there naming a real MP4 file
    outside recordings.dir: 404, the file is not served."""
    outside = tmp_path / "secret.mp4"
    seg = camera_recording.segments[0]
    outside.write_bytes((camera_recording.root / seg.path).read_bytes())
    at = seg.start - 3600
    index = SegmentIndex.from_config(stack.cfg.redis)
    ms = start_ms(at)
    index.client.hset(
        index.keys.recording("cam1", ms),
        mapping={"start": repr(at), "end": repr(at + 10), "path": str(outside), "bytes": 1},
    )
    index.client.zadd(index.keys.recordings("cam1"), {str(ms): ms})
    aid = store_alert(AlertStore(stack.cfg.redis), "cam1", at + 2, at + 4)
    r = viewer.get(f"/api/alerts/{aid}/clip.mp4")
    assert r.status_code == 404, "a file outside recordings.dir was served"
    assert "footage expired or not recorded" in r.json()["detail"]


def test_vigil_clips_export_writes_the_same_clip(
    stack, alert_id, viewer, tmp_path, capsys, monkeypatch
):
    served = viewer.get(f"/api/alerts/{alert_id}/clip.mp4").content
    out = tmp_path / "clip.mp4"
    argv = ["clips", "export", alert_id, "-c", stack.config_file, "-o", str(out)]
    code, stdout, err = run_vigil(argv, capsys, monkeypatch)
    assert code == 0, err
    assert stdout.startswith(f"{out}: alert {alert_id} on cam1 from ")
    assert out.read_bytes() == served
    code, _, err = run_vigil(
        ["clips", "export", "ffffffffffffffffffff", "-c", stack.config_file, "-o", str(out)],
        capsys,
        monkeypatch,
    )
    assert code == 2 and "no alert ffffffffffffffffffff" in err


def test_the_alert_detail_plays_the_clip_or_says_why_there_is_none(
    stack, alert_id, camera_recording, new_page
):
    """In Chromium: the alert's detail shows a <video> that loads the clip and seeks in it (Range
    requests); an alert whose footage expired says so instead (the JavaScript errors of the
    page fail the test: ``new_page``)."""
    last = camera_recording.segments[-1]
    # after the recording ended: the camera was not recording then
    unrecorded = store_alert(AlertStore(stack.cfg.redis), "cam1", last.end + 900, last.end + 910)
    page = new_page()
    log_in(page, stack.base, "viewer", PASSWORD)
    page.goto(f"{stack.base}/#/alerts")
    page.click(f'.alert-row[data-alert="{alert_id}"]')
    page.wait_for_selector(f'#alert-detail[data-alert="{alert_id}"]:not([hidden])')
    page.wait_for_function(
        "() => { const v = document.querySelector('#detail-clip'); return v && v.readyState >= 2; }"
    )
    assert page.evaluate("document.querySelector('#detail-clip').duration") == (
        pytest.approx(14.0, abs=CLIP_GOP_S)
    )
    page.evaluate("document.querySelector('#detail-clip').currentTime = 9")
    page.wait_for_function(
        "() => { const v = document.querySelector('#detail-clip'); "
        "return !v.seeking && v.readyState >= 2 && v.currentTime > 8; }"
    )
    page.click(f'.alert-row[data-alert="{unrecorded}"]')
    page.wait_for_selector(f'#alert-detail[data-alert="{unrecorded}"]:not([hidden])')
    text = page.inner_text("#detail-clip-none")
    # in words for people: no alert id, no ISO times
    assert text == "Not recorded: camera cam1 was not recording at the time.", text
