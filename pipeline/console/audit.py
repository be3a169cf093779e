"""``record(request, action, target, details)``: one call in each console route that changes
something, so the audit trail says who (the logged-in user), how (session or API token), when and
from which address; ``GET /api/audit`` reads it back (admins)."""

from __future__ import annotations

import logging
from typing import Any

import redis
from fastapi import APIRouter, Depends, Query, Request

from pipeline.common.audit import AuditLog
from pipeline.console.auth import Principal
from pipeline.console.state import ConsoleState, as_admin, client_addr, state

log = logging.getLogger(__name__)

router = APIRouter(prefix="/api", tags=["audit"])


def record(
    request: Request, action: str, target: str, details: dict[str, Any] | None = None
) -> None:
    """Append the change to the audit trail and log it (one line). Called after the change was
    made: Redis away then is logged, not answered with an error for a change that happened."""
    st: ConsoleState = request.app.state.console
    who: Principal | None = getattr(request.state, "principal", None)
    user = who.user if who else "?"
    via = f"console/{who.via}" if who else "console"
    addr = client_addr(request)
    log.info("console: %s %s by %s from %s", action, target, user, addr)
    try:
        AuditLog(st.cfg.redis, st.redis).record(
            who=user, via=via, address=addr, action=action, target=target, details=details
        )
    except redis.RedisError as e:
        log.warning(
            "console: %s %s by %s not in the audit trail: Redis error %s",
            action,
            target,
            user,
            type(e).__name__,
        )


@router.get("/audit")
def audit_trail(
    n: int = Query(100, ge=1, le=1000, description="the newest n entries"),
    _: Principal = Depends(as_admin),
    st: ConsoleState = Depends(state),
) -> list[dict[str, Any]]:
    """The audit trail, newest first: who changed what, when, from where (admins only)."""
    return list(reversed(AuditLog(st.cfg.redis, st.redis).tail(n)))
