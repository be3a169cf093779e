"""A camera's timeline in the console: the recorded stretches, gaps and alert markers of a day,
any stretch of the recording served as a video whose time maps to the ``capture_ts`` clock, the
boxes of an alert's clip read back from the detections topic, and (in Chromium) a click on an
alert marker that plays the alert's moment, with the boxes drawn over the alert's clip."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime
from pathlib import Path

import numpy
import pytest

from alerts.store import AlertStore
from pipeline.common.redis import RedisKeys
from pipeline.console.clip_detections import partition_of
from pipeline.record.clips import CACHE_DIR, RANGE_CACHE_FILES
from pipeline.record.index import SegmentIndex
from tests.support.browser import log_in
from tests.support.console import PASSWORD, ConsoleStack
from tests.support.kafka import produce
from tests.support.recordings import (
    CLIP_FRAME_S,
    CLIP_GOP_S,
    decode_errors,
    ffprobe_duration,
    recorded_frame,
    shrink,
    store_alert,
)

pytestmark = pytest.mark.integration
BOX_A = [0.1, 0.1, 0.3, 0.6]  # the alert's box (store_alert), detected up to 2 s after it started
BOX_B = [0.6, 0.2, 0.9, 0.8]  # detected from 2 s after it started


def _day(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d")


@pytest.fixture(scope="module")
def stack(recorded_stack, camera_recording) -> ConsoleStack:
    """A console whose recordings are a copy of the shared recording, indexed under its keys;
    ``cam2``: the same footage indexed without its middle segment (a camera no longer defined
    whose recording has a gap)."""
    index = SegmentIndex.from_config(recorded_stack.cfg.redis)
    segs = camera_recording.segments
    index.replace("cam2", [dataclasses.replace(x, camera_id="cam2") for x in segs[::2]])
    return recorded_stack


@pytest.fixture(scope="module")
def alert(stack, camera_recording) -> tuple[str, float]:
    """An alert 8.05 s into the recording (4 s long), and the detections of its camera around
    it as ingest publishes them (record time = capture time): BOX_A for 2 s, then BOX_B; and
    those of another camera whose records share cam1's partition."""
    started = camera_recording.segments[0].start + 8.05
    aid = store_alert(AlertStore(stack.cfg.redis), "cam1", started, started + 4.0)
    parts = list(range(stack.cfg.kafka.detections_partitions))
    other = next(
        f"cam{i}"
        for i in range(2, 100)
        if partition_of(f"cam{i}", parts) == partition_of("cam1", parts)
    )
    msgs, stamps = [], []
    for i in range(-20, 40):
        ts = started + i * CLIP_FRAME_S
        box = BOX_A if i < 20 else BOX_B
        for cam in ("cam1", other):
            det = {"class_id": 0, "label": "person", "confidence": 0.9, "box": box, "track_id": 7}
            msgs.append((cam, {"camera_id": cam, "capture_ts": ts, "detections": [det]}))
            stamps.append(ts)
    produce(stack.cfg, msgs, stamps)
    return aid, started


def test_the_timeline_of_a_day_has_the_recorded_stretches_the_gaps_and_the_alerts(
    stack, viewer, alert, camera_recording
):
    aid, started = alert
    first, last = camera_recording.segments[0], camera_recording.segments[-1]
    day = _day(started)
    d0 = datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=UTC).timestamp()
    # a forged entry in the camera's alert stream (Redis data) is skipped, not a 500
    keys = RedisKeys(stack.cfg.redis.key_prefix)
    stack.users.client.xadd(keys.alerts_stream("cam1"), {"alert": b"{not json"})
    r = viewer.get("/api/cameras/cam1/timeline", params={"day": day})
    assert r.status_code == 200, r.text
    tl = r.json()
    assert (tl["from"], tl["to"]) == (d0, d0 + 86400)
    assert tl["recorded"] == [
        {"start": round(max(first.start, d0), 3), "end": round(min(last.end, d0 + 86400), 3)}
    ], "the segments of one connection make one stretch"
    assert tl["gaps"][0]["start"] == d0 and tl["gaps"][-1]["end"] == d0 + 86400
    markers = [m for m in tl["alerts"] if m["id"] == aid]
    assert len(markers) == 1, tl["alerts"]
    assert markers[0]["started_at"] == pytest.approx(started, abs=1e-3)
    assert markers[0]["ended_at"] == pytest.approx(started + 4.0, abs=1e-3)
    # a camera no longer defined, indexed without its middle segment: its gap shows
    segs = camera_recording.segments
    assert len(segs) == 3, segs
    r = viewer.get("/api/cameras/cam2/timeline", params={"from": segs[0].start, "to": segs[-1].end})
    assert r.status_code == 200, r.text
    assert r.json()["gaps"] == [{"start": round(segs[0].end, 3), "end": round(segs[2].start, 3)}]
    assert r.json()["alerts"] == []


def test_a_bad_day_or_range_is_422_naming_it_and_an_unknown_camera_404(stack, viewer):
    r = viewer.get("/api/cameras/cam1/timeline", params={"day": "2026-02-30"})
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"] == ["query", "day"]
    assert "'2026-02-30' is not a day (YYYY-MM-DD)" in r.json()["detail"][0]["msg"]
    r = viewer.get("/api/cameras/cam1/timeline", params={"from": 1e9, "to": 1e9 + 86401})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "to"]
    r = viewer.get("/api/cameras/cam1/recording.mp4", params={"from": 1e9, "to": 1e9 + 3601})
    assert r.status_code == 422 and "at most 3600 s" in r.json()["detail"][0]["msg"]
    r = viewer.get("/api/cameras/nope/timeline", params={"day": "2026-01-01"})
    assert r.status_code == 404 and r.json()["detail"].startswith("no camera 'nope'")
    r = viewer.get("/api/cameras/..%2F..%2Fetc/recording.mp4", params={"from": 1, "to": 2})
    assert r.status_code == 404
    with stack.client() as c:
        assert c.get("/api/cameras/cam1/timeline", params={"day": "2026-01-01"}).status_code == 401


def test_a_stretch_of_the_recording_plays_from_its_origin_with_range_requests(
    stack, viewer, camera_recording, tmp_path
):
    first = camera_recording.segments[0]
    t0, t1 = first.start + 12.0, first.start + 20.0  # across a segment boundary
    r = viewer.get("/api/cameras/cam1/recording.mp4", params={"from": t0, "to": t1})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "video/mp4"
    origin = float(r.headers["x-video-origin"])
    assert t0 - CLIP_GOP_S - 0.5 < origin <= t0, "the cut starts at the keyframe before 'from'"
    out = tmp_path / "stretch.mp4"
    out.write_bytes(r.content)
    assert decode_errors(out) == ""
    assert ffprobe_duration(out) == pytest.approx(t1 - origin, abs=CLIP_GOP_S)
    part = viewer.get(
        "/api/cameras/cam1/recording.mp4",
        params={"from": t0, "to": t1},
        headers={"Range": "bytes=0-0"},
    )
    assert part.status_code == 206 and part.content == r.content[:1]
    assert float(part.headers["x-video-origin"]) == origin
    r = viewer.get(
        "/api/cameras/cam1/recording.mp4",
        params={"from": first.start - 900, "to": first.start - 800},
    )
    assert r.status_code == 404 and "nothing recorded between" in r.json()["detail"]
    # every stretch played is cached: the cache keeps the newest RANGE_CACHE_FILES only
    for i in range(RANGE_CACHE_FILES + 2):
        r = viewer.get("/api/cameras/cam1/recording.mp4", params={"from": t0 + i / 100, "to": t1})
        assert r.status_code == 200, r.text
    cached = list((Path(stack.cfg.recordings.dir) / CACHE_DIR).glob("range-*.mp4"))
    assert len(cached) == RANGE_CACHE_FILES


def test_the_boxes_of_a_clip_come_back_in_the_clips_time(stack, viewer, alert, camera_recording):
    aid, started = alert
    origin = float(viewer.get(f"/api/alerts/{aid}/clip.mp4").headers["x-video-origin"])
    r = viewer.get(f"/api/alerts/{aid}/detections")
    assert r.status_code == 200, r.text
    got = r.json()
    assert got["origin"] == origin and got["note"] is None
    assert len(got["frames"]) == 60, "this camera's 60 frames only"
    at = {round(f["t"] + origin - started, 1): f["boxes"] for f in got["frames"]}
    assert at[0.0] == [{"box": BOX_A, "label": "person", "confidence": 0.9, "track_id": 7}]
    assert at[3.0][0]["box"] == BOX_B
    # an alert whose clip is recorded, with no detections kept for its time: said so
    later = store_alert(AlertStore(stack.cfg.redis), "cam1", started + 14.0, started + 15.0)
    got = viewer.get(f"/api/alerts/{later}/detections").json()
    assert got["frames"] == [] and "the clip plays without boxes" in got["note"]


_GREY = """(v) => {
  const c = document.createElement("canvas");
  c.width = v.videoWidth; c.height = v.videoHeight;
  const ctx = c.getContext("2d");
  ctx.drawImage(v, 0, 0);
  const d = ctx.getImageData(0, 0, c.width, c.height).data;
  const g = new Array(c.width * c.height);
  for (let i = 0; i < g.length; i++) g[i] = 0.299 * d[4*i] + 0.587 * d[4*i+1] + 0.114 * d[4*i+2];
  return {w: c.width, h: c.height, g};
}"""


def _shown(page, selector: str) -> numpy.ndarray:
    got = page.eval_on_selector(selector, _GREY)
    return shrink(numpy.array(got["g"], dtype=numpy.float64).reshape(got["h"], got["w"]))


def _seek(page, selector: str, v: float) -> None:
    page.eval_on_selector(selector, f"v => {{ v.pause(); v.currentTime = {v}; }}")
    page.wait_for_function(
        f"() => {{ const v = document.querySelector('{selector}'); "
        f"return !v.seeking && v.readyState >= 2 && Math.abs(v.currentTime - {v}) < 0.01; }}"
    )


def test_a_click_on_an_alert_marker_plays_the_alerts_moment_with_its_boxes(
    stack, alert, camera_recording, tmp_path, new_page
):
    """Chromium: the timeline's alert marker plays the recording from the alert's moment (the
    frame shown is the recording's frame at that time, not one 3 s away); the alert's clip in
    its detail has its boxes drawn over it, in step with the video (the JavaScript errors of
    the page fail the test: ``new_page``)."""
    aid, started = alert
    expected = shrink(recorded_frame(camera_recording, started))
    away = shrink(recorded_frame(camera_recording, started + 3.0))
    page = new_page(viewport={"width": 1280, "height": 900}, timeout_ms=20_000)
    log_in(page, stack.base, "viewer", PASSWORD)
    page.goto(f"{stack.base}/#/camera/cam1")
    page.click("#timeline-link")
    marker = f'.tl-alert[data-alert="{aid}"]'
    page.wait_for_selector(marker)
    page.select_option("#tl-zoom", "900")  # 15 min around the newest footage
    # the bar is a slider for the keyboard too: Home, then a step (15 min / 48) on
    bar = page.locator("#tl-bar")
    bar.focus()
    page.keyboard.press("Home")
    home = float(bar.get_attribute("aria-valuenow"))
    assert float(bar.get_attribute("aria-valuemin")) == home
    page.keyboard.press("ArrowRight")
    assert float(bar.get_attribute("aria-valuenow")) == pytest.approx(home + 900 / 48, abs=1)
    assert bar.get_attribute("aria-valuetext").endswith(" UTC")
    page.eval_on_selector(
        "#tl-video",
        "v => { window.seeks = []; v.addEventListener('seeked', "
        "() => window.seeks.push(v.currentTime)); }",
    )
    page.click(marker)
    page.wait_for_function(
        "() => { const v = document.querySelector('#tl-video'); "
        "return v.readyState >= 2 && window.seeks.length > 0 && v.dataset.origin; }"
    )
    origin = float(page.get_attribute("#tl-video", "data-origin"))
    assert page.evaluate("window.seeks[0]") == pytest.approx(started - origin, abs=0.01)
    t = page.evaluate("document.querySelector('#tl-video').currentTime")
    page.wait_for_function(f"() => document.querySelector('#tl-video').currentTime > {t} + 0.3")
    page.screenshot(path=str(tmp_path / "timeline.png"))
    _seek(page, "#tl-video", started - origin)
    shown = _shown(page, "#tl-video")
    assert shown.shape == expected.shape
    near = float(numpy.abs(shown - expected).mean())
    far = float(numpy.abs(shown - away).mean())
    assert near < far / 3, f"the frame shown differs from the alert's: {near=} {far=}"

    page.set_viewport_size({"width": 390, "height": 844})  # a phone
    wide = page.evaluate(
        "() => [...document.querySelectorAll('#view *')]"
        ".filter((e) => e.getBoundingClientRect().right > 391)"
        ".map((e) => `${e.tagName}#${e.id}.${e.className}`)"
    )
    assert wide == [], f"wider than a 390px screen: {wide}"
    page.screenshot(path=str(tmp_path / "timeline-phone.png"), full_page=True)
    page.set_viewport_size({"width": 1280, "height": 900})

    page.goto(f"{stack.base}/#/alerts")
    page.click(f'.alert-row[data-alert="{aid}"]')
    page.wait_for_function(
        "() => { const v = document.querySelector('#detail-clip'); "
        "const c = document.querySelector('#detail-boxes'); "
        "return v && v.readyState >= 2 && c && c.dataset.frames > 0; }"
    )
    clip_origin = float(page.get_attribute("#detail-boxes", "data-origin"))
    for at, box in ((0.0, BOX_A), (3.0, BOX_B)):
        v = round(started + at - clip_origin, 3)
        _seek(page, "#detail-clip", v)
        # drawn for the frame shown: its time is within a frame of the video's
        page.wait_for_function(
            f"() => Math.abs(document.querySelector('#detail-boxes').dataset.t - {v}) "
            f"<= {CLIP_FRAME_S + 0.01}"
        )
        assert json.loads(page.get_attribute("#detail-boxes", "data-boxes")) == [box]
        # painted where the picture shows the box: its left edge, half way down
        painted = page.eval_on_selector(
            "#detail-boxes",
            """(c, box) => {
              const v = document.querySelector('#detail-clip');
              const s = Math.min(c.width / v.videoWidth, c.height / v.videoHeight);
              const ox = (c.width - v.videoWidth * s) / 2, oy = (c.height - v.videoHeight * s) / 2;
              const at = (x, y) => c.getContext('2d').getImageData(
                Math.round(ox + x * v.videoWidth * s), Math.round(oy + y * v.videoHeight * s), 1, 1).data[3];
              return [at(box[0], (box[1] + box[3]) / 2), at((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)];
            }""",
            box,
        )
        assert painted[0] > 0 and painted[1] == 0, (at, painted)
        page.screenshot(path=str(tmp_path / f"detail-{at:.0f}s.png"))
    page.click("#detail-timeline")  # the alert's moment in the camera's timeline
    page.wait_for_function(
        "() => { const v = document.querySelector('#tl-video'); "
        "return v && v.readyState >= 2 && "
        f"Math.abs(Number(v.dataset.at) - {started}) < 0.001; }}"
    )
