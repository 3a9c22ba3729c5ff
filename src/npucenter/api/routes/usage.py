"""The usage ledger: read (tenants their own), summarise, append (admins/metering), checkpoint."""

from __future__ import annotations

from collections import defaultdict

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
    tenant: str | None = Query(default=None), ctx: RequestContext = Depends(caller_context)
) -> list[UsageSummaryRow]:
    """Totals per tenant and kind."""
    rows = list_usage(tenant=tenant, kind=None, since_s=None, limit=100_000, ctx=ctx)
    totals: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0.0, 0, 0, 0.0, 0])
    for row in rows:
        t = totals[(row.tenant, row.kind)]
        t[0] += row.device_seconds
        t[1] += row.tokens_in
        t[2] += row.tokens_out
        t[3] += row.energy_j
        t[4] += 1
    return [
        UsageSummaryRow(
            tenant=tn,
            kind=k,
            device_seconds=v[0],
            tokens_in=int(v[1]),
            tokens_out=int(v[2]),
            energy_j=v[3],
            num_entries=int(v[4]),
        )
        for (tn, k), v in sorted(totals.items())
    ]


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
