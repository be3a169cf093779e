"""The console in a real headless Chromium (Debian's /usr/bin/chromium, driven by Playwright; never
``playwright install``): one launch with the options every browser test needs, pages of fresh
contexts that fail on the console's JavaScript errors, the login through the login form, and a
phone's context options (touch and mobile emulation).

The fixtures built on these (``browser``, ``new_page``) are in tests/conftest.py."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"


@contextlib.contextmanager
def launch() -> Iterator[Any]:
    """A headless Chromium (Debian's, ``--no-sandbox``: the tests may run as root in a container);
    a missing /usr/bin/chromium fails the test saying so."""
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).is_file():
        pytest.fail(f"{CHROMIUM} missing (Debian package chromium): the browser tests need it")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield browser
        finally:
            browser.close()


def watch_errors(page, *, console: bool = False) -> list[str]:
    """The list the page's uncaught JavaScript exceptions are appended to from now on; with
    ``console``, its console errors too (a failed request is one)."""
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(f"pageerror: {e}"))
    if console:
        page.on(
            "console",
            lambda m: m.type == "error" and errors.append(f"console: {m.text} ({m.location})"),
        )
    return errors


@contextlib.contextmanager
def pages(browser) -> Iterator[Callable[..., Any]]:
    """``make(**context_options)`` -> a page of a fresh context (its own cookies; default timeout
    ``timeout_ms``, 30 s unless given), ``make(context)`` -> another page of that context.
    On exit the contexts are closed, then any uncaught JavaScript error of their pages fails."""
    contexts: list[Any] = []
    errors: list[str] = []

    def make(context=None, *, timeout_ms: float = 30_000, **options):
        if context is None:
            context = browser.new_context(**options)
            context.set_default_timeout(timeout_ms)
            contexts.append(context)
        page = context.new_page()
        page.on("pageerror", lambda e: errors.append(str(e)))
        return page

    yield make
    for c in contexts:
        c.close()
    assert not errors, f"JavaScript errors in the console: {errors}"


def log_in(page, base: str | None, user: str, password: str, *, tap: bool = False) -> None:
    """Logs in through the console's login form: opens ``base`` first (None: the page shows the
    form already, e.g. a deep link opened logged out), fills the form, submits it (a tap with
    ``tap``, on a touch screen) and waits for the page links the login shows."""
    if base is not None:
        page.goto(f"{base}/")
    page.wait_for_selector("#login-form")
    page.fill("#login-form input[name=username]", user)
    page.fill("#login-form input[name=password]", password)
    submit = "#login-form button[type=submit]"
    if tap:
        page.tap(submit)
    else:
        page.click(submit)
    page.wait_for_selector("#nav:not([hidden])")


def phone(width: int, height: int) -> dict[str, Any]:
    """The context options of a phone ``width`` x ``height`` CSS px: touch, mobile emulation
    (the viewport meta tag honoured), one device pixel per CSS px."""
    return {
        "viewport": {"width": width, "height": height},
        "has_touch": True,
        "is_mobile": True,
        "device_scale_factor": 1,
    }
