"""Tenants and their API keys: creation, lookup in the caller's scope, key hashing and revocation.

A key's secret is never stored; a tenant-scoped caller sees another tenant as not found.
"""

from __future__ import annotations

import hashlib
import secrets

from sqlalchemy import select

from npucenter.errors import AuthenticationError, ConflictError, InvalidConfigError, NotFoundError
from npucenter.policy.principal import Principal
from npucenter.store.base import StoreBase, check_choice, check_name
from npucenter.store.models import ApiKey, Tenant

__all__ = ["KEY_PREFIX", "TENANT_KINDS", "Principal", "TenantStore", "hash_secret", "new_secret"]

KEY_PREFIX = "npc_"
TENANT_KINDS = ("company", "university", "research_institute")


def new_secret() -> str:
    """A fresh API key secret: ``npc_`` and 43 URL-safe random characters."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_secret(secret: str) -> str:
    """The sha256 hex digest stored for a secret (keys are high-entropy, so no salt is needed)."""
    return hashlib.sha256(secret.encode()).hexdigest()


class TenantStore(StoreBase):
    """Tenants and API keys."""

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
        if isinstance(ref, int) or str(ref).isdigit():
            tenant = self.session.get(Tenant, int(ref))
        else:
            tenant = self.session.scalar(select(Tenant).where(Tenant.name == ref))
        if tenant is None or (tenant_id is not None and tenant.id != tenant_id):
            raise NotFoundError("tenant", str(ref))
        return tenant

    # --- API keys -----------------------------------------------------------------------
    def create_key(
        self, *, tenant_id: int | None, scope: str, name: str = "", secret: str | None = None
    ) -> tuple[ApiKey, str]:
        """Store a new key (hashed) and return it with its secret, which is never stored."""
        check_choice("scope", scope, ("admin", "tenant"))
        if (scope == "tenant") != (tenant_id is not None):
            raise InvalidConfigError("scope", scope, "tenant keys need a tenant; admin keys none")
        secret = secret or new_secret()
        key = ApiKey(
            prefix=secret[:12],
            secret_sha256=hash_secret(secret),
            tenant_id=tenant_id,
            scope=scope,
            name=name,
            created_at_s=self.now_s(),
        )
        self.session.add(key)
        self.session.flush()
        return key, secret

    def ensure_admin_key(self, secret: str | None) -> str | None:
        """At first start store the admin key (``secret`` or a new one); return a new secret."""
        exists = self.session.scalar(
            select(ApiKey.id).where(ApiKey.scope == "admin", ApiKey.revoked_at_s.is_(None))
        )
        if exists is not None:
            return None
        _, stored = self.create_key(tenant_id=None, scope="admin", name="admin", secret=secret)
        return None if secret else stored

    def list_keys(self, *, tenant_id: int | None = None) -> list[ApiKey]:
        """Keys (never their secrets), all or one tenant's."""
        stmt = select(ApiKey).order_by(ApiKey.id)
        if tenant_id is not None:
            stmt = stmt.where(ApiKey.tenant_id == tenant_id)
        return list(self.session.scalars(stmt))

    def revoke_key(self, key_id: int, *, tenant_id: int | None = None) -> ApiKey:
        """Mark a key revoked; it stops authenticating at once."""
        key = self.session.get(ApiKey, key_id)
        if key is None or (tenant_id is not None and key.tenant_id != tenant_id):
            raise NotFoundError("key", str(key_id))
        if key.revoked_at_s is None:
            key.revoked_at_s = self.now_s()
        return key

    def lookup_key(self, secret: str) -> Principal:
        """The principal of a secret; raises AuthenticationError when unknown or revoked."""
        key = self.session.scalar(select(ApiKey).where(ApiKey.secret_sha256 == hash_secret(secret)))
        if key is None or key.revoked_at_s is not None:
            raise AuthenticationError(
                "the API key is not valid", hint="check NPUCENTER_API_KEY or ask for a new key"
            )
        name = ""
        if key.tenant_id is not None:
            tenant = self.session.get(Tenant, key.tenant_id)
            name = tenant.name if tenant else ""
        return Principal(
            key_id=f"key-{key.id}",
            key_row_id=key.id,
            tenant=name,
            tenant_id=key.tenant_id,
            scopes=frozenset({key.scope}),
            is_admin=key.scope == "admin",
        )
