"""Run an admission cycle on demand (admin)."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from npucenter.api.admission import run_admission
from npucenter.api.context import RequestContext, admin_context
from npucenter.api.schemas import AdmissionReport

__all__ = ["router"]

router = APIRouter(prefix="/api", tags=["admission"])


@router.post("/admission/cycle", response_model=AdmissionReport)
def admission_cycle(ctx: RequestContext = Depends(admin_context)) -> AdmissionReport:
    """Admit what fits, preempt what must yield, and report it."""
    return run_admission(ctx.control)
