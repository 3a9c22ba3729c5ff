"""Who is calling: one API key's tenant, scopes, priority and request limits.

The one definition of a caller: the store's key lookup returns it, the control-plane API scopes
reads and writes by it, the gateway adds the tenant's limits and meters by it. Pure values.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from npucenter.errors import InvalidConfigError

__all__ = ["Principal", "TenantLimits"]


@dataclass(frozen=True, slots=True, kw_only=True)
class TenantLimits:
    """A tenant's gateway limits; ``None`` means unlimited."""

    requests_per_min: float | None = None
    tokens_per_s: float | None = None  # the tenant quota's token rate (policy.quota.TenantQuota)
    burst_tokens: float | None = None  # its bucket depth; None: tokens_per_s x 10 s
    token_quota: float | None = None  # tokens the tenant may use in total (its quota)

    def __post_init__(self) -> None:
        for name in ("requests_per_min", "tokens_per_s", "burst_tokens", "token_quota"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise InvalidConfigError(name, value, "must be >= 0 or unset")


@dataclass(frozen=True, slots=True, kw_only=True)
class Principal:
    """The caller behind one API key."""

    key_id: (
        str  # a non-secret id of the key (never the key), metered: "key-<row id>" from the store
    )
    key_row_id: int | None = None  # the store's row id of the key (None: a key outside the store)
    tenant: str  # the tenant's name; "" for an admin key of no tenant
    tenant_id: int | None = None  # the store's row id of the tenant (None: no tenant, or no store)
    scopes: frozenset[str] = field(default_factory=lambda: frozenset({"inference"}))
    is_admin: bool = False
    priority: int = 0  # higher is served first when requests wait
    weight: float = 1.0  # fair-share weight among tenants of one priority
    limits: TenantLimits = field(default_factory=TenantLimits)
    tokens_used: float = 0.0  # tokens counted against token_quota before this process started
    job_id: int | None = None  # a job's own key (scope "job"): /v1 and that job's result only

    @property
    def scope(self) -> str:
        """The control plane's scope of the key: ``"admin"`` or ``"tenant"``."""
        return "admin" if self.is_admin else "tenant"
