"""The console on a phone (issue 25), in a real headless Chromium (Debian's /usr/bin/chromium,
driven by Playwright) with touch and mobile emulation at 360x740 and 412x915: every page fits the
screen (nothing wider than the viewport, no horizontal scrolling), the page links are a bar a thumb
reaches with targets of at least 44 CSS px, and a notification's deep link (``#/alerts/<id>``)
opened while logged out lands on that alert after login.

One console and one browser for the module (a camera in the registry and one alert with a
snapshot). With ``VIGIL_CONSOLE_README_SHOTS=1`` the docs' phone pictures
(``docs/img/phone-<page>.png``, 360x740) are written too; otherwise screenshots go to
``test-artifacts/console-phone/``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.browser import log_in, phone, watch_errors
from tests.support.console import PASSWORD, ConsoleStack, console_stack

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
ARTIFACTS = REPO / "test-artifacts" / "console-phone"
DOC_IMG = REPO / "docs" / "img"
CAMERA = "porch"
ALERT = "a25a25a25a25a25a25a2"  # 20 hex digits, as the alert service makes them
PHONES = {"360x740": (360, 740), "412x915": (412, 915)}
MIN_TAP = 44  # CSS px, each side of what a finger taps

# what a user taps on a page: everything focusable and visible
_TAPPABLE = "a[href], button, input, select, textarea, [tabindex]"

# the page as measured in the browser: its scroll width, the visible elements whose right edge
# passes the viewport, and the visible tappable elements smaller than MIN_TAP either way
_MEASURE = """([tappable, minTap]) => {
  const W = window.innerWidth;
  const shown = (el) => {
    const r = el.getBoundingClientRect();
    const s = getComputedStyle(el);
    return r.width > 0 && r.height > 0 && s.visibility !== "hidden" && s.display !== "none";
  };
  const name = (el) => el.tagName.toLowerCase() + (el.id ? "#" + el.id : "")
    + (typeof el.className === "string" && el.className ? "." + el.className.split(" ").join(".") : "");
  const wide = [], small = [];
  for (const el of document.querySelectorAll("body *")) {
    if (!shown(el)) continue;
    const r = el.getBoundingClientRect();
    if (r.right > W + 0.5 || r.left < -0.5) wide.push(`${name(el)} [${Math.round(r.left)}..${Math.round(r.right)}]`);
  }
  for (const el of document.querySelectorAll(tappable)) {
    if (!shown(el)) continue;
    const r = el.getBoundingClientRect();
    if (r.width < minTap - 0.5 || r.height < minTap - 0.5) small.push(`${name(el)} ${Math.round(r.width)}x${Math.round(r.height)}`);
  }
  const links = [...document.querySelectorAll("#nav .nav-links a")].filter(shown).map((a) => {
    const r = a.getBoundingClientRect();
    return { page: a.dataset.page, top: r.top, bottom: r.bottom, height: r.height, width: r.width };
  });
  return { scrollWidth: document.documentElement.scrollWidth, innerWidth: W,
           innerHeight: window.innerHeight, wide, small, links };
}"""


@pytest.fixture(scope="module")
def phone_console(kafka_bootstrap, tmp_path_factory, camera_recording) -> Iterator[ConsoleStack]:
    """A console with one camera in its registry, its recording (the session's, copied) and one
    ended alert (a snapshot) 8 s into it: the alert has a clip, the camera a timeline."""
    import cv2
    import numpy as np

    from pipeline.cameras.spec import CameraSpec
    from pipeline.common.audit import AuditLog
    from pipeline.record.index import SegmentIndex
    from tests.support.recordings import copy_recording_as
    from tests.support.seeding import seed_camera_alert

    tmp = tmp_path_factory.mktemp("phone")
    root = tmp / "recordings"
    with console_stack(kafka_bootstrap, tmp, recordings={"dir": str(root)}) as stack:
        spec = CameraSpec(id=CAMERA, url="rtsp://192.0.2.10:554/porch", record={"enabled": True})
        segments = copy_recording_as(
            camera_recording, root, SegmentIndex.from_config(stack.cfg.redis), CAMERA
        )
        frame = np.full((360, 640, 3), (40, 90, 30), np.uint8)
        cv2.rectangle(frame, (260, 120), (380, 340), (200, 200, 230), -1)
        seed_camera_alert(
            stack.cfg,
            [spec],
            segments,
            alert_id=ALERT,
            rule_id="porch-intrusion",
            offset_s=8.0,
            duration_s=4.0,
            snapshot=cv2.imencode(".jpg", frame)[1].tobytes(),
        )
        # a change in the audit trail, with the long details a real one has
        AuditLog(stack.cfg.redis, stack.users.client).record(
            who="admin",
            via="console/session",
            address="127.0.0.1",
            action="rule.put",
            target="porch-intrusion",
            details={
                "zone": [[0.3, 0.55], [0.9, 0.55], [0.9, 1.0], [0.3, 1.0]],
                "cameras": [CAMERA],
            },
        )
        yield stack


def _phone(browser, size: str):
    """A fresh phone: its own cookies, touch and mobile emulation; console errors collected."""
    context = browser.new_context(**phone(*PHONES[size]))
    context.set_default_timeout(10_000)
    page = context.new_page()
    # uncaught exceptions and console errors (a failed request is one)
    page.errors = watch_errors(page, console=True)
    return context, page


def _login(page, user: str = "admin") -> None:
    """Through the login form the page shows (a tap, as on a phone)."""
    log_in(page, None, user, PASSWORD, tap=True)


def _shot(page, name: str, size: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}-{size}.png"))
    if size == "360x740" and os.environ.get("VIGIL_CONSOLE_README_SHOTS") == "1":
        page.screenshot(path=str(DOC_IMG / f"phone-{name}.png"))


def _fits(page, where: str) -> dict:
    m = page.evaluate(_MEASURE, [_TAPPABLE, MIN_TAP])
    assert m["scrollWidth"] <= m["innerWidth"], (
        f"{where}: the page scrolls sideways ({m['scrollWidth']} px wide in a "
        f"{m['innerWidth']} px screen): {m['wide'][:8]}"
    )
    assert not m["wide"], f"{where}: cut off at the screen's edge: {m['wide'][:8]}"
    assert not m["small"], f"{where}: touch targets under {MIN_TAP} px: {m['small'][:8]}"
    return m


# the Models page's answer with two versions (a registered model needs weights and torch: the
# page's layout is what is measured here, the API has its own tests)
MODELS = {
    "production": "porch-v2-3f9a1c",
    "versions": [
        {
            "version": f"porch-v{n}-3f9a1c",
            "label": f"v{n} yolo11n retrained on 1 240 images",
            "created_at": 1796600000 + n,
            "metrics": {"map50": 0.61 + n / 100},
            "precision_summary": "person 0.93 ≥ 0.90 (gate passed), car 0.88 ≥ 0.85",
        }
        for n in (1, 2)
    ],
    "workers": [{"id": "ingest-worker-porch-1", "status": "running", "version": "porch-v2-3f9a1c"}],
    "decisions": [
        {
            "candidate_version": "porch-v2-3f9a1c",
            "metric": "map50",
            "production": 0.62,
            "candidate": 0.63,
            "promoted": True,
        }
    ],
    "history": [{"at": 1796600100, "kind": "promote", "number": 2, "version": "porch-v2-3f9a1c"}],
}

# (name, route, what shows when the page has drawn)
PAGES = [
    ("cameras", "#/cameras", "#camera-grid .camera-card >> nth=0"),
    ("camera", f"#/camera/{CAMERA}", ".stage"),
    ("alerts", "#/alerts", f"tr[data-alert='{ALERT}']"),
    ("alert", f"#/alerts/{ALERT}", "#detail-clip"),
    ("timeline", f"#/timeline/{CAMERA}", ".tl-bar .tl-rec"),
    ("models", "#/models", "#models-table"),
    ("audit", "#/audit", "#audit-table"),
]


@pytest.mark.parametrize("size", list(PHONES))
def test_every_page_fits_a_phone_with_thumb_sized_targets(phone_console, browser, size):
    context, page = _phone(browser, size)
    try:
        page.route("**/api/models", lambda r: r.fulfill(json=MODELS))
        page.goto(f"{phone_console.base}/#/cameras")
        page.wait_for_selector("#login-form")
        _fits(page, f"login at {size}")
        _shot(page, "login", size)
        _login(page)
        for name, route, ready in PAGES:
            page.evaluate("(r) => { location.hash = r; }", route)
            page.wait_for_selector(ready)
            page.wait_for_timeout(150)  # images and late layout
            m = _fits(page, f"{name} at {size}")
            links = {link["page"]: link for link in m["links"]}
            assert {"cameras", "alerts", "models", "audit"} <= set(links), (
                f"{name} at {size}: the page links are not all on screen: {m['links']}"
            )
            for link in links.values():
                assert link["height"] >= MIN_TAP and link["width"] >= MIN_TAP, (
                    f"{name} at {size}: nav item {link}"
                )
                # in the thumb's reach: the bottom third of the screen, fully on it
                assert m["innerHeight"] * 2 / 3 <= link["top"], f"{name}: nav at the top {link}"
                assert link["bottom"] <= m["innerHeight"] + 0.5, f"{name}: nav off screen {link}"
            _shot(page, name, size)
        assert not page.errors, page.errors
    finally:
        context.close()


def test_a_notification_link_opens_its_alert_after_login(phone_console, browser):
    context, page = _phone(browser, "360x740")
    try:
        # the notification's link: console.public_url + #/alerts/<id>, opened logged out
        page.goto(f"{phone_console.base}/#/alerts/{ALERT}")
        page.wait_for_selector("#login-form")
        _login(page, "operator")
        page.wait_for_selector(f"#alert-detail[data-alert='{ALERT}']")
        snap = page.wait_for_selector("#detail-snapshot")
        page.wait_for_function("() => document.querySelector('#detail-snapshot').naturalWidth > 0")
        assert snap.is_visible()
        box = snap.bounding_box()
        assert box and box["y"] < 740 and box["y"] + box["height"] > 0, f"snapshot off screen {box}"
        assert page.url == f"{phone_console.base}/#/alerts/{ALERT}"
        assert page.inner_text("#alert-detail").count(CAMERA) >= 1
        # its clip plays (the recording around the alert), on a phone
        page.evaluate("() => document.querySelector('#detail-clip').play()")
        page.wait_for_function(
            "() => { const v = document.querySelector('#detail-clip');"
            " return v.readyState >= 2 && v.currentTime > 0.3; }"
        )
        # and the operator marks it, with a tap
        page.tap("#review-fp")
        page.wait_for_selector("#review-state[data-verdict='false_positive']")
        # not logged in is an expected state: no failed request or error in the console
        assert not page.errors, page.errors

        # a link that is no route of the console lands on Cameras, on this console
        context.clear_cookies()
        page.goto(f"{phone_console.base}/#//evil.example/x")
        _login(page, "viewer")
        page.wait_for_selector("#camera-grid")
        assert page.url == f"{phone_console.base}/#/cameras"
    finally:
        context.close()


def test_session_probe_answers_without_an_error_status(phone_console):
    with phone_console.client() as anon:
        r = anon.get("/api/session")
        assert r.status_code == 200 and r.json() == {"logged_in": False}
        assert anon.get("/api/alerts").status_code == 401  # the probe opened nothing
    c = phone_console.login("operator")
    try:
        me = c.get("/api/session").json()
        assert me["logged_in"] is True and me["user"] == "operator" and me["role"] == "operator"
        assert me["csrf_token"] == c.headers["X-CSRF-Token"]
    finally:
        c.close()
