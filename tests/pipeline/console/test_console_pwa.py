"""The console on a phone, in a real headless Chromium (Debian's /usr/bin/chromium, Playwright):
a zone drawn with taps (touch emulation, 412x915) is saved with the points the same zone gets
from mouse clicks on a desktop; dragging a point moves it, Undo takes the last one back, a
two-finger touch places nothing. The console is installable (Chromium's own installability
check, the manifest and its icons), its service worker serves the shell offline, never holds an
API answer or a picture, and after a logout holds only the shell.

One console and one browser for the module; every context logs in through the API (its cookie
jar is the pages'). The phone drawing's screenshot goes to ``test-artifacts/console/``."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from alerts.events import AlertEvent
from alerts.store import AlertStore, AlertWrite
from tests.support.alert_events import plain_jpeg
from tests.support.browser import phone
from tests.support.console import PASSWORD, ConsoleStack, console_stack

pytestmark = pytest.mark.integration

ARTIFACTS = Path(__file__).resolve().parents[3] / "test-artifacts" / "console"
DESKTOP = {"viewport": {"width": 1280, "height": 800}}
PHONE = phone(412, 915)
CAMERA = "pwa-cam"
# the zone, as fractions of the picture; where it ends up is compared within one phone pixel
ZONE = [(0.1, 0.15), (0.85, 0.2), (0.9, 0.8), (0.2, 0.75)]
LINE = [(0.3, 0.9), (0.7, 0.1)]
ASTRAY = (0.5, 0.5)  # the phone's second tap misses; that point is dragged onto ZONE[1]


@pytest.fixture(scope="module")
def stack(kafka_bootstrap, tmp_path_factory) -> Iterator[ConsoleStack]:
    with console_stack(
        kafka_bootstrap, tmp_path_factory.mktemp("console"), roles=("operator",)
    ) as s:
        yield s


@pytest.fixture
def logged_in(new_page, stack):
    """logged_in(**context_options) -> a page of a new context, logged in as the operator;
    fails at teardown on any uncaught JavaScript error (``new_page``)."""

    def make(**options):
        page = new_page(timeout_ms=10_000, **options)
        r = page.context.request.post(
            f"{stack.base}/api/login", data={"username": "operator", "password": PASSWORD}
        )
        assert r.ok, r.text()
        return page

    return make


def open_editor(page, stack: ConsoleStack, rule_id: str):
    """The camera page with the zone editor ready; returns the canvas's box."""
    page.goto(f"{stack.base}/#/camera/{CAMERA}")
    page.wait_for_function(
        "() => { const c = document.querySelector('#draw'); return c && c.width > 100; }"
    )
    # the rule list and the camera's badge filled in: the layout stays put while the test taps
    page.wait_for_selector("#rule-list li")
    page.wait_for_selector(".page-head .badge[data-state]")
    page.select_option("#rule-type", "zone_intrusion")
    page.fill("#rule-id", rule_id)
    return page.locator("#draw").bounding_box()


def at(box, f: tuple[float, float]) -> tuple[float, float]:
    return box["x"] + f[0] * box["width"], box["y"] + f[1] * box["height"]


def save(page, press, shape: str = "zone") -> list[list[float]]:
    """Saves the rule with ``press(selector)``; the zone (or line) the console stored."""
    with page.expect_response(lambda r: r.request.method == "PUT") as put:
        press("#save-btn")
    assert put.value.status == 200, put.value.text()
    page.wait_for_selector("#rule-saved:not([hidden])")
    return put.value.request.post_data_json[shape]


def touch(cdp, kind: str, points: list[tuple[float, float]]) -> None:
    cdp.send(
        "Input.dispatchTouchEvent",
        {
            "type": kind,
            "touchPoints": [{"x": x, "y": y, "id": i} for i, (x, y) in enumerate(points)],
        },
    )


def test_a_zone_drawn_with_taps_is_saved_like_one_drawn_with_clicks(stack, logged_in):
    desk = logged_in(**DESKTOP)
    box = open_editor(desk, stack, f"desk-{uuid.uuid4().hex[:6]}")
    for f in ZONE[:-1]:
        desk.mouse.click(*at(box, f))
    desk.mouse.dblclick(*at(box, ZONE[-1]))  # the last point and "done"
    assert desk.inner_text("#draw-state") == "4 points, closed"
    clicked = save(desk, desk.click)
    assert len(clicked) == len(ZONE)

    phone = logged_in(**PHONE)
    zone_id = f"phone-{uuid.uuid4().hex[:6]}"
    open_editor(phone, stack, zone_id)
    phone.locator("#draw").scroll_into_view_if_needed()
    box = phone.locator("#draw").bounding_box()
    assert box["width"] <= 412
    state = lambda: phone.inner_text("#draw-state")  # noqa: E731
    tap = phone.touchscreen.tap
    for f in (ZONE[0], ASTRAY, ZONE[2], ZONE[3], (0.5, 0.95)):
        tap(*at(box, f))
    assert state() == "5 points"
    phone.tap("#undo-btn")  # (scrolls the page to the button first: below the picture)
    assert state() == "4 points"  # the last tap, (0.5, 0.95), is gone
    phone.locator("#draw").scroll_into_view_if_needed()
    box = phone.locator("#draw").bounding_box()  # where the picture is now
    cdp = phone.context.new_cdp_session(phone)
    # one finger drags the astray point onto its place
    (x0, y0), (x1, y1) = at(box, ASTRAY), at(box, ZONE[1])
    touch(cdp, "touchStart", [(x0, y0)])
    for i in range(1, 6):
        touch(cdp, "touchMove", [(x0 + (x1 - x0) * i / 5, y0 + (y1 - y0) * i / 5)])
    touch(cdp, "touchEnd", [])
    assert state() == "4 points"
    # two fingers (a pinch starting) place no point
    a, b = at(box, (0.4, 0.45)), at(box, (0.6, 0.55))
    touch(cdp, "touchStart", [a, b])
    touch(cdp, "touchEnd", [])
    assert state() == "4 points"
    tap(*at(box, ZONE[0]))  # a tap on the first point closes the zone
    assert state() == "4 points, closed"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    phone.screenshot(path=str(ARTIFACTS / "phone-zone-drawn.png"))
    tapped = save(phone, phone.tap)

    one_px = 1.0 / box["width"]
    assert len(tapped) == len(clicked), (tapped, clicked)
    for t, c in zip(tapped, clicked, strict=True):
        assert abs(t[0] - c[0]) <= one_px and abs(t[1] - c[1]) <= one_px, (tapped, clicked)

    # a line: two taps, on the picture as laid out once the saved zone is listed
    phone.wait_for_selector(f'#rule-list .rule-item[data-rule="{zone_id}"]')
    phone.select_option("#rule-type", "line_crossing")
    phone.fill("#rule-id", f"phone-line-{uuid.uuid4().hex[:6]}")
    assert state() == "no point yet"
    phone.locator("#draw").scroll_into_view_if_needed()  # the form fields scrolled the page
    box = phone.locator("#draw").bounding_box()
    one_px = 1.0 / box["width"]
    for f in LINE:
        tap(*at(box, f))
    assert state() == "2 points"
    line = save(phone, phone.tap, "line")
    for t, f in zip(line, LINE, strict=True):
        assert abs(t[0] - f[0]) <= one_px and abs(t[1] - f[1]) <= one_px, line


# -- installable, offline, caches -------------------------------------------------------------

CACHED_URLS = """async () => {
    const out = {};
    for (const name of await caches.keys()) {
        out[name] = (await (await caches.open(name)).keys()).map((r) => r.url);
    }
    return out;
}"""


def shell_urls(base: str) -> set[str]:
    from pipeline.console.pwa import shell_paths

    return {f"{base}/{p.removeprefix('./')}" for p in shell_paths()}


@pytest.fixture(scope="module")
def alert_with_snapshot(stack) -> str:
    aid = uuid.uuid4().hex[:20]
    now = time.time()
    ev = AlertEvent(
        id=aid, camera_id=CAMERA, rule_id="pwa-zone", rule_type="zone_intrusion",
        status="started", severity="high", started_at=now, updated_at=now, frame_seq=1,
        epoch=1, label="person", box=(0.1, 0.1, 0.3, 0.6), confidence=0.9,
    )  # fmt: skip
    AlertStore(stack.cfg.redis).write_alert(
        AlertWrite(ev.to_dict(), now, snapshot=plain_jpeg(), source=plain_jpeg())
    )
    return aid


def controlled_page(logged_in, stack):
    """A phone page of the console, under its service worker."""
    page = logged_in(**PHONE)
    page.goto(f"{stack.base}/")
    page.wait_for_function("() => navigator.serviceWorker.controller !== null")
    return page


def cached(page) -> dict[str, list[str]]:
    """Every cache of the console's origin: name -> the URLs it holds."""
    return page.evaluate(CACHED_URLS)


def test_the_console_is_installable(stack, logged_in):
    page = controlled_page(logged_in, stack)
    cdp = page.context.new_cdp_session(page)
    # Chromium's own check of manifest, icons and worker (a test context is an incognito one)
    errors = cdp.send("Page.getInstallabilityErrors")["installabilityErrors"]
    assert [e for e in errors if e["errorId"] != "in-incognito"] == [], errors
    assert cdp.send("Page.getAppManifest")["errors"] == []

    manifest_url = page.eval_on_selector("link[rel=manifest]", "l => l.href")
    manifest = page.context.request.get(manifest_url).json()
    assert manifest["name"] == "Vigil console" and manifest["short_name"] == "Vigil"
    assert manifest["display"] == "standalone"
    assert manifest["theme_color"] and manifest["background_color"]
    resolve = "([u, base]) => new URL(u, base).href"
    assert page.evaluate(resolve, [manifest["start_url"], manifest_url]) == f"{stack.base}/"
    assert page.evaluate(resolve, [manifest["scope"], manifest_url]) == f"{stack.base}/"
    assert {i["purpose"] for i in manifest["icons"]} == {"any", "maskable"}
    assert {i["sizes"] for i in manifest["icons"]} == {"192x192", "512x512"}
    for icon in manifest["icons"]:
        src = page.evaluate(resolve, [icon["src"], manifest_url])
        w, h = page.evaluate(
            """(src) => new Promise((ok, bad) => { const i = new Image();
                i.onload = () => ok([i.naturalWidth, i.naturalHeight]); i.onerror = bad;
                i.src = src; })""",
            src,
        )
        assert f"{w}x{h}" == icon["sizes"], (src, w, h)


def test_the_shell_opens_offline_and_no_api_answer_or_picture_is_cached(
    stack, logged_in, alert_with_snapshot
):
    page = controlled_page(logged_in, stack)
    # browse: the alerts, one alert's snapshot, a camera's rules
    page.goto(f"{stack.base}/#/alerts")
    page.click(f'.alert-row[data-alert="{alert_with_snapshot}"]')
    page.wait_for_function(
        "() => { const i = document.querySelector('#detail-snapshot');"
        " return i && i.complete && i.naturalWidth > 0; }"
    )
    page.goto(f"{stack.base}/#/camera/{CAMERA}")
    page.wait_for_selector("#rule-list li")
    shell = shell_urls(stack.base)
    caches = cached(page)
    assert len(caches) == 1, caches
    (urls,) = caches.values()
    assert set(urls) == shell, set(urls) ^ shell

    # offline: the page still opens, saying the server cannot be reached
    page.context.set_offline(True)
    page.reload()
    page.wait_for_selector("#login-form")
    assert "cannot be reached" in page.inner_text("#banner")


def test_after_logout_the_caches_hold_only_the_shell(stack, logged_in, alert_with_snapshot):
    page = controlled_page(logged_in, stack)
    page.wait_for_selector("#nav:not([hidden])")
    # what a page or an older worker could have left: an API answer and a snapshot
    page.evaluate(
        """async (aid) => {
            const shell = (await caches.keys())[0];
            await (await caches.open(shell)).put(`/api/alerts/${aid}/snapshot.jpg`,
                                                 await fetch(`/api/alerts/${aid}/snapshot.jpg`));
            await (await caches.open('elsewhere')).put('/api/alerts', await fetch('/api/alerts'));
        }""",
        alert_with_snapshot,
    )
    assert len(cached(page)) == 2
    page.tap("#logout-btn")
    page.wait_for_selector("#login-form")
    shell = shell_urls(stack.base)
    deadline = time.monotonic() + 5
    while (caches := cached(page)) and (
        len(caches) != 1 or set(next(iter(caches.values()))) != shell
    ):
        assert time.monotonic() < deadline, f"after logout the caches hold {caches}"
        time.sleep(0.1)


def test_a_new_console_version_is_a_new_worker_with_its_own_shell(stack, tmp_path):
    import shutil

    from pipeline.console import pwa

    served = httpx.get(f"{stack.base}/sw.js")
    assert served.status_code == 200
    assert served.headers["content-type"].startswith("text/javascript")
    # fetched by the browser on each page load, so a new console version is seen at once
    assert served.headers["cache-control"] == "no-store"
    assert "frame-ancestors 'none'" in served.headers["content-security-policy"]
    assert "__VIGIL_SHELL" not in served.text
    assert f'"{pwa.shell_version()}"' in served.text
    assert json.dumps(pwa.shell_paths()) in served.text

    # the same console with one line more in app.js: another worker, another shell cache
    static = tmp_path / "static"
    shutil.copytree(pwa.STATIC, static)
    version = re.compile(r'const VERSION = "([^"]+)";')
    before = version.search(pwa.worker_script(static))[1]
    (static / "app.js").write_text((static / "app.js").read_text() + "\n// next version\n")
    after = version.search(pwa.worker_script(static))[1]
    assert before != after, before
