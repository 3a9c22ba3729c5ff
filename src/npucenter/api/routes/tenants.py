"""Tenants, API keys and ``whoami``: admins manage all, a tenant sees only itself."""

from __future__ import annotations

from fastapi import APIRouter, Depends, status

from npucenter.api.context import RequestContext, admin_context, caller_context
from npucenter.api.schemas import KeyCreated, KeyIn, KeyOut, TenantIn, TenantOut, WhoAmI
from npucenter.errors import PermissionDeniedError

__all__ = ["router"]

router = APIRouter(prefix="/api", tags=["tenants"])


@router.get("/whoami", response_model=WhoAmI)
def whoami(ctx: RequestContext = Depends(caller_context)) -> WhoAmI:
    """The caller's scope and tenant."""
    p = ctx.principal
    return WhoAmI(
        scope=p.scope, tenant_id=p.tenant_id, tenant=p.tenant or None, key_id=p.key_row_id
    )


@router.post("/tenants", response_model=TenantOut, status_code=status.HTTP_201_CREATED)
def create_tenant(body: TenantIn, ctx: RequestContext = Depends(admin_context)) -> TenantOut:
    """Create a tenant (admin)."""
    with ctx.tx() as repo:
        return TenantOut.model_validate(repo.create_tenant(body.name, body.kind))


@router.get("/tenants", response_model=list[TenantOut])
def list_tenants(ctx: RequestContext = Depends(caller_context)) -> list[TenantOut]:
    """Every tenant (admin) or the caller's own."""
    with ctx.tx() as repo:
        return [TenantOut.model_validate(t) for t in repo.list_tenants(tenant_id=ctx.scope)]


@router.get("/tenants/{ref}", response_model=TenantOut)
def get_tenant(ref: str, ctx: RequestContext = Depends(caller_context)) -> TenantOut:
    """A tenant by id or name."""
    with ctx.tx() as repo:
        return TenantOut.model_validate(repo.get_tenant(ref, tenant_id=ctx.scope))


@router.post("/keys", response_model=KeyCreated, status_code=status.HTTP_201_CREATED)
def create_key(body: KeyIn, ctx: RequestContext = Depends(caller_context)) -> KeyCreated:
    """Create a key; the secret is in this response only. Tenants create keys for themselves."""
    with ctx.tx() as repo:
        if body.scope == "admin":
            if not ctx.is_admin:
                raise PermissionDeniedError("only an admin can create admin keys")
            key, secret = repo.create_key(tenant_id=None, scope="admin", name=body.name)
        else:
            tenant = ctx.owner(repo, body.tenant)
            key, secret = repo.create_key(tenant_id=tenant.id, scope="tenant", name=body.name)
        return KeyCreated(**KeyOut.model_validate(key).model_dump(), key=secret)


@router.get("/keys", response_model=list[KeyOut])
def list_keys(ctx: RequestContext = Depends(caller_context)) -> list[KeyOut]:
    """Keys (never secrets): all (admin) or the caller's tenant's."""
    with ctx.tx() as repo:
        return [KeyOut.model_validate(k) for k in repo.list_keys(tenant_id=ctx.scope)]


@router.delete("/keys/{key_id}", response_model=KeyOut)
def revoke_key(key_id: int, ctx: RequestContext = Depends(caller_context)) -> KeyOut:
    """Revoke a key."""
    with ctx.tx() as repo:
        return KeyOut.model_validate(repo.revoke_key(key_id, tenant_id=ctx.scope))
