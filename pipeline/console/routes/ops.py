"""``/healthz`` (the process answers), ``/readyz`` (Kafka and Redis reachable), ``/metrics``."""

from __future__ import annotations

import redis
from fastapi import APIRouter, Depends, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from pipeline.console.state import ConsoleState, state

router = APIRouter(tags=["ops"])


@router.get("/healthz")
def healthz():
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(st: ConsoleState = Depends(state)):
    problems = []
    try:
        await st.aredis.ping()
    except (redis.RedisError, OSError) as e:
        problems.append(f"Redis: {type(e).__name__}")
    if not st.kafka_ready():
        problems.append(f"Kafka at {st.cfg.kafka.bootstrap_servers}: not connected")
    if problems:
        return JSONResponse({"status": "unavailable", "detail": "; ".join(problems)}, 503)
    return {"status": "ready"}


@router.get("/metrics")
def metrics():
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
