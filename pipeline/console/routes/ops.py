"""``/healthz`` (the process answers), ``/readyz`` (Kafka and Redis reachable), ``/metrics``.

Anonymous callers learn only ok / not ready: the addresses of Kafka and Redis stay in the log and
in the answers to logged-in callers. ``/metrics`` (under ``vigil run``: the whole process's) needs
a session or token unless a local scraper asks directly (loopback, no proxy in between)."""

from __future__ import annotations

import asyncio
import logging

import redis
from fastapi import APIRouter, Depends, HTTPException, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from pipeline.console.hardening import local_client
from pipeline.console.state import ConsoleState, _principal, state

log = logging.getLogger(__name__)
router = APIRouter(tags=["ops"])


@router.get("/healthz")
def healthz():
    return {"status": "ok"}


def _caller_known(request: Request, st: ConsoleState) -> bool:
    """A valid session or token; False (not an error) when Redis cannot tell."""
    try:
        return _principal(request, st) is not None
    except redis.RedisError:
        return False


@router.get("/readyz")
async def readyz(request: Request, st: ConsoleState = Depends(state)):
    problems = []
    try:
        await st.aredis.ping()
    except (redis.RedisError, OSError) as e:
        problems.append(f"Redis: {type(e).__name__}")
    if not st.kafka_ready():
        problems.append(f"Kafka at {st.cfg.kafka.bootstrap_servers}: not connected")
    if problems != getattr(request.app.state, "ready_problems", []):  # log changes, not probes
        if problems:
            log.warning("console: not ready: %s", "; ".join(problems))
        else:
            log.info("console: ready again")
        request.app.state.ready_problems = problems
    if problems:
        body = {"status": "unavailable"}
        has_credentials = bool(request.headers.get("authorization") or request.cookies)
        if has_credentials and await asyncio.to_thread(_caller_known, request, st):
            body["detail"] = "; ".join(problems)
        return JSONResponse(body, 503)
    return {"status": "ready"}


@router.get("/metrics")
def metrics(request: Request, st: ConsoleState = Depends(state)):
    if not local_client(request) and _principal(request, st) is None:
        raise HTTPException(
            401, "metrics need a session or an API token (or a scrape from this host)"
        )
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
