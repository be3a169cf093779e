"""``create_app(cfg)``: the console's FastAPI app (OpenAPI at ``/docs``), its error mapping and
its own Prometheus metrics; the web UI is the static folder next to this file."""

from __future__ import annotations

import logging
import math
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import redis
from fastapi import Depends, FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from kafka.errors import KafkaError
from prometheus_client import Counter, Histogram

from pipeline.common.kafka import KafkaUnavailable
from pipeline.console import audit, pwa
from pipeline.console.auth import Principal
from pipeline.console.hardening import BodyLimit, add_security_headers, docs_csp
from pipeline.console.routes import alerts, cameras, models, ops, rules, session, timeline
from pipeline.console.state import ConsoleState, principal
from pipeline.console.streams import StreamSlots

if TYPE_CHECKING:  # the root config imports this package's config section
    from pipeline.config import VigilConfig

log = logging.getLogger(__name__)
STATIC = Path(__file__).parent / "static"

REQUESTS = Counter(
    "vigil_console_requests_total", "Console HTTP requests", ["method", "route", "status"]
)
LATENCY = Histogram(
    "vigil_console_request_seconds",
    "Console HTTP request time (until the response starts; streams excluded)",
    ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
)


def _redis_where(st: ConsoleState) -> str:
    try:
        parts = urlsplit(st.cfg.redis.url.get_secret_value())
        return f"{parts.hostname}:{parts.port or 6379}"
    except ValueError:
        return "the configured address"


def finite(value: Any) -> Any:
    """``value`` with NaN and infinities as text, so the JSON answer can be written."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


def create_app(cfg: VigilConfig, console: ConsoleState | None = None) -> FastAPI:
    """The app; ``console`` is made (and its Kafka views started) here when not given."""
    st = console if console is not None else ConsoleState(cfg)

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        st.start()
        try:
            yield
        finally:
            st.close()

    app = FastAPI(
        title="Vigil Console",
        description="Cameras, alerts, live rules with preview, reviews and models (docs/console.md)",
        version="1",
        lifespan=lifespan,
        docs_url=None,  # served below, to logged-in callers only
        redoc_url=None,
        openapi_url=None,
    )
    app.state.console = st
    app.state.stream_slots = StreamSlots(cfg.console.max_streams_per_user)
    # innermost of the middlewares: its 413 still gets the headers and the request metrics
    app.add_middleware(BodyLimit, limit=cfg.console.max_body_bytes)

    @app.exception_handler(redis.RedisError)
    async def _redis_down(_request: Request, e: redis.RedisError):
        # the address goes to the log only: these answers reach callers not logged in
        log.warning("console: Redis at %s: %s", _redis_where(st), type(e).__name__)
        return JSONResponse(
            {"detail": f"Redis is unavailable ({type(e).__name__}); try again"}, 503
        )

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, e: RequestValidationError):
        # FastAPI's own handler echoes the input: a NaN or inf there made the 422 a 500
        return JSONResponse({"detail": finite(jsonable_encoder(e.errors()))}, 422)

    @app.exception_handler(KafkaUnavailable)
    async def _kafka_unavailable(_request: Request, e: KafkaUnavailable):
        return JSONResponse({"detail": str(e)}, 503)

    @app.exception_handler(KafkaError)
    async def _kafka_error(_request: Request, e: KafkaError):
        return JSONResponse(
            {
                "detail": f"Kafka at {cfg.kafka.bootstrap_servers} did not take the write "
                f"({type(e).__name__}); nothing was changed there, try again"
            },
            503,
        )

    @app.middleware("http")
    async def _metrics(request: Request, call_next):
        started = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        path = getattr(route, "path", "unmatched")
        REQUESTS.labels(request.method, path, str(response.status_code)).inc()
        LATENCY.labels(request.method, path).observe(time.perf_counter() - started)
        add_security_headers(request, response, cfg.console.https)
        return response

    for router in (session, cameras, timeline, rules, alerts, models, ops, audit):
        app.include_router(router.router)
    app.include_router(pwa.make_router(STATIC))
    if STATIC.is_dir():
        app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    def index():
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})

    @app.get("/openapi.json", include_in_schema=False)
    def openapi(_: Principal = Depends(principal)):
        return app.openapi()

    docs_html = get_swagger_ui_html(openapi_url="/openapi.json", title="Vigil Console API").body
    docs_policy = docs_csp(bytes(docs_html).decode())

    @app.get("/docs", include_in_schema=False)
    def docs(_: Principal = Depends(principal)):
        return HTMLResponse(docs_html, headers={"Content-Security-Policy": docs_policy})

    return app
