"""Quota accounting of one cycle: who holds which cards, cohort lending pools, limits and budgets.

The state lives only for one call; inputs are never mutated. The fair-sharing, preemption and
cycle layers (``fair_sharing``, ``preemption``, ``cycle``) extend :class:`Ledger` in that order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

from npucenter.errors import InvalidConfigError
from npucenter.policy.admission.topology import ServerState, TypeState
from npucenter.policy.admission.types import (
    AdmissionPolicy,
    AdmissionSnapshot,
    Admitted,
    PendingReason,
    Preemption,
    PreemptionPolicy,
    PreemptionReason,
    Server,
    Workload,
)
from npucenter.policy.quota import PriorityClass, TenantQuota

__all__ = ["Ledger", "Limits"]


@dataclass(frozen=True, slots=True)
class Limits:
    """One tenant's limits on one device type, resolved once per cycle."""

    nominal: int
    guaranteed: int
    max_cards: float
    pool: tuple[str, str]  # (cohort key, device type)
    pool_cap: int  # cards the cohort lends in all (sum of its members' lending limits)
    budget_s: float | None  # device-seconds budget, None: none


class Ledger:
    """Mutable working state of one cycle: the fleet, quotas, cohort pools and who holds what."""

    def __init__(self, snapshot: AdmissionSnapshot, now_s: float, policy: AdmissionPolicy) -> None:
        self.now_s = now_s
        self.policy = policy
        self.quotas: dict[str, TenantQuota] = {q.tenant: q for q in snapshot.quotas}
        self.known_tenants = frozenset(self.quotas)
        self.cohort_key: dict[str, str] = {}
        self.members: dict[str, list[str]] = {}
        self.types: dict[str, TypeState] = {}
        self.server_at: dict[str, tuple[str, int]] = {}  # server_id -> (device_type, index)
        self.running: dict[str, Admitted] = {}
        self.by_tenant_type: dict[tuple[str, str], dict[str, Admitted]] = {}
        self.usage: dict[tuple[str, str], int] = {}
        self.used_by_tenant: dict[str, dict[str, int]] = {}
        self.share_cache: dict[str, float] = {}
        self.pool_used: dict[tuple[str, str], int] = {}
        self.pool_cap: dict[tuple[str, str], int] = {}
        self.budget_used: dict[tuple[str, str], float] = {}
        self.limit_cache: dict[tuple[str, str], Limits] = {}
        self.priority: dict[str, PriorityClass] = {}  # pending workload id -> effective class
        self.victim_orders: dict[tuple[str, str], list[Admitted]] = {}
        # (tenant, type, cards, tp) -> blocker for the whole cycle, or False for none
        self.static_cache: dict[tuple[str, str, int, int], PendingReason | Literal[False]] = {}
        self.may_reclaim = policy.reclaim_within_cohort is not PreemptionPolicy.NEVER
        self.may_preempt_own = policy.within_tenant is not PreemptionPolicy.NEVER
        self.may_preempt = self.may_reclaim or self.may_preempt_own
        # (tenant, type) -> lowest priority class of work running before the cycle
        self.lowest_running: dict[tuple[str, str], int] = {}
        self.victim_failures: dict[tuple[str, str, int, int], tuple[int, int]] = {}
        self.admitted: list[Admitted] = []
        self.admitted_now: set[str] = set()
        self.preempted: list[Preemption] = []
        self.pending: list[tuple[str, Workload, PendingReason]] = []  # (id, workload, reason)
        self._build_fleet(snapshot.fleet)
        for quota in snapshot.quotas:
            self._add_tenant(quota)
        for tenant, per_type in snapshot.device_seconds_used.items():
            for device_type, used_s in per_type.items():
                self.budget_used[(tenant, device_type)] = float(used_s)
        self._load_running(snapshot.running)

    # -- setup --------------------------------------------------------------------------------

    def _build_fleet(self, fleet: Sequence[Server]) -> None:
        by_type: dict[str, list[Server]] = {}
        for server in fleet:
            by_type.setdefault(server.device_type, []).append(server)
        for device_type, servers in by_type.items():
            ordered = sorted(servers, key=lambda s: s.server_id)
            self.types[device_type] = TypeState([ServerState(s) for s in ordered])
            for i, s in enumerate(ordered):
                self.server_at[s.server_id] = (device_type, i)

    def _add_tenant(self, quota: TenantQuota) -> None:
        self.quotas[quota.tenant] = quota
        key = quota.cohort if quota.cohort is not None else "\0" + quota.tenant
        self.cohort_key[quota.tenant] = key
        self.members.setdefault(key, []).append(quota.tenant)
        for device_type in quota.nominal_cards:
            pool = (key, device_type)
            self.pool_cap[pool] = self.pool_cap.get(pool, 0) + quota.lending_limit(device_type)

    def _load_running(self, running: Sequence[Admitted]) -> None:
        holder: dict[tuple[str, int], str] = {}
        for entry in sorted(running, key=lambda a: a.workload_id):
            if entry.tenant not in self.quotas:  # a tenant deleted while its work runs
                self._add_tenant(TenantQuota(tenant=entry.tenant))
            ceiling = self.quotas[entry.tenant].priority_class
            if entry.priority_class > ceiling:  # ranked as its tenant's class at most
                entry = replace(entry, priority_class=ceiling)
            for card in entry.card_indices:
                other = holder.get((entry.server_id, card))
                if other is not None:
                    raise InvalidConfigError(
                        "running",
                        entry.workload_id,
                        f"card {card} of {entry.server_id} is also held by {other}",
                    )
                holder[(entry.server_id, card)] = entry.workload_id
            problem = self._placement_problem(entry)
            if problem:
                self.preempted.append(
                    Preemption(
                        workload_id=entry.workload_id,
                        tenant=entry.tenant,
                        reason=PreemptionReason.UNHEALTHY,
                        by_workload_id=None,
                        message=f"{problem}; requeue it",
                    )
                )
                continue
            device_type, index = self.server_at[entry.server_id]
            self.types[device_type].take(index, entry.card_indices)
            self._account(entry, +1)
            key = (entry.tenant, entry.device_type)
            self.lowest_running[key] = min(
                self.lowest_running.get(key, int(entry.priority_class)), int(entry.priority_class)
            )

    def _placement_problem(self, entry: Admitted) -> str:
        where = self.server_at.get(entry.server_id)
        if where is None:
            return f"server {entry.server_id} is no longer in the fleet"
        device_type, index = where
        state = self.types[device_type].servers[index]
        if device_type != entry.device_type:
            return f"server {entry.server_id} now holds {device_type}, not {entry.device_type}"
        if not state.server.healthy:
            return f"server {entry.server_id} is unhealthy"
        for card in entry.card_indices:
            if card >= len(state.free) or not state.free[card]:
                return f"card {card} of {entry.server_id} is unhealthy or gone"
        return ""

    # -- accounting ---------------------------------------------------------------------------

    def _account(self, entry: Admitted, sign: int) -> None:
        tenant, device_type, cards = entry.tenant, entry.device_type, entry.num_cards
        quota = self.quotas[tenant]
        used = self.usage.get((tenant, device_type), 0)
        guaranteed = quota.guaranteed(device_type)
        pool = (self.cohort_key[tenant], device_type)
        before = max(0, used - guaranteed)
        used += sign * cards
        self.usage[(tenant, device_type)] = used
        self.used_by_tenant.setdefault(tenant, {})[device_type] = used
        self.share_cache.pop(tenant, None)
        self.pool_used[pool] = self.pool_used.get(pool, 0) + max(0, used - guaranteed) - before
        held = self.by_tenant_type.setdefault((tenant, device_type), {})
        if sign > 0:
            self.running[entry.workload_id] = entry
            held[entry.workload_id] = entry
        else:
            del self.running[entry.workload_id]
            del held[entry.workload_id]

    # -- checks -------------------------------------------------------------------------------

    def limits(self, tenant: str, device_type: str) -> Limits:
        key = (tenant, device_type)
        found = self.limit_cache.get(key)
        if found is None:
            quota = self.quotas[tenant]
            found = Limits(
                nominal=quota.nominal(device_type),
                guaranteed=quota.guaranteed(device_type),
                max_cards=quota.max_cards(device_type),
                pool=(self.cohort_key[tenant], device_type),
                pool_cap=self.pool_cap.get((self.cohort_key[tenant], device_type), 0),
                budget_s=quota.device_seconds_budget.get(device_type),
            )
            self.limit_cache[key] = found
        return found

    def _static_reason(self, w: Workload, lim: Limits) -> PendingReason | Literal[False]:
        """Blockers that hold for the whole cycle: topology of the fleet and quota size."""
        reason: PendingReason | Literal[False] = False
        types = self.types.get(w.device_type)
        if types is None or not types.could_ever_fit(w.num_cards, w.tp_size):
            reason = PendingReason.UNSCHEDULABLE
        elif w.num_cards > lim.max_cards:
            reason = PendingReason.QUOTA_LIMIT
        self.static_cache[(w.tenant, w.device_type, w.num_cards, w.tp_size)] = reason
        return reason

    def _over_budget(self, w: Workload, budget_s: float) -> bool:
        used_s = self.budget_used.get((w.tenant, w.device_type), 0.0)
        return used_s >= budget_s or used_s + w.num_cards * (w.max_duration_s or 0.0) > budget_s

    def _quota_reason(
        self, w: Workload, freed: dict[str, int] | None = None
    ) -> PendingReason | None:
        """Why the quota or cohort forbids ``w`` now, with ``freed`` cards per tenant given back."""
        key = (w.tenant, w.device_type)
        lim = self.limit_cache.get(key) or self.limits(w.tenant, w.device_type)
        used = self.usage.get(key, 0)
        if freed:
            used -= freed.get(w.tenant, 0)
        if used + w.num_cards > lim.max_cards:
            return PendingReason.QUOTA_IN_USE
        need = max(0, used + w.num_cards - lim.guaranteed) - max(0, used - lim.guaranteed)
        if not need:
            return None
        pool_used = self.pool_used.get(lim.pool, 0)
        if freed:
            for other, cards_back in freed.items():
                other_lim = self.limits(other, w.device_type)
                if cards_back and other_lim.pool == lim.pool:
                    g = other_lim.guaranteed
                    u = self.usage.get((other, w.device_type), 0)
                    pool_used -= max(0, u - g) - max(0, u - cards_back - g)
        if pool_used + need > lim.pool_cap:
            return PendingReason.COHORT_EXHAUSTED
        return None

    def priority_of(self, w: Workload) -> PriorityClass:
        ceiling = self.quotas[w.tenant].priority_class
        return ceiling if w.priority_class is None else min(w.priority_class, ceiling)

    def within_nominal(self, w: Workload) -> bool:
        used = self.usage.get((w.tenant, w.device_type), 0)
        return used + w.num_cards <= self.limits(w.tenant, w.device_type).nominal
