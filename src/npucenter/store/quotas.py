"""Tenants' quotas per device type, their values for the gateway and the admission snapshot,
and the priority class a workload may take.

Cohort, priority class and token rate are the tenant's: setting them on one row sets every row.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select

from npucenter.errors import InvalidConfigError, NotFoundError
from npucenter.policy.quota import CohortQuota, StopPolicy
from npucenter.store.base import canonical_device, check_choice, check_name
from npucenter.store.models import Cohort, Quota, Tenant
from npucenter.store.tenants import TenantStore

__all__ = ["PRIORITY_CLASSES", "STOP_POLICIES", "QuotaStore", "QuotaView"]

PRIORITY_CLASSES = ("production", "research", "education", "best-effort")  # highest first
STOP_POLICIES = tuple(p.value for p in StopPolicy)


@dataclass(frozen=True, slots=True, kw_only=True)
class QuotaView:
    """A tenant's quota for one device type, as the gateway and the admission snapshot see it.

    ``cohort``, ``priority_class``, ``tokens_per_s``, ``stop_policy``,
    ``borrow_unnamed_device_types`` and ``fair_share_weight`` are the same on every row of a
    tenant.
    """

    tenant_id: int
    tenant_name: str
    device_type: str
    nominal_cards: int
    borrowing_limit_cards: int | None
    lending_limit_cards: int | None
    cohort: str | None
    priority_class: str
    tokens_per_s: float | None
    stop_policy: str = "none"
    borrow_unnamed_device_types: bool = False
    fair_share_weight: float = 1.0


class QuotaStore(TenantStore):
    """Quotas (reads tenants for names)."""

    def set_quota(
        self,
        tenant: Tenant,
        device_type: str,
        *,
        nominal_cards: int,
        borrowing_limit_cards: int | None = None,
        lending_limit_cards: int | None = None,
        cohort: str | None = None,
        priority_class: str = "research",
        tokens_per_s: float | None = None,
        stop_policy: str = "none",
        borrow_unnamed_device_types: bool = False,
        fair_share_weight: float = 1.0,
    ) -> Quota:
        """Create or replace the tenant's quota for a device type."""
        device_id = canonical_device(device_type)
        for field, value in (
            ("nominal_cards", nominal_cards),
            ("borrowing_limit_cards", borrowing_limit_cards),
            ("lending_limit_cards", lending_limit_cards),
            ("tokens_per_s", tokens_per_s),
        ):
            if value is not None and value < 0:
                raise InvalidConfigError(field, value, "must be >= 0")
        if lending_limit_cards is not None and lending_limit_cards > nominal_cards:
            raise InvalidConfigError(
                "lending_limit_cards", lending_limit_cards, "cannot exceed nominal_cards"
            )
        if cohort is not None:
            check_name("cohort", cohort)
        check_choice("priority_class", priority_class, PRIORITY_CLASSES)
        check_choice("stop_policy", stop_policy, STOP_POLICIES)
        if not fair_share_weight >= 0:
            raise InvalidConfigError("fair_share_weight", fair_share_weight, "must be >= 0")
        quota = self.session.scalar(
            select(Quota).where(Quota.tenant_id == tenant.id, Quota.device_type == device_id)
        )
        if quota is None:
            quota = Quota(tenant_id=tenant.id, device_type=device_id)
            self.session.add(quota)
        quota.nominal_cards = nominal_cards
        quota.borrowing_limit_cards = borrowing_limit_cards
        quota.lending_limit_cards = lending_limit_cards
        quota.cohort, quota.priority_class, quota.updated_at_s = (
            cohort,
            priority_class,
            self.now_s(),
        )
        # Cohort, priority class and token rate are the tenant's (as in policy.TenantQuota):
        # setting them on one row sets them on every row of the tenant.
        for row in [quota, *self.list_quotas(tenant_id=tenant.id)]:
            row.cohort = cohort
            row.priority_class = priority_class
            row.tokens_per_s = tokens_per_s
            row.stop_policy = stop_policy
            row.borrow_unnamed_device_types = borrow_unnamed_device_types
            row.fair_share_weight = fair_share_weight
            row.updated_at_s = self.now_s()
        self.session.flush()
        return quota

    def list_quotas(self, *, tenant_id: int | None = None) -> list[Quota]:
        """Quotas, all or one tenant's."""
        stmt = select(Quota).order_by(Quota.tenant_id, Quota.device_type)
        if tenant_id is not None:
            stmt = stmt.where(Quota.tenant_id == tenant_id)
        return list(self.session.scalars(stmt))

    def delete_quota(self, quota_id: int) -> None:
        """Remove a quota row (the tenant keeps what it holds until the next reclaim)."""
        quota = self.row(Quota, quota_id)
        if quota is None:
            raise NotFoundError("quota", str(quota_id))
        self.session.delete(quota)

    def tenant_quotas(self, tenant_id: int) -> list[QuotaView]:
        """The tenant's quotas as values (for the gateway's token limits and the snapshot)."""
        tenant = self.get_tenant(tenant_id)
        return [_quota_view(q, tenant.name) for q in self.list_quotas(tenant_id=tenant_id)]

    def all_quota_views(self) -> list[QuotaView]:
        """Every quota as a value, with tenant names."""
        names = {t.id: t.name for t in self.list_tenants()}
        return [_quota_view(q, names[q.tenant_id]) for q in self.list_quotas()]

    def set_cohort(
        self,
        name: str,
        *,
        parent: str | None = None,
        nominal_cards: dict[str, int] | None = None,
        borrowing_limit_cards: dict[str, int] | None = None,
        lending_limit_cards: dict[str, int] | None = None,
        fair_share_weight: float = 1.0,
    ) -> Cohort:
        """Create or replace a cohort's parent and cards of its own.

        Raises:
            InvalidConfigError: a bad value, or a parent chain that loops back to ``name``.
        """
        check_name("cohort", name)
        if parent is not None:
            check_name("parent", parent)
        canon = {
            field: {canonical_device(d): n for d, n in (value or {}).items()}
            for field, value in (
                ("nominal_cards", nominal_cards),
                ("borrowing_limit_cards", borrowing_limit_cards),
                ("lending_limit_cards", lending_limit_cards),
            )
        }
        spec = CohortQuota(name=name, parent=parent, fair_share_weight=fair_share_weight, **canon)
        parents = {c.name: c.parent for c in self.list_cohorts()}
        parents[name] = parent
        at, seen = parent, {name}
        while at is not None:
            if at in seen:
                raise InvalidConfigError(
                    "parent", parent, f"the cohorts' parents loop back to {at}"
                )
            seen.add(at)
            at = parents.get(at)
        row = self.session.scalar(select(Cohort).where(Cohort.name == name))
        if row is None:
            row = Cohort(name=name)
            self.session.add(row)
        row.parent = spec.parent
        row.nominal_cards = dict(spec.nominal_cards)
        row.borrowing_limit_cards = dict(spec.borrowing_limit_cards)
        row.lending_limit_cards = dict(spec.lending_limit_cards)
        row.fair_share_weight = spec.fair_share_weight
        row.updated_at_s = self.now_s()
        self.session.flush()
        return row

    def list_cohorts(self) -> list[Cohort]:
        """Cohorts with a parent or cards of their own, by name."""
        return list(self.session.scalars(select(Cohort).order_by(Cohort.name)))

    def delete_cohort(self, name: str) -> None:
        """Remove a cohort's row (its tenants stay in it, now a flat cohort).

        Raises:
            NotFoundError: no such cohort.
        """
        row = self.session.scalar(select(Cohort).where(Cohort.name == name))
        if row is None:
            raise NotFoundError("cohort", name)
        self.session.delete(row)

    def cohort_quotas(self) -> tuple[CohortQuota, ...]:
        """Every cohort row as the admission policy's value."""
        return tuple(
            CohortQuota(
                name=c.name,
                parent=c.parent,
                nominal_cards=c.nominal_cards,
                borrowing_limit_cards=c.borrowing_limit_cards,
                lending_limit_cards=c.lending_limit_cards,
                fair_share_weight=c.fair_share_weight,
            )
            for c in self.list_cohorts()
        )

    def priority_for(self, tenant_id: int, device_type: str, requested: str | None) -> str:
        """The workload's priority: the quota's class, or a lower one the caller asked for."""
        quota = self.session.scalar(
            select(Quota).where(Quota.tenant_id == tenant_id, Quota.device_type == device_type)
        )
        ceiling = quota.priority_class if quota else "best-effort"
        if requested is None:
            return ceiling
        check_choice("priority_class", requested, PRIORITY_CLASSES)
        if PRIORITY_CLASSES.index(requested) < PRIORITY_CLASSES.index(ceiling):
            raise InvalidConfigError(
                "priority_class",
                requested,
                f"above the tenant's quota class {ceiling!r} for {device_type}",
            )
        return requested


def _quota_view(q: Quota, tenant_name: str) -> QuotaView:
    return QuotaView(
        tenant_id=q.tenant_id,
        tenant_name=tenant_name,
        device_type=q.device_type,
        nominal_cards=q.nominal_cards,
        borrowing_limit_cards=q.borrowing_limit_cards,
        lending_limit_cards=q.lending_limit_cards,
        cohort=q.cohort,
        priority_class=q.priority_class,
        tokens_per_s=q.tokens_per_s,
        stop_policy=q.stop_policy,
        borrow_unnamed_device_types=q.borrow_unnamed_device_types,
        fair_share_weight=q.fair_share_weight,
    )
