"""The console as an installable web app: its service worker, served at the console's root
(``<console>/sw.js``, so its scope is the whole console) from ``static/sw.js`` with the shell's
version and paths filled in. The manifest and icons are plain static files
(``static/manifest.webmanifest``, linked from ``index.html``; icons drawn by
``deploy/console/make_icons.py``). docs/console.md, "Installing on a phone", says what the worker
caches and never caches."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from fastapi import APIRouter, Response

STATIC = Path(__file__).parent / "static"
WORKER = "sw.js"
# shell entries are given relative to the worker's scope (the console's root): "./" is the page
PAGE = "./"


def shell_paths(static: Path = STATIC) -> list[str]:
    """The page and every static file but the worker itself, relative to the console's root."""
    files = sorted(
        p.name for p in static.iterdir() if p.is_file() and p.name not in (WORKER, "index.html")
    )
    return [PAGE, *(f"static/{name}" for name in files)]


def shell_version(static: Path = STATIC) -> str:
    """A hash of every static file's name and bytes: any change to the console's UI is a new
    version (a new worker, whose shell replaces the old one in the browser)."""
    digest = hashlib.sha256()
    for p in sorted(static.iterdir()):
        if p.is_file():
            digest.update(p.name.encode() + b"\0" + p.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def worker_script(static: Path = STATIC) -> str:
    """``static/sw.js`` with its version and shell paths filled in."""
    template = (static / WORKER).read_text()
    paths = json.dumps(shell_paths(static))
    return template.replace('"__VIGIL_SHELL_VERSION__"', json.dumps(shell_version(static))).replace(
        '["__VIGIL_SHELL_PATHS__"]', paths
    )


def make_router(static: Path = STATIC) -> APIRouter:
    """``GET /sw.js``: the worker, made once (the static files do not change while the console
    runs); anonymous, as browsers fetch it to check for a new version."""
    router = APIRouter()
    script = worker_script(static) if (static / WORKER).is_file() else None

    @router.get("/sw.js", include_in_schema=False)
    def service_worker() -> Response:
        if script is None:
            return Response("no service worker in this console build", 404)
        # no-store (set for everything outside /static): a new console version is seen at once
        return Response(script, media_type="text/javascript")

    return router
