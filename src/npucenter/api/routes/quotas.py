"""Quotas and cohorts: admins set them; a tenant reads its own quotas."""

from __future__ import annotations

from fastapi import APIRouter, Depends, status

from npucenter.api.admission import admit_after_change
from npucenter.api.context import RequestContext, admin_context, caller_context
from npucenter.api.schemas import CohortIn, CohortOut, QuotaIn, QuotaOut
from npucenter.api.views import quota_out, tenant_names

__all__ = ["router"]

router = APIRouter(prefix="/api", tags=["quotas"])


@router.put("/quotas", response_model=QuotaOut)
def set_quota(body: QuotaIn, ctx: RequestContext = Depends(admin_context)) -> QuotaOut:
    """Create or replace a tenant's quota for one device type (admin)."""
    with ctx.tx() as repo:
        tenant = repo.get_tenant(body.tenant)
        fields = body.model_dump(exclude={"tenant", "device_type"})
        quota_id = repo.set_quota(tenant, body.device_type, **fields).id
    admit_after_change(ctx.control)
    with ctx.tx() as repo:
        quota = next(q for q in repo.list_quotas() if q.id == quota_id)
        return quota_out(repo, quota, tenant_names(repo))


@router.get("/quotas", response_model=list[QuotaOut])
def list_quotas(ctx: RequestContext = Depends(caller_context)) -> list[QuotaOut]:
    """Quotas with current use: all (admin) or the caller's."""
    with ctx.tx() as repo:
        names, in_use = tenant_names(repo), repo.cards_in_use()
        return [quota_out(repo, q, names, in_use) for q in repo.list_quotas(tenant_id=ctx.scope)]


@router.delete("/quotas/{quota_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_quota(quota_id: int, ctx: RequestContext = Depends(admin_context)) -> None:
    """Remove a quota row (admin)."""
    with ctx.tx() as repo:
        repo.delete_quota(quota_id)
    admit_after_change(ctx.control)


@router.put("/cohorts", response_model=CohortOut)
def set_cohort(body: CohortIn, ctx: RequestContext = Depends(admin_context)) -> CohortOut:
    """Create or replace a cohort's parent and cards of its own (admin)."""
    with ctx.tx() as repo:
        fields = body.model_dump(exclude={"name"})
        out = CohortOut.model_validate(repo.set_cohort(body.name, **fields))
    admit_after_change(ctx.control)
    return out


@router.get("/cohorts", response_model=list[CohortOut])
def list_cohorts(ctx: RequestContext = Depends(admin_context)) -> list[CohortOut]:
    """Cohorts with a parent or cards of their own (admin)."""
    with ctx.tx() as repo:
        return [CohortOut.model_validate(c) for c in repo.list_cohorts()]


@router.delete("/cohorts/{name}", status_code=status.HTTP_204_NO_CONTENT)
def delete_cohort(name: str, ctx: RequestContext = Depends(admin_context)) -> None:
    """Remove a cohort's row; its tenants stay in it as a flat cohort (admin)."""
    with ctx.tx() as repo:
        repo.delete_cohort(name)
    admit_after_change(ctx.control)
