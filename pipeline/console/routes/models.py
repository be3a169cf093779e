"""Models: the registry's versions with their evaluation reports, the decisions of the promotion
gate, the version each worker runs, and promote / rollback through the CLI's own gate."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request
from pydantic import BaseModel, Field

from pipeline.console import audit
from pipeline.console.auth import Principal
from pipeline.console.state import ConsoleState, as_admin, principal, state

router = APIRouter(prefix="/api/models", tags=["models"])


class Promote(BaseModel):
    model_config = {"extra": "forbid"}
    ref: str = Field(min_length=1, max_length=512)
    reason: str = Field("", max_length=500)


class Rollback(BaseModel):
    model_config = {"extra": "forbid"}
    reason: str = Field("", max_length=500)


def _registry(st: ConsoleState):
    # imports torch (weights checks): loaded on the first Models request, not at start-up
    from detectors.retrain.model_registry import ModelRegistry  # noqa: PLC0415

    return ModelRegistry(st.cfg.redis, st.cfg.models)


def _version(mv) -> dict[str, Any]:
    from detectors.retrain.model_registry import precision_summary  # noqa: PLC0415 (as _registry)

    out = asdict(mv)
    out["label"] = mv.label
    out["precision_summary"] = precision_summary(mv)
    return out


@router.get("")
def list_models(_: Principal = Depends(principal), st: ConsoleState = Depends(state)):
    reg = _registry(st)
    try:
        return {
            "production": reg.production_version(),
            "versions": [_version(v) for v in reg.list()],
            "history": reg.history(50),
            "workers": reg.workers(),
            "decisions": reg.decisions(20),
        }
    finally:
        reg.close()


@router.post("/promote")
def promote(
    body: Promote,
    request: Request,
    who: Principal = Depends(as_admin),
    st: ConsoleState = Depends(state),
):
    from detectors.retrain.promotion import promote_checked  # noqa: PLC0415 (imports torch)

    reg = _registry(st)
    try:
        reason = f"{body.reason or 'manual promotion'} (console, {who.user})"
        mv = promote_checked(reg, body.ref, reason=reason)
    except ValueError as e:  # RegistryError, WeightsError: the CLI's one-line messages
        raise HTTPException(422, str(e)) from None
    finally:
        reg.close()
    audit.record(request, "model.promote", mv.label, {"ref": body.ref, "reason": body.reason})
    return {"production": mv.version, "label": mv.label}


@router.post("/rollback")
def rollback(
    body: Rollback,
    request: Request,
    who: Principal = Depends(as_admin),
    st: ConsoleState = Depends(state),
):
    reg = _registry(st)
    try:
        mv = reg.rollback(reason=f"{body.reason or 'rollback'} (console, {who.user})")
    except ValueError as e:
        raise HTTPException(422, str(e)) from None
    finally:
        reg.close()
    audit.record(request, "model.rollback", mv.label, {"reason": body.reason})
    return {"production": mv.version, "label": mv.label}
