"""The usage ledger: read (tenants their own), summarise, append (admins/metering), checkpoint."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, status

from npucenter.api.context import RequestContext, admin_context, caller_context
from npucenter.api.schemas import UsageIn, UsageOut, UsageSummaryRow
from npucenter.api.views import tenant_names, usage_out

__all__ = ["router"]

router = APIRouter(prefix="/api", tags=["usage"])


@router.get("/usage", response_model=list[UsageOut])
def list_usage(
    tenant: str | None = Query(default=None),
    kind: str | None = Query(default=None),
    since_s: float | None = Query(default=None),
    limit: int = Query(default=1000, ge=1, le=100_000),
    ctx: RequestContext = Depends(caller_context),
) -> list[UsageOut]:
    """Ledger rows, oldest first; a tenant sees only its own."""
    with ctx.tx() as repo:
        tenant_id = ctx.scope
        if tenant is not None:
            tenant_id = repo.get_tenant(tenant, tenant_id=ctx.scope).id
        names = tenant_names(repo)
        rows = repo.list_usage(tenant_id=tenant_id, kind=kind, since_s=since_s, limit=limit)
        return [usage_out(r, names) for r in rows]


@router.get("/usage/summary", response_model=list[UsageSummaryRow])
def usage_summary(
    tenant: Annotated[str | None, Query()] = None,
    kind: Annotated[str | None, Query()] = None,
    since_s: Annotated[float | None, Query()] = None,
    by: Annotated[str, Query(description="comma-separated: tenant, kind, model")] = "tenant,kind",
    bucket_s: Annotated[float | None, Query(ge=0.001, le=1e9)] = None,
    *,
    ctx: Annotated[RequestContext, Depends(caller_context)],
) -> list[UsageSummaryRow]:
    """Totals per tenant and kind (or what ``by`` names), per time bucket of ``bucket_s``
    seconds when given; summed by the database, whatever the ledger's length. (Plain
    defaults: the console calls this function directly with only what it needs.)"""
    groups = [g.strip() for g in by.split(",") if g.strip()]
    with ctx.tx() as repo:
        tenant_id = ctx.scope
        if tenant is not None:
            tenant_id = repo.get_tenant(tenant, tenant_id=ctx.scope).id
        names = tenant_names(repo)
        totals = repo.summarize_usage(
            by=groups, tenant_id=tenant_id, kind=kind, since_s=since_s, bucket_s=bucket_s
        )
    rows = [
        UsageSummaryRow(
            tenant=None if t.tenant_id is None else names.get(t.tenant_id, "?"),
            **{f: getattr(t, f) for f in UsageSummaryRow.model_fields if f != "tenant"},
        )
        for t in totals
    ]
    rows.sort(key=lambda r: (r.tenant or "", r.kind or "", r.model or "", r.bucket_start_s or 0))
    return rows


@router.post("/usage", response_model=UsageOut, status_code=status.HTTP_201_CREATED)
def append_usage(body: UsageIn, ctx: RequestContext = Depends(admin_context)) -> UsageOut:
    """Append one ledger row (admin, metering)."""
    with ctx.tx() as repo:
        tenant = repo.get_tenant(body.tenant)
        entry = repo.append_usage(tenant_id=tenant.id, **body.model_dump(exclude={"tenant"}))
        return usage_out(entry, tenant_names(repo))


@router.post("/usage/checkpoint", response_model=list[UsageOut])
def checkpoint_usage(ctx: RequestContext = Depends(admin_context)) -> list[UsageOut]:
    """Bill every held card up to now (admin; e.g. hourly)."""
    with ctx.tx() as repo:
        names = tenant_names(repo)
        return [usage_out(r, names) for r in repo.checkpoint_usage()]
