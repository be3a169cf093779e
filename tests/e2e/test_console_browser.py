"""The console's web UI in a real headless Chromium (Debian's /usr/bin/chromium, driven by
Playwright) against the real chain: RTSP camera-sim -> ingest worker (YOLO) -> Kafka -> alert
service -> Redis, and the console server on a free port.

One stack per module (the session's Redis, under the module's key prefix); every test logs in
through the login form. The office camera is also recorded (a recorder indexing its segments in
the stack's Redis), so the rule preview can show the recording's frames once the live ones have
expired. The banner test pauses Redis, so it runs a console of its own on a Redis of
its own (tests/support/private_services.py). Screenshots of each step go to
``test-artifacts/console/``; with ``VIGIL_CONSOLE_README_SHOTS=1`` the README's pictures
(``docs/img/console-*.png``, 1280x800) are written too.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import os
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import redis
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from tests.support.assets import footage_path
from tests.support.browser import log_in
from tests.support.config import REDIS_URL, make_config_dict
from tests.support.net import free_port
from tests.support.private_services import PrivateService

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts" / "console"
README_IMG = REPO / "docs" / "img"
VIEWPORT = {"width": 1280, "height": 800}
PASSWORD = {"admin": "admin-pass-1", "operator": "operator-pass-1", "viewer": "viewer-pass-1"}

# office: people walk in one by one; classroom: a room full of people; the third camera is added
# from the UI during the test
OFFICE, CLASSROOM, THIRD = "office", "classroom", "entrance"
CLIPS = {
    OFFICE: "one-by-one-person-detection.mp4",
    CLASSROOM: "classroom.mp4",
    THIRD: "people-detection.mp4",
}
FPS = 3
# app.js's camera thumbnails: a new request every THUMB_PERIOD_S (setInterval(refreshThumbs,
# 1000)); an answer still loading is given THUMB_SLOW_S (5000 ms) before the next one replaces it.
# So a thumbnail shows a loaded picture again, and its URL moves on, within one slow answer and one
# period: the bounds below are twice that.
THUMB_PERIOD_S, THUMB_SLOW_S = 1.0, 5.0
THUMB_BOUND_S = 2 * (THUMB_SLOW_S + THUMB_PERIOD_S)
# rules in the YAML: they seed the live rules topic, so the office camera page lists and draws
# them and the Alerts page fills up while the tests run
SEEDED = [
    {
        "id": "office-loitering",
        "type": "loitering",
        "cameras": [OFFICE],
        "zone": [[0.05, 0.45], [0.95, 0.45], [0.95, 1.0], [0.05, 1.0]],
        "classes": ["person"],
        "dwell_s": 4,
        "severity": "medium",
    },
    {
        "id": "office-door-line",
        "type": "line_crossing",
        "cameras": [OFFICE],
        "line": [[0.5, 0.4], [0.5, 1.0]],
        "classes": ["person"],
        "severity": "low",
    },
    {
        "id": "classroom-crowding",
        "type": "crowding",
        "cameras": [CLASSROOM],
        "classes": ["person"],
        "min_count": 4,
        "min_seconds": 1,
        "severity": "critical",
    },
]


@dataclass
class Stack:
    cfg: object
    data: dict  # the config as parsed (for a console of the same topics on another Redis)
    base: str
    sim_urls: dict[str, str]
    dataset_dir: Path
    started: float


def shot(page, name: str, readme: str | None = None) -> None:
    """A screenshot into test-artifacts/console/ (and docs/img/ when asked for)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"))
    if readme and os.environ.get("VIGIL_CONSOLE_README_SHOTS") == "1":
        README_IMG.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(README_IMG / f"{readme}.png"))


def _wait(pred, timeout: float, step: float = 0.5, what: str = "condition"):
    """pred()'s first value that is neither None nor False, polled for up to ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value is not None and value is not False:
            return value
        assert time.monotonic() < deadline, f"timed out after {timeout:.0f} s waiting for {what}"
        time.sleep(step)


# -- the stack ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stack(kafka_bootstrap, detector, tmp_path_factory) -> Iterator[Stack]:
    from alerts.config import parse_alerts_config
    from alerts.service import AlertService
    from pipeline.app import build_worker
    from pipeline.camera_sim import CameraSim
    from pipeline.cameras.registry import put_cameras
    from pipeline.cameras.spec import CameraSpec
    from pipeline.common.kafka import ensure_topics
    from pipeline.config import parse_config
    from pipeline.console.auth import UserStore
    from pipeline.console.server import ConsoleServer
    from pipeline.record.index import SegmentIndex
    from pipeline.record.segmenter import Recorder

    dataset_dir = tmp_path_factory.mktemp("dataset")
    data = make_config_dict(kafka_bootstrap)
    prefix = data["kafka"]["topics"]["cameras"].removesuffix(".cameras")
    data["kafka"]["topics"].setdefault("rules", f"{prefix}.rules")  # this module's live rules
    data["ingest"]["live_jpeg_fps"] = 2
    data["collection"] = {"dir": str(dataset_dir)}  # where reviewed frames land
    data["console"] = {"login_attempts_per_minute": 200}  # every test logs in from 127.0.0.1
    data["redis"]["socket_timeout_s"] = 3  # the banner test's Redis pause shows within seconds
    data["alerts"] = {"rules": SEEDED}
    data["models"] = {"store": str(tmp_path_factory.mktemp("models"))}
    data["recordings"] = {"dir": str(tmp_path_factory.mktemp("recordings"))}
    cfg = parse_config(data, "test")
    ensure_topics(cfg.kafka)

    users = UserStore(cfg.redis)
    for role, password in PASSWORD.items():
        users.add(role, password, role)

    sim = CameraSim(
        {name: footage_path(clip) for name, clip in CLIPS.items()}, port=free_port()
    ).start()
    put_cameras(
        cfg.kafka,
        [CameraSpec(id=cam, url=sim.urls[cam], fps=FPS) for cam in (OFFICE, CLASSROOM)],
    )

    # the office camera recorded, its segments indexed as the recorder service does
    segments = SegmentIndex.from_config(cfg.redis)
    recorder = Recorder(
        OFFICE, sim.urls[OFFICE], Path(cfg.recordings.dir), on_segment=segments.add
    ).start()
    stop = threading.Event()
    worker = build_worker(cfg, detector=detector, worker_id="w-console").start()
    service = AlertService(cfg, parse_alerts_config(cfg.alerts))
    threads = [
        threading.Thread(target=worker.run, args=(stop,), daemon=True),
        threading.Thread(target=service.run, args=(stop,), daemon=True),
    ]
    for t in threads:
        t.start()
    console = ConsoleServer(cfg, host="127.0.0.1", port=free_port()).start()
    try:
        yield Stack(
            cfg=cfg,
            data=copy.deepcopy(data),
            base=console.url.rstrip("/"),
            sim_urls=dict(sim.urls),
            dataset_dir=dataset_dir,
            started=time.monotonic(),
        )
    finally:
        console.stop()
        stop.set()
        for t in threads:
            t.join(timeout=30)
        worker.close()
        recorder.stop()
        segments.client.close()
        sim.stop()


def login(page, stack: Stack, role: str) -> None:
    log_in(page, stack.base, role, PASSWORD[role])
    assert page.inner_text("#nav-user") == role
    assert page.get_attribute("#nav-role", "data-role") == role
    # the password never stays in the page
    assert PASSWORD[role] not in page.content()


def fetch_json(page, method: str, path: str, body=None) -> tuple[int, object]:
    """A call made by the page itself (its cookie, its CSRF token from /api/me)."""
    return tuple(
        page.evaluate(
            """async ([method, path, body]) => {
                const me = await (await fetch('/api/me')).json();
                const r = await fetch(path, {method, headers: {'Content-Type': 'application/json',
                    'X-CSRF-Token': me.csrf_token || ''},
                    body: body === null ? undefined : JSON.stringify(body)});
                const text = await r.text();
                let data = text; try { data = JSON.parse(text); } catch (e) {}
                return [r.status, data];
            }""",
            [method, path, body],
        )
    )


def thumb_pixels(page, camera: str) -> np.ndarray | None:
    """The camera card's current thumbnail, scaled to 64x36, as RGBA pixels (None: no frame,
    or the next one is loading)."""
    data = page.evaluate(
        """(cam) => {
            const img = document.querySelector(`.camera-card[data-camera="${cam}"] img.thumb`);
            if (!img || !img.complete || !img.naturalWidth) return null;
            const c = document.createElement('canvas');
            c.width = 64; c.height = 36;
            const ctx = c.getContext('2d');
            ctx.drawImage(img, 0, 0, 64, 36);
            return Array.from(ctx.getImageData(0, 0, 64, 36).data);
        }""",
        camera,
    )
    return None if data is None else np.asarray(data, dtype=np.float32)


def wait_streaming(page, camera: str, timeout_s: float) -> None:
    page.wait_for_selector(
        f'.camera-card[data-camera="{camera}"] .badge[data-state="streaming"]',
        timeout=timeout_s * 1000,
    )
    page.wait_for_function(
        """(cam) => { const i = document.querySelector(
            `.camera-card[data-camera="${cam}"] img.thumb`); return i && i.naturalWidth > 0; }""",
        arg=camera,
        timeout=timeout_s * 1000,
    )


# -- the tests ----------------------------------------------------------------------------------


def test_login_live_cameras_and_add_one(stack, new_page):
    page = new_page(viewport=VIEWPORT)
    page.goto(f"{stack.base}/")
    page.wait_for_selector("#login-form")
    shot(page, "01-login")
    # a wrong password: the form says so and nobody is logged in
    page.fill("#login-form input[name=username]", "operator")
    page.fill("#login-form input[name=password]", "not-the-password")
    page.click("#login-form button[type=submit]")
    page.wait_for_selector("#login-error:not([hidden])")
    assert page.is_hidden("#nav")

    login(page, stack, "operator")
    page.wait_for_selector(f'.camera-card[data-camera="{OFFICE}"]')
    page.wait_for_selector(f'.camera-card[data-camera="{CLASSROOM}"]')
    for cam in (OFFICE, CLASSROOM):
        wait_streaming(page, cam, 120)
    # both cameras live: two different pictures on the page at the same moment
    first = _wait(
        lambda: (
            (a := thumb_pixels(page, OFFICE)) is not None
            and (b := thumb_pixels(page, CLASSROOM)) is not None
            and (a, b)
        ),
        THUMB_BOUND_S,
        0.2,
        "both thumbnails loaded at once",
    )
    diff = float(np.abs(first[0] - first[1]).mean())
    assert diff > 10, f"the two cameras show the same picture (mean pixel difference {diff:.1f})"
    # ... and refreshed: each thumbnail's URL moves on to a newer frame, and that one loads
    for cam in (OFFICE, CLASSROOM):
        img = f'.camera-card[data-camera="{cam}"] img.thumb'
        src = page.get_attribute(img, "src")
        assert src and "latest.jpg?t=" in src, src
        page.wait_for_function(
            """([sel, old]) => { const i = document.querySelector(sel);
                return i && i.src && !i.src.endsWith(old) && i.src.includes('latest.jpg?t=')
                       && i.complete && i.naturalWidth > 0; }""",
            arg=[img, src],
            timeout=THUMB_BOUND_S * 1000,
        )
    card = page.locator(f'.camera-card[data-camera="{OFFICE}"]')
    assert "fps" in card.locator(".stats").inner_text()
    assert card.locator("a[href='#/camera/office']").count() >= 1
    shot(page, "02-cameras")

    # a 422 from the form is shown next to the form
    page.fill("#add-camera-form input[name=id]", "bad id!")
    page.fill("#add-camera-form input[name=url]", "rtsp://127.0.0.1:1/x")
    page.click("#add-camera-form button[type=submit]")
    page.wait_for_function(
        """() => [...document.querySelectorAll('#add-camera-form .field-error, #camera-errors li')]
              .some((e) => e.textContent.trim())"""
    )
    shot(page, "03-add-camera-error")

    # add the third camera from the form; it goes live
    page.fill("#add-camera-form input[name=id]", THIRD)
    page.fill("#add-camera-form input[name=url]", stack.sim_urls[THIRD])
    page.fill("#add-camera-form input[name=fps]", str(FPS))
    page.click("#add-camera-form button[type=submit]")
    page.wait_for_selector(f'.camera-card[data-camera="{THIRD}"]', timeout=15_000)
    assert page.input_value("#add-camera-form input[name=id]") == ""  # the form was reset
    wait_streaming(page, THIRD, 120)
    page.wait_for_timeout(1500)
    shot(page, "04-third-camera-live", readme="console-cameras")
    third = _wait(lambda: thumb_pixels(page, THIRD), THUMB_BOUND_S, 0.1, "the third thumbnail")
    other = _wait(
        lambda: thumb_pixels(page, CLASSROOM), THUMB_BOUND_S, 0.1, "the classroom thumbnail"
    )
    assert float(np.abs(third - other).mean()) > 10
    # the URL shown is the masked one from the API, the list holds the new camera
    status, cams = fetch_json(page, "GET", "/api/cameras")
    assert status == 200 and THIRD in {c["id"] for c in cams}


def test_draw_preview_save_alert_review(stack, new_page):
    page = new_page(viewport=VIEWPORT)
    login(page, stack, "operator")
    rule_id = f"ui-zone-{uuid.uuid4().hex[:6]}"

    # the Alerts page, open before the rule exists and never reloaded afterwards
    alerts_page = new_page(page.context)
    alerts_page.goto(f"{stack.base}/#/alerts")
    alerts_page.wait_for_selector("#alerts-table")
    alerts_page.wait_for_selector("#live-state.on")
    alerts_page.evaluate("window.__notReloaded = true")
    assert alerts_page.locator(f'.alert-row[data-rule="{rule_id}"]').count() == 0

    page.goto(f"{stack.base}/#/camera/{OFFICE}")
    page.wait_for_selector("#draw")
    page.wait_for_function("() => document.querySelector('#live').naturalWidth > 0", timeout=90_000)
    page.wait_for_function(
        """() => { const c = document.querySelector('#draw'), i = document.querySelector('#live');
                   return c.width > 100 && Math.abs(c.width - i.clientWidth) <= 1
                          && Math.abs(c.height - i.clientHeight) <= 1; }"""
    )
    # the camera's seeded rules are listed (not the classroom's)
    page.wait_for_selector('#rule-list .rule-item[data-rule="office-loitering"]')
    listed = page.eval_on_selector_all(
        "#rule-list .rule-item", "(els) => els.map((e) => e.dataset.rule)"
    )
    assert set(listed) == {"office-loitering", "office-door-line"}, listed
    # ... and drawn on the canvas over the picture (its only drawing so far)
    drawn = page.evaluate(
        """() => { const c = document.querySelector('#draw');
                   const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
                   let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i]) n++; return n; }"""
    )
    assert drawn > 1000, drawn
    page.select_option("#rule-type", "zone_intrusion")
    page.fill("#rule-id", rule_id)
    page.fill("#rule-classes", "person")
    page.select_option("#rule-severity", "high")
    page.fill("#rule-threshold", "2")
    assert page.get_attribute("#rule-threshold", "name") == "min_frames"

    # draw the zone: three clicks and a double-click on the canvas (nearly the whole picture)
    box = page.locator("#draw").bounding_box()
    corners = [(0.02, 0.02), (0.98, 0.02), (0.98, 0.98)]
    for fx, fy in corners:
        page.mouse.click(box["x"] + fx * box["width"], box["y"] + fy * box["height"])
    page.mouse.dblclick(box["x"] + 0.02 * box["width"], box["y"] + 0.98 * box["height"])
    shot(page, "05-zone-drawn")

    # preview on what the camera already saw: would-be alerts, the recent ones with their frame
    # (docs/console.md: a snapshot when the triggering frame is still in Redis, which keeps the
    # frames with detections redis.frame_ttl_s)
    page.select_option("#preview-range", "900")
    # the detections of the last minutes must hold a person (the worker has run since the stack
    # started), and one would-be alert must be recent enough for its frame: preview again until
    # both show, within 3 minutes of the start or two frame lifetimes from now
    snaps = page.locator("#preview-results .preview-alert img.preview-snap")
    deadline = max(stack.started + 180, time.monotonic() + 2 * stack.cfg.redis.frame_ttl_s)
    while True:
        page.click("#preview-btn")
        page.wait_for_selector("#preview-totals", timeout=150_000)
        n = page.locator("#preview-results .preview-alert").count()
        if (n and snaps.count()) or time.monotonic() > deadline:
            break
        page.wait_for_timeout(10_000)
    assert n >= 1, page.inner_text("#preview-results")
    totals = page.inner_text("#preview-totals")
    assert "messages" in totals and "replayed in" in totals
    assert page.locator("#rule-errors li").count() == 0
    first = page.locator("#preview-results .preview-alert").first
    assert "person" in first.inner_text()
    assert snaps.count() >= 1, (
        f"none of the {n} would-be alerts has its frame: {page.inner_text('#preview-results')}"
    )
    # the snapshot is a picture the page loaded (lazy: scrolled to first)
    snap = snaps.last  # the newest alert's
    snap.scroll_into_view_if_needed()
    width = snap.evaluate(
        """(img) => img.complete ? img.naturalWidth : new Promise((r) => {
               img.addEventListener('load', () => r(img.naturalWidth));
               img.addEventListener('error', () => r(0)); })"""
    )
    assert width > 0, snap.get_attribute("src")
    shot(page, "06-preview", readme="console-camera")

    # once the live frames have expired (expired here and now: their keys deleted), the would-be
    # alerts whose start the office recording covers show the recording's frame at that moment
    redis_client = redis.Redis.from_url(REDIS_URL)
    frames = f"{stack.cfg.redis.key_prefix}frame:{OFFICE}:*"
    recorded = page.locator('#preview-results .preview-pic[data-source="recording"] img')
    deadline = time.monotonic() + 60  # a segment is indexed when it closes (10 s)
    while True:
        for key in redis_client.scan_iter(match=frames, count=1000):
            redis_client.delete(key)
        page.click("#preview-btn")
        page.wait_for_selector("#preview-totals", timeout=150_000)
        if recorded.count() or time.monotonic() > deadline:
            break
        page.wait_for_timeout(5_000)
    redis_client.close()
    assert recorded.count() >= 1, page.inner_text("#preview-results")
    assert "from recordings" in page.inner_text("#preview-totals")
    pic = recorded.first
    pic.scroll_into_view_if_needed()
    pixels = pic.evaluate(
        """async (img) => {
            if (!img.complete) await new Promise((r) => { img.onload = img.onerror = r; });
            if (!img.naturalWidth) return null;
            const c = document.createElement('canvas');
            c.width = 64; c.height = 36;
            c.getContext('2d').drawImage(img, 0, 0, 64, 36);
            return Array.from(c.getContext('2d').getImageData(0, 0, 64, 36).data);
        }"""
    )
    assert pixels is not None, pic.get_attribute("src")
    # a picture of the office (not a flat placeholder), labelled as coming from the recording
    assert float(np.asarray(pixels, np.float32).reshape(-1, 4)[:, :3].std()) > 20
    item = page.locator(
        '#preview-results .preview-alert:has(.preview-pic[data-source="recording"])'
    ).first
    assert "from recording" in item.inner_text()
    shot(page, "06b-preview-from-recording")

    # save the rule; it is listed on this camera
    page.click("#save-btn")
    page.wait_for_selector("#rule-saved:not([hidden])", timeout=30_000)
    page.wait_for_selector(f'#rule-list .rule-item[data-rule="{rule_id}"]')
    status, stored = fetch_json(page, "GET", f"/api/rules/{rule_id}")
    assert status == 200, stored
    assert stored["type"] == "zone_intrusion" and stored["cameras"] == [OFFICE]
    assert stored["classes"] == ["person"] and stored["min_frames"] == 2
    assert stored["severity"] == "high"
    zone = np.asarray(stored["zone"])
    assert zone.shape == (4, 2), zone
    assert np.allclose(zone, [[0.02, 0.02], [0.98, 0.02], [0.98, 0.98], [0.02, 0.98]], atol=0.01)

    # a new alert of that rule appears on the open Alerts page, without a reload
    row = alerts_page.wait_for_selector(f'.alert-row[data-rule="{rule_id}"]', timeout=120_000)
    assert alerts_page.evaluate("window.__notReloaded") is True
    assert row.get_attribute("data-camera") == OFFICE
    assert "high" in row.inner_text()

    # one of its alerts with a snapshot: the worker stores frames asynchronously, and a started
    # alert whose frame was not in Redis yet when the alert service saw it has no picture
    def with_snapshot():
        status, listed = fetch_json(
            alerts_page, "GET", f"/api/alerts?rule={rule_id}&status=started"
        )
        assert status == 200, listed
        return next((a["id"] for a in listed["items"] if a["snapshot"]), None)

    alert_id = _wait(with_snapshot, 150, 2, "an alert of the new rule with a snapshot")
    row = alerts_page.wait_for_selector(f'.alert-row[data-alert="{alert_id}"]', timeout=30_000)
    assert row.get_attribute("data-rule") == rule_id
    assert alerts_page.evaluate("window.__notReloaded") is True

    # its snapshot: in the detail panel and as a JPEG
    row.click()
    alerts_page.wait_for_selector(f'#alert-detail[data-alert="{alert_id}"]:not([hidden])')
    alerts_page.wait_for_function(
        "() => { const i = document.querySelector('#detail-snapshot'); return i && i.naturalWidth > 0; }",
        timeout=15_000,
    )
    kind, magic = alerts_page.evaluate(
        """async (id) => { const r = await fetch(`/api/alerts/${id}/snapshot.jpg`);
            const b = new Uint8Array(await r.arrayBuffer());
            return [r.headers.get('content-type'), [b[0], b[1]]]; }""",
        alert_id,
    )
    assert kind == "image/jpeg" and magic == [0xFF, 0xD8]

    # mark it a false positive: the frame lands in the dataset folder
    alerts_page.fill("#review-note", "a coat on the chair")
    alerts_page.click("#review-fp")
    state = alerts_page.wait_for_selector('#review-state[data-verdict="false_positive"]')
    image = state.get_attribute("data-review-image")
    assert image, alerts_page.inner_text("#review-state")
    assert (stack.dataset_dir / image).is_file(), f"{image} not under {stack.dataset_dir}"
    status, alert = fetch_json(alerts_page, "GET", f"/api/alerts/{alert_id}")
    assert status == 200
    assert alert["review"] == "false_positive" and alert["review_image"] == image
    assert alert["reviewed_by"] == "operator" and alert["review_note"] == "a coat on the chair"
    assert "False positive" in alerts_page.inner_text("#review-state")
    if os.environ.get("VIGIL_CONSOLE_README_SHOTS") == "1":
        # the README's picture with the live indicator green (amber for 4 s after the server
        # reported a failed Redis read on the event stream)
        with contextlib.suppress(PlaywrightTimeout):
            alerts_page.wait_for_selector("#live-state.on:not(.warn)", timeout=10_000)
    shot(alerts_page, "07-alert-reviewed", readme="console-alerts")

    # the server's 422 is shown under the form in the YAML's words: a zone whose edges cross
    page.click("#clear-btn")
    for fx, fy in [(0.2, 0.2), (0.6, 0.6), (0.6, 0.2), (0.2, 0.6)]:
        page.mouse.click(box["x"] + fx * box["width"], box["y"] + fy * box["height"])
    page.click("#close-btn")
    page.click("#save-btn")
    page.wait_for_selector("#rule-errors li")
    errors = page.inner_text("#rule-errors")
    assert "cross" in errors and rule_id in errors, errors
    status, still = fetch_json(page, "GET", f"/api/rules/{rule_id}")
    assert status == 200 and still["zone"] == stored["zone"]  # the saved rule is unchanged


def test_viewer_sees_no_controls_and_api_refuses(stack, new_page):
    page = new_page(viewport=VIEWPORT)
    login(page, stack, "viewer")
    page.wait_for_selector(f'.camera-card[data-camera="{OFFICE}"]')
    assert page.locator("#add-camera-form").count() == 0
    assert page.locator(".remove-camera").count() == 0
    status, body = fetch_json(
        page, "POST", "/api/cameras", {"id": "sneaky", "url": stack.sim_urls[OFFICE], "fps": 1}
    )
    assert status == 403, body
    shot(page, "08-viewer-cameras")

    page.goto(f"{stack.base}/#/camera/{OFFICE}")
    page.wait_for_selector("#draw")
    assert page.locator("#preview-btn").count() == 0
    assert page.locator("#save-btn").count() == 0
    assert page.locator(".delete-rule").count() == 0
    status, _ = fetch_json(
        page, "PUT", "/api/rules/sneaky", {"id": "sneaky", "type": "crowding", "min_count": 2}
    )
    assert status == 403

    # an alert (the seeded rules raise them from the stack's start): no review buttons, and the
    # API refuses the viewer's review
    page.goto(f"{stack.base}/#/alerts")
    page.wait_for_selector("#alerts-table")
    row = page.wait_for_selector(".alert-row", timeout=150_000)
    alert_id = row.get_attribute("data-alert")
    assert alert_id
    row.click()
    page.wait_for_selector(f'#alert-detail[data-alert="{alert_id}"]:not([hidden])')
    assert page.locator("#review-fp").count() == 0
    assert page.locator("#review-tp").count() == 0
    status, body = fetch_json(
        page, "POST", f"/api/alerts/{alert_id}/review", {"verdict": "true_positive", "note": ""}
    )
    assert status == 403, body
    page.goto(f"{stack.base}/#/models")
    page.wait_for_selector("#models section")
    assert page.locator(".promote-btn").count() == 0
    assert page.locator("#rollback-btn").count() == 0


@pytest.fixture
def own_redis_console(stack, tmp_path) -> Iterator[tuple[Stack, PrivateService]]:
    """A console of the module's Kafka topics (the same cameras and rules) on a Redis of its own,
    with the admin user: what this test does to Redis reaches no other test's clients."""
    from pipeline.config import parse_config
    from pipeline.console.auth import UserStore
    from pipeline.console.server import ConsoleServer

    with PrivateService("redis", tmp_path) as private_redis:
        data = copy.deepcopy(stack.data)
        data["redis"]["url"] = private_redis.url
        cfg = parse_config(data, "test")
        UserStore(cfg.redis).add("admin", PASSWORD["admin"], "admin")
        console = ConsoleServer(cfg, host="127.0.0.1", port=free_port()).start()
        try:
            yield dataclasses.replace(stack, cfg=cfg, base=console.url.rstrip("/")), private_redis
        finally:
            console.stop()


def test_banner_on_503_and_login_after_401(own_redis_console, new_page):
    own, private_redis = own_redis_console
    page = new_page(viewport=VIEWPORT)
    login(page, own, "admin")
    page.wait_for_selector(f'.camera-card[data-camera="{OFFICE}"]')

    # Redis stops answering for 8 s (CLIENT PAUSE: every client's commands wait, the real
    # thing, not a faked response): the console's calls time out and answer 503, the banner shows
    # the server's words, and it goes once Redis answers again.
    paused = redis.Redis.from_url(private_redis.url)
    try:
        paused.execute_command("CLIENT", "PAUSE", 8000, "ALL")
    finally:
        paused.close()
    page.wait_for_selector("#banner:not([hidden])", timeout=20_000)
    # ... this console's Redis only: the session's answers meanwhile (the other tests' clients)
    shared = redis.Redis.from_url(REDIS_URL, socket_timeout=2)
    try:
        assert shared.ping()
    finally:
        shared.close()
    banner = page.inner_text("#banner")
    # the server's words, which name no internal host (docs/security.md: only the log does)
    assert "Redis is unavailable" in banner and "127.0.0.1" not in banner, banner
    shot(page, "09-banner-503")
    page.wait_for_selector("#banner", state="hidden", timeout=30_000)

    # the models page: promote/rollback controls for an admin, even with an empty registry
    page.goto(f"{own.base}/#/models")
    page.wait_for_selector("#models section")
    assert page.locator("#rollback-btn").count() == 1
    shot(page, "10-models")

    # the session ends elsewhere: the next call answers 401 and the login form comes back
    status, _ = fetch_json(page, "POST", "/api/logout")
    assert status == 200
    page.evaluate("location.hash = '#/cameras'")
    page.wait_for_selector("#login-form", timeout=10_000)
    assert page.is_hidden("#nav")
    page.goto("about:blank")  # nothing polls the console while it stops


def test_models_page_rollback_and_promote(stack, new_page, tmp_path):
    """Two registered versions (the shared weights and a re-saved copy: another sha, same
    model), v2 in production after v1: the admin rolls back, then promotes v2 again."""
    from detectors.loading import load_model
    from detectors.retrain.model_registry import ModelRegistry
    from pipeline.common.assets import model

    weights = model("yolov5n.pt")
    if not weights.exists():
        pytest.fail(f"weights {weights} missing: set VIGIL_ASSETS to the shared assets folder")
    copy = tmp_path / "candidate.pt"
    load_model(str(weights), "cpu").save(str(copy))  # ultralytics' own format: another sha
    reg = ModelRegistry(stack.cfg.redis, stack.cfg.models)
    try:
        v1 = reg.register(weights, metrics={"map50": 0.61})
        v2 = reg.register(copy, metrics={"map50": 0.66})
        assert v1.version != v2.version
        reg.record_decision(
            {
                "candidate_version": v2.version,
                "production_version": v1.version,
                "metric": "map50",
                "candidate": 0.66,
                "production": 0.61,
                "promoted": True,
            }
        )
        reg.record_precision_gate(  # what `vigil models quantize` leaves on the version
            {
                "weights_sha256": v1.sha256,
                "imgsz": 640,
                "machine": "test-cpu",
                "results": {"int8": {"passed": False, "reason": "mAP50-95 4.3 points below f32"}},
            }
        )
        reg.promote(v1.version, reason="first model")
        reg.promote(v2.version, reason="vigil retrain")

        page = new_page(viewport=VIEWPORT)
        login(page, stack, "admin")
        page.goto(f"{stack.base}/#/models")
        page.wait_for_selector("#models-table")
        row = {v.version: f'.model-row[data-version="{v.version}"]' for v in (v1, v2)}
        assert page.locator(f"{row[v2.version]} .prod-mark").count() == 1
        assert page.locator(f"{row[v1.version]} .prod-mark").count() == 0
        assert "0.610 → 0.660" in page.inner_text(row[v2.version])
        assert page.inner_text(f"{row[v1.version]} .precision-gate") == "int8@640 refused"
        assert page.locator(f"{row[v1.version]} .promote-btn").count() == 1
        assert page.locator(f"{row[v2.version]} .promote-btn").count() == 0
        shot(page, "11-models-v2")

        # roll back (with a reason): v1 is production again, on the page and in the registry
        page.fill("#model-reason", "too many false alarms")
        page.click("#rollback-btn")
        page.wait_for_selector(f"{row[v1.version]} .prod-mark")
        assert reg.production_version() == v1.version
        assert "too many false alarms" in reg.history(1)[0]["reason"]
        # promote v2 from its row (the load check runs on the server)
        page.click(f"{row[v2.version]} .promote-btn")
        page.wait_for_selector(f"{row[v2.version]} .prod-mark", timeout=60_000)
        assert reg.production_version() == v2.version
        assert page.locator("#model-error").is_hidden()
        shot(page, "12-models-promoted")
    finally:
        reg.close()
