"""Tenants: creation and lookup in the caller's scope (API keys are in :mod:`.keys`).

A tenant-scoped caller sees another tenant as not found, never revealed.
"""

from __future__ import annotations

from sqlalchemy import select

from npucenter.errors import ConflictError, NotFoundError
from npucenter.store.base import StoreBase, check_choice, check_name, is_row_id
from npucenter.store.models import Tenant

__all__ = ["TENANT_KINDS", "TenantStore"]

TENANT_KINDS = ("company", "university", "research_institute")


class TenantStore(StoreBase):
    """Tenants."""

    def create_tenant(self, name: str, kind: str) -> Tenant:
        """Create a tenant; a duplicate name raises ConflictError."""
        check_name("tenant name", name)
        check_choice("kind", kind, TENANT_KINDS)
        if self.session.scalar(select(Tenant).where(Tenant.name == name)) is not None:
            raise ConflictError(f"tenant {name!r} exists already", details={"name": name})
        tenant = Tenant(name=name, kind=kind, created_at_s=self.now_s())
        self.session.add(tenant)
        self.session.flush()
        return tenant

    def list_tenants(self, *, tenant_id: int | None = None) -> list[Tenant]:
        """All tenants (or only ``tenant_id``'s own record)."""
        stmt = select(Tenant).order_by(Tenant.id)
        if tenant_id is not None:
            stmt = stmt.where(Tenant.id == tenant_id)
        return list(self.session.scalars(stmt))

    def get_tenant(self, ref: str | int, *, tenant_id: int | None = None) -> Tenant:
        """A tenant by id or name; outside the caller's scope it is not found."""
        if isinstance(ref, int) or is_row_id(str(ref)):
            tenant = self.row(Tenant, int(ref))
        else:
            tenant = self.session.scalar(select(Tenant).where(Tenant.name == ref))
        if tenant is None or (tenant_id is not None and tenant.id != tenant_id):
            raise NotFoundError("tenant", str(ref))
        return tenant

    # --- API keys -----------------------------------------------------------------------
