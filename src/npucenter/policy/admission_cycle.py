"""One admission cycle: the working state behind :func:`npucenter.policy.admission.decide_admission`.

The state lives only for one call; inputs are never mutated. Everything that orders anything breaks
ties by id, so the decision does not depend on the order of the inputs.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Literal

from npucenter.errors import InvalidConfigError
from npucenter.policy.admission_types import (
    AdmissionDecision,
    AdmissionPolicy,
    AdmissionSnapshot,
    Admitted,
    Pending,
    PendingReason,
    Preemption,
    PreemptionPolicy,
    PreemptionReason,
    Server,
    TenantUsage,
    Workload,
)
from npucenter.policy.quota import PriorityClass, TenantQuota

__all__ = ["run_cycle"]

# NOTE(admission): the model, after Kueue's ClusterQueue/cohort, with cards per device type as
# the resources.  For tenant t and device type d let N = nominal, B = borrowing limit (None:
# unlimited), L = lending limit (default N), G = N - L (guaranteed, never lent) and U = cards in
# use.  A tenant may hold U <= N + B.  A cohort's lendable pool for d is the sum of its members'
# L; a member's use above its own G draws on that pool, so sum(max(0, U - G)) <= sum(L).  (A
# tenant without a cohort is a cohort of one with L = 0 and B = 0: U <= N.)  The cycle runs two
# phases over per-tenant queues (priority, then submission time).  Phase 1 admits only workloads
# that stay within their tenant's nominal quota, so an owner is served before any borrower; if
# one does not fit, it may reclaim by preempting cohort members' workloads while those members
# are above their nominal (lowest priority first, most recently admitted first).  Phase 2 admits
# borrowing workloads.  In each phase the next tenant served is the one whose head workload has
# the highest priority class, then the lowest dominant-resource share (max over d of U / fleet
# cards, divided by its weight), then the earliest submission; so capacity left over is shared
# out by DRF.  A workload may also preempt its own tenant's lower-priority workloads.  Victims are
# chosen greedily in candidate order until the workload fits (quota, cohort pool and topology),
# then any victim not needed is given back.  Only workloads running before the cycle are victims.


_PER_TENANT_TYPE = frozenset(
    {PendingReason.QUOTA_IN_USE, PendingReason.COHORT_EXHAUSTED, PendingReason.BUDGET_EXHAUSTED}
)


class _ServerState:
    """Free cards of one server, grouped by interconnect."""

    __slots__ = ("free", "free_in_group", "free_total", "group_of", "groups", "server")

    def __init__(self, server: Server) -> None:
        self.server = server
        self.group_of = [server.group_of(i) for i in range(server.num_cards)]
        self.free = [False] * server.num_cards
        self.groups: dict[int, list[int]] = {}
        for index in server.usable_card_indices():
            self.free[index] = True
            self.groups.setdefault(self.group_of[index], []).append(index)
        self.free_in_group = {g: len(cards) for g, cards in self.groups.items()}
        self.free_total = sum(self.free_in_group.values())

    def fits(self, num_cards: int, tp_size: int) -> bool:
        if self.free_total < num_cards:
            return False
        if tp_size == 1:
            return True
        return sum(n // tp_size for n in self.free_in_group.values()) >= num_cards // tp_size

    def pick(self, num_cards: int, tp_size: int) -> tuple[int, ...]:
        """Lowest free cards, each TP group in the tightest interconnect group that holds it."""
        counts = dict(self.free_in_group)
        taken: set[int] = set()
        chosen: list[int] = []
        for _ in range(num_cards // tp_size):
            fitting = [(n, g) for g, n in counts.items() if n >= tp_size]
            _, group = min(fitting)
            picked = [i for i in self.groups[group] if self.free[i] and i not in taken][:tp_size]
            taken.update(picked)
            chosen.extend(picked)
            counts[group] -= tp_size
        return tuple(chosen)

    def take(self, cards: Iterable[int]) -> None:
        for i in cards:
            self.free[i] = False
            self.free_in_group[self.group_of[i]] -= 1
            self.free_total -= 1

    def release(self, cards: Iterable[int]) -> None:
        for i in cards:
            self.free[i] = True
            self.free_in_group[self.group_of[i]] += 1
            self.free_total += 1


class _TypeState:
    """All servers of one device type, bucketed by free cards for best-fit search."""

    __slots__ = ("buckets", "capacity", "never_fits", "no_fit", "servers", "total_free")

    def __init__(self, servers: list[_ServerState]) -> None:
        self.servers = servers  # sorted by server id; the index is the tie-breaker
        top = max((s.server.num_cards for s in servers), default=0)
        self.buckets: list[set[int]] = [set() for _ in range(top + 1)]
        for i, s in enumerate(servers):
            self.buckets[s.free_total].add(i)
        self.capacity = sum(s.free_total for s in servers)
        self.total_free = self.capacity
        # (num_cards, tp_size) known not to fit now; valid until cards are released
        self.no_fit: set[tuple[int, int]] = set()
        self.never_fits: dict[tuple[int, int], bool] = {}

    def could_ever_fit(self, num_cards: int, tp_size: int) -> bool:
        key = (num_cards, tp_size)
        if key not in self.never_fits:
            self.never_fits[key] = not any(
                sum(len(c) // tp_size for c in s.groups.values()) * tp_size >= num_cards
                for s in self.servers
            )
        return not self.never_fits[key]

    def find(self, num_cards: int, tp_size: int) -> int | None:
        """The best-fit server (fewest free cards that still fit), lowest id first."""
        key = (num_cards, tp_size)
        if key in self.no_fit or self.total_free < num_cards:
            return None
        for free in range(num_cards, len(self.buckets)):
            bucket = self.buckets[free]
            if not bucket:
                continue
            if tp_size == 1:
                return min(bucket)
            for i in sorted(bucket):
                if self.servers[i].fits(num_cards, tp_size):
                    return i
        self.no_fit.add(key)
        return None

    def take(self, index: int, cards: Sequence[int]) -> None:
        s = self.servers[index]
        self.buckets[s.free_total].discard(index)
        s.take(cards)
        self.buckets[s.free_total].add(index)
        self.total_free -= len(cards)

    def release(self, index: int, cards: Sequence[int]) -> None:
        s = self.servers[index]
        self.buckets[s.free_total].discard(index)
        s.release(cards)
        self.buckets[s.free_total].add(index)
        self.total_free += len(cards)
        self.no_fit.clear()


@dataclass(frozen=True, slots=True)
class _Limits:
    nominal: int
    guaranteed: int
    max_cards: float
    pool: tuple[str, str]  # (cohort key, device type)
    pool_cap: int  # cards the cohort lends in all (sum of its members' lending limits)
    budget_s: float | None  # device-seconds budget, None: none


class _Cycle:
    """Mutable working state of one cycle."""

    def __init__(self, snapshot: AdmissionSnapshot, now_s: float, policy: AdmissionPolicy) -> None:
        self.now_s = now_s
        self.policy = policy
        self.quotas: dict[str, TenantQuota] = {q.tenant: q for q in snapshot.quotas}
        self.known_tenants = frozenset(self.quotas)
        self.cohort_key: dict[str, str] = {}
        self.members: dict[str, list[str]] = {}
        self.types: dict[str, _TypeState] = {}
        self.server_at: dict[str, tuple[str, int]] = {}  # server_id -> (device_type, index)
        self.running: dict[str, Admitted] = {}
        self.by_tenant_type: dict[tuple[str, str], dict[str, Admitted]] = {}
        self.usage: dict[tuple[str, str], int] = {}
        self.used_by_tenant: dict[str, dict[str, int]] = {}
        self.share_cache: dict[str, float] = {}
        self.pool_used: dict[tuple[str, str], int] = {}
        self.pool_cap: dict[tuple[str, str], int] = {}
        self.budget_used: dict[tuple[str, str], float] = {}
        self.limit_cache: dict[tuple[str, str], _Limits] = {}
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
            self.types[device_type] = _TypeState([_ServerState(s) for s in ordered])
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

    def dominant_share(self, tenant: str) -> float:
        """max over device types of cards held / fleet cards of that type, over the weight."""
        cached = self.share_cache.get(tenant)
        if cached is not None:
            return cached
        dominant = 0.0
        for device_type, used in self.used_by_tenant.get(tenant, {}).items():
            if used:
                types = self.types.get(device_type)
                capacity = types.capacity if types is not None else 0
                dominant = max(dominant, used / capacity if capacity else math.inf)
        weight = self.quotas[tenant].fair_share_weight
        value = (math.inf if dominant else 0.0) if weight == 0 else dominant / weight
        self.share_cache[tenant] = value
        return value

    def share(self, tenant: str) -> float:
        """The fair-sharing rank of a tenant (0 for all when fair sharing is off)."""
        return self.dominant_share(tenant) if self.policy.fair_sharing else 0.0

    # -- checks -------------------------------------------------------------------------------

    def limits(self, tenant: str, device_type: str) -> _Limits:
        key = (tenant, device_type)
        found = self.limit_cache.get(key)
        if found is None:
            quota = self.quotas[tenant]
            found = _Limits(
                nominal=quota.nominal(device_type),
                guaranteed=quota.guaranteed(device_type),
                max_cards=quota.max_cards(device_type),
                pool=(self.cohort_key[tenant], device_type),
                pool_cap=self.pool_cap.get((self.cohort_key[tenant], device_type), 0),
                budget_s=quota.device_seconds_budget.get(device_type),
            )
            self.limit_cache[key] = found
        return found

    def _static_reason(self, w: Workload, lim: _Limits) -> PendingReason | Literal[False]:
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

    def _message(self, w: Workload, reason: PendingReason) -> str:
        """One actionable line for a pending record, from the state at the end of the cycle."""
        quota = self.quotas.get(w.tenant)
        d = w.device_type
        used = self.usage.get((w.tenant, d), 0)
        if reason is PendingReason.UNKNOWN_TENANT:
            text = f"tenant {w.tenant} has no quota; ask the operator to set one"
        elif quota is None:  # pragma: no cover - every other reason has a quota
            text = reason.value
        elif reason is PendingReason.UNSCHEDULABLE:
            text = (
                f"no healthy {d} server can hold {w.num_cards} cards in TP groups of "
                f"{w.tp_size}; ask for fewer cards or another device type"
            )
        elif reason is PendingReason.QUOTA_LIMIT:
            text = (
                f"{w.num_cards} {d} cards exceed tenant {w.tenant}'s nominal + borrowing limit "
                f"of {quota.max_cards(d):g}; ask the operator for more quota"
            )
        elif reason is PendingReason.BUDGET_EXHAUSTED:
            used_s = self.budget_used.get((w.tenant, d), 0.0)
            text = (
                f"tenant {w.tenant} has used {used_s:g} of "
                f"{quota.device_seconds_budget.get(d, 0.0):g} {d} device-seconds; wait for "
                "the next period or ask for a larger budget"
            )
        elif reason is PendingReason.QUOTA_IN_USE:
            text = (
                f"tenant {w.tenant} holds {used} of its {quota.max_cards(d):g} {d} cards; "
                "it starts when the tenant's own work ends"
            )
        elif reason is PendingReason.COHORT_EXHAUSTED:
            pool = self.limits(w.tenant, d).pool
            left = self.pool_cap.get(pool, 0) - self.pool_used.get(pool, 0)
            text = (
                f"cohort {quota.cohort or '(none)'} has {max(0, left)} {d} cards left to lend; "
                "it starts when cohort members release cards"
            )
        else:
            text = (
                f"no {d} server has {w.num_cards} free cards in TP groups of {w.tp_size} "
                f"({self.types[d].total_free} free in all); it starts when cards free up"
            )
        return text

    # -- admission ----------------------------------------------------------------------------

    def priority_of(self, w: Workload) -> PriorityClass:
        ceiling = self.quotas[w.tenant].priority_class
        return ceiling if w.priority_class is None else min(w.priority_class, ceiling)

    def within_nominal(self, w: Workload) -> bool:
        used = self.usage.get((w.tenant, w.device_type), 0)
        return used + w.num_cards <= self.limits(w.tenant, w.device_type).nominal

    def try_admit(self, w: Workload, priority: PriorityClass) -> Admitted | PendingReason:
        """Admit ``w`` (preempting if allowed and needed), or say why it must wait."""
        key = (w.tenant, w.device_type)
        lim = self.limit_cache.get(key) or self.limits(w.tenant, w.device_type)
        static = self.static_cache.get((w.tenant, w.device_type, w.num_cards, w.tp_size))
        if static is None:
            static = self._static_reason(w, lim)
        if static:
            return static
        if lim.budget_s is not None and self._over_budget(w, lim.budget_s):
            return PendingReason.BUDGET_EXHAUSTED
        types = self.types[w.device_type]
        # the quota and cohort checks of _quota_reason, inlined: this is the hot path
        used = self.usage.get(key, 0)
        after = used + w.num_cards
        reason: PendingReason | None = None
        if after > lim.max_cards:
            reason = PendingReason.QUOTA_IN_USE
        elif after > lim.guaranteed:
            g = lim.guaranteed
            need = after - g - (used - g if used > g else 0)
            if self.pool_used.get(lim.pool, 0) + need > lim.pool_cap:
                reason = PendingReason.COHORT_EXHAUSTED
        index = None if reason else types.find(w.num_cards, w.tp_size)
        victims: list[Admitted] = []
        if index is None:
            reason = reason or PendingReason.NO_CAPACITY
            if not self.may_preempt:
                return reason
            lowest = self.lowest_running.get(key)  # a lower bound: victims only leave
            if (after > lim.nominal or not self.may_reclaim) and (
                lowest is None or lowest >= priority or not self.may_preempt_own
            ):
                return reason  # no reclaim (it would borrow) and nothing of its own to displace
            # Between preemptions, candidates only shrink and usage only grows, so a failure
            # for (tenant, type, tp, priority) at c cards stands for any c' >= c until the next.
            fail_key = (w.tenant, w.device_type, w.tp_size, int(priority))
            failed = self.victim_failures.get(fail_key)
            if failed is not None and failed[0] == len(self.preempted) and w.num_cards >= failed[1]:
                return reason
            found = self._search_victims(w, priority)
            if found is None:
                self.victim_failures[fail_key] = (len(self.preempted), w.num_cards)
                return reason
            victims, index = found
        for victim in victims:
            self._preempt(victim, w, priority)
        return self._place(w, priority, index)

    def _place(self, w: Workload, priority: PriorityClass, index: int) -> Admitted:
        types = self.types[w.device_type]
        used = self.usage.get((w.tenant, w.device_type), 0)
        nominal = self.limits(w.tenant, w.device_type).nominal
        cards = types.servers[index].pick(w.num_cards, w.tp_size)
        placed = Admitted(
            workload_id=w.workload_id,
            tenant=w.tenant,
            kind=w.kind,
            device_type=w.device_type,
            server_id=types.servers[index].server.server_id,
            card_indices=cards,
            tp_size=w.tp_size,
            priority_class=priority,
            admitted_s=self.now_s,
            borrowed_cards=max(0, used + w.num_cards - nominal) - max(0, used - nominal),
            max_duration_s=w.max_duration_s,
        )
        types.take(index, cards)
        self._account(placed, +1)
        if w.max_duration_s is not None:
            key = (w.tenant, w.device_type)
            self.budget_used[key] = self.budget_used.get(key, 0.0) + w.num_cards * w.max_duration_s
        self.admitted.append(placed)
        self.admitted_now.add(w.workload_id)
        return placed

    def _preempt(self, victim: Admitted, by: Workload, priority: PriorityClass) -> None:
        own = victim.tenant == by.tenant
        reason = PreemptionReason.PRIORITY if own else PreemptionReason.RECLAIM
        message = (
            f"preempted for {by.workload_id} ({priority.label}) of the same tenant"
            if own
            else f"tenant {by.tenant} reclaimed its nominal {by.device_type} cards for "
            f"{by.workload_id}; requeue it"
        )
        device_type, index = self.server_at[victim.server_id]
        self.types[device_type].release(index, victim.card_indices)
        self._account(victim, -1)
        self.preempted.append(
            Preemption(
                workload_id=victim.workload_id,
                tenant=victim.tenant,
                reason=reason,
                by_workload_id=by.workload_id,
                message=message,
            )
        )

    # -- preemption ---------------------------------------------------------------------------

    def _candidates(self, w: Workload, priority: PriorityClass) -> list[Admitted]:
        """Running workloads ``w`` may preempt, in the order they are tried."""
        out: list[Admitted] = []
        running = self.running
        reclaim = self.policy.reclaim_within_cohort
        if reclaim is not PreemptionPolicy.NEVER and self.within_nominal(w):
            cohort = self.cohort_key[w.tenant]
            borrowing = {
                m: self._borrowing(m, w.device_type, 0)
                for m in self.members[cohort]
                if m != w.tenant
            }
            lower_only = reclaim is PreemptionPolicy.LOWER_PRIORITY
            for entry in self._victim_order(cohort, w.device_type, self.members[cohort]):
                if (
                    borrowing.get(entry.tenant)
                    and entry.workload_id in running
                    and not (lower_only and entry.priority_class >= priority)
                ):
                    out.append(entry)
        if self.policy.within_tenant is not PreemptionPolicy.NEVER:
            for entry in self._victim_order("\0own", w.device_type, [w.tenant]):
                if entry.priority_class >= priority:
                    break  # sorted by priority: the rest rank at least as high
                if entry.workload_id in running:
                    out.append(entry)
        return out

    def _victim_order(self, group: str, device_type: str, tenants: list[str]) -> list[Admitted]:
        """Work running before the cycle on ``device_type`` of ``tenants``, in victim order:
        lowest priority, then most recently admitted, then id. Built once per cycle; entries
        preempted since are filtered by the caller."""
        key = (group if group != "\0own" else "\0own\0" + tenants[0], device_type)
        order = self.victim_orders.get(key)
        if order is None:
            order = sorted(
                (
                    entry
                    for tenant in tenants
                    for entry in self.by_tenant_type.get((tenant, device_type), {}).values()
                    if entry.workload_id not in self.admitted_now
                ),
                key=lambda e: (e.priority_class, -e.admitted_s, e.workload_id),
            )
            self.victim_orders[key] = order
        return order

    def _borrowing(self, tenant: str, device_type: str, freed: int) -> bool:
        used = self.usage.get((tenant, device_type), 0) - freed
        return used > self.quotas[tenant].nominal(device_type)

    def _search_victims(
        self, w: Workload, priority: PriorityClass
    ) -> tuple[list[Admitted], int] | None:
        """A minimal set of candidates whose removal lets ``w`` fit, and the server it gets.

        If some server could hold ``w`` already, only quota blocks it: victims are taken in
        candidate order. Otherwise victims must free one server: each server holding candidates
        is tried, and the set whose worst victim has the lowest priority (then the fewest
        victims, then the fewest cards) wins.
        """
        candidates = self._candidates(w, priority)
        if not candidates:
            return None
        if self.types[w.device_type].find(w.num_cards, w.tp_size) is not None:
            chosen = self._greedy(w, candidates, [])
            return None if chosen is None else self._pruned(w, chosen)
        on_server: dict[int, list[Admitted]] = {}  # servers in order of their first candidate
        lowest: dict[int, int] = {}  # server index -> lowest priority among its candidates
        server_at = self.server_at
        fewest_cards = w.num_cards
        for entry in candidates:
            index = server_at[entry.server_id][1]
            rank = int(entry.priority_class)
            local = on_server.get(index)
            if local is None:
                on_server[index] = [entry]
                lowest[index] = rank
            else:
                local.append(entry)
                if rank < lowest[index]:
                    lowest[index] = rank
            if len(entry.card_indices) < fewest_cards:
                fewest_cards = len(entry.card_indices)
        floor = (min(lowest.values()), 1, fewest_cards)
        best: list[Admitted] | None = None
        best_cost: tuple[int, int, int, int] | None = None
        for index, local in on_server.items():
            if best_cost is not None:
                if best_cost[:3] <= floor:
                    break  # nothing beats one smallest victim of the lowest priority
                if lowest[index] > best_cost[0]:
                    continue
            chosen = self._clear_server(w, index, local, candidates)
            if chosen is None:
                continue
            cost = (
                max(int(c.priority_class) for c in chosen),
                len(chosen),
                sum(c.num_cards for c in chosen),
                index,
            )
            if best_cost is None or cost < best_cost:
                best, best_cost = chosen, cost
        return None if best is None else self._pruned(w, best)

    def _may_take(self, w: Workload, entry: Admitted, freed: dict[str, int]) -> bool:
        # a cohort member stops being a victim once it is back within its nominal quota
        return entry.tenant == w.tenant or self._borrowing(
            entry.tenant, w.device_type, freed.get(entry.tenant, 0)
        )

    def _greedy(
        self, w: Workload, candidates: list[Admitted], chosen: list[Admitted]
    ) -> list[Admitted] | None:
        """Extend ``chosen`` in candidate order until ``w`` fits anywhere; None if it never does."""
        chosen = list(chosen)
        freed = self._freed(chosen)
        taken = {id(c) for c in chosen}
        for entry in candidates:
            if id(entry) in taken or not self._may_take(w, entry, freed):
                continue
            chosen.append(entry)
            freed[entry.tenant] = freed.get(entry.tenant, 0) + entry.num_cards
            if self._fits_without(w, chosen, freed) is not None:
                return chosen
        return None

    def _clear_server(
        self, w: Workload, index: int, local: list[Admitted], candidates: list[Admitted]
    ) -> list[Admitted] | None:
        """Victims on server ``index`` until ``w`` fits there, then any needed for quota."""
        chosen: list[Admitted] = []
        freed: dict[str, int] = {}
        for entry in local:
            if not self._may_take(w, entry, freed):
                continue
            chosen.append(entry)
            freed[entry.tenant] = freed.get(entry.tenant, 0) + entry.num_cards
            if self._server_fits(w, index, chosen):
                break
        else:
            return None
        if self._quota_reason(w, freed) is None:
            return chosen
        return self._greedy(w, candidates, chosen)

    def _pruned(self, w: Workload, chosen: list[Admitted]) -> tuple[list[Admitted], int]:
        """Give back every victim not needed (last chosen first); the server ``w`` then gets."""
        freed = self._freed(chosen)
        index = self._fits_without(w, chosen, freed)
        assert index is not None  # chosen was built to fit
        for entry in list(reversed(chosen)):
            trial = [c for c in chosen if c is not entry]
            trial_freed = dict(freed)
            trial_freed[entry.tenant] -= entry.num_cards
            trial_index = self._fits_without(w, trial, trial_freed)
            if trial_index is not None:
                chosen, freed, index = trial, trial_freed, trial_index
        return chosen, index

    @staticmethod
    def _freed(victims: list[Admitted]) -> dict[str, int]:
        freed: dict[str, int] = {}
        for entry in victims:
            freed[entry.tenant] = freed.get(entry.tenant, 0) + entry.num_cards
        return freed

    def _server_fits(self, w: Workload, index: int, victims: list[Admitted]) -> bool:
        s = self.types[w.device_type].servers[index]
        back = [
            c for v in victims if self.server_at[v.server_id][1] == index for c in v.card_indices
        ]
        if s.free_total + len(back) < w.num_cards:
            return False
        if w.tp_size == 1:
            return True
        counts = dict(s.free_in_group)
        for card in back:
            counts[s.group_of[card]] += 1
        return sum(n // w.tp_size for n in counts.values()) >= w.num_cards // w.tp_size

    def _fits_without(
        self, w: Workload, victims: list[Admitted], freed: dict[str, int]
    ) -> int | None:
        """The best-fit server for ``w`` if ``victims`` were stopped, or None."""
        if self._quota_reason(w, freed) is not None:
            return None
        extra: dict[int, list[int]] = {}
        for victim in victims:
            extra.setdefault(self.server_at[victim.server_id][1], []).extend(victim.card_indices)
        types = self.types[w.device_type]
        best: tuple[int, int] | None = None
        for i, s in enumerate(types.servers):
            back = extra.get(i, ())
            total = s.free_total + len(back)
            if total < w.num_cards or (best is not None and total >= best[0]):
                continue
            if w.tp_size > 1:
                counts = dict(s.free_in_group)
                for card in back:
                    counts[s.group_of[card]] += 1
                groups = sum(n // w.tp_size for n in counts.values())
                if groups < w.num_cards // w.tp_size:
                    continue
            best = (total, i)
        return None if best is None else best[1]

    # -- the two phases -----------------------------------------------------------------------

    def run(self, pending: Sequence[Workload]) -> AdmissionDecision:
        queues: dict[str, list[Workload]] = {}
        seen: set[str] = set()
        for w in pending:
            if w.workload_id in seen:
                raise InvalidConfigError("pending", w.workload_id, "appears twice in the queue")
            if w.workload_id in self.running:
                raise InvalidConfigError("pending", w.workload_id, "is already running")
            seen.add(w.workload_id)
            if w.tenant not in self.known_tenants:
                self.pending.append((w.workload_id, w, PendingReason.UNKNOWN_TENANT))
                continue
            self.priority[w.workload_id] = self.priority_of(w)
            queues.setdefault(w.tenant, []).append(w)
        for queue in queues.values():
            queue.sort(key=lambda w: (-self.priority[w.workload_id], w.submitted_s, w.workload_id))
        deferred = self._phase(queues, within_nominal_only=True)
        self._phase(deferred, within_nominal_only=False)
        return self._decision()

    def _phase(
        self, queues: dict[str, list[Workload]], *, within_nominal_only: bool
    ) -> dict[str, list[Workload]]:
        deferred: dict[str, list[Workload]] = {}
        position = dict.fromkeys(queues, 0)
        version = dict.fromkeys(queues, 0)
        heap: list[tuple[int, float, float, str, int, str]] = []

        priority = self.priority
        share_cache = self.share_cache
        usage = self.usage
        fair = self.policy.fair_sharing
        limit_cache = self.limit_cache

        def entry_for(tenant: str) -> tuple[int, float, float, str, int, str] | None:
            """The heap entry of the tenant's next head, or None when done.

            Either way the tenant's version moves on, so any older entry of it goes stale.
            """
            version[tenant] += 1
            queue, at = queues[tenant], position[tenant]
            if within_nominal_only:  # defer heads that would borrow, without a heap round
                while at < len(queue):
                    head = queue[at]
                    key = (tenant, head.device_type)
                    lim = limit_cache.get(key) or self.limits(tenant, head.device_type)
                    if usage.get(key, 0) + head.num_cards <= lim.nominal:
                        break
                    deferred.setdefault(tenant, []).append(head)
                    at += 1
                position[tenant] = at
            if at >= len(queue):
                return None
            head = queue[at]
            share = share_cache.get(tenant) if fair else 0.0
            if share is None:
                share = self.dominant_share(tenant)
            wid = head.workload_id
            return (-priority[wid], share, head.submitted_s, wid, version[tenant], tenant)

        for tenant in sorted(queues):
            entry = entry_for(tenant)
            if entry is not None:
                heap.append(entry)
        heapq.heapify(heap)
        preempted, pending = self.preempted, self.pending
        following: tuple[int, float, float, str, int, str] | None = None
        while True:
            if following is not None:  # one heap operation instead of a push and a pop
                entry = heapq.heappushpop(heap, following)
            elif heap:
                entry = heapq.heappop(heap)
            else:
                break
            tenant = entry[5]
            if entry[4] != version[tenant]:  # stale: the tenant was re-ranked since
                following = None
                continue
            w = queues[tenant][position[tenant]]
            position[tenant] += 1
            stopped_before = len(preempted)
            outcome = self.try_admit(w, priority[w.workload_id])
            if isinstance(outcome, PendingReason):
                pending.append((w.workload_id, w, outcome))
            following = entry_for(tenant)
            if len(preempted) > stopped_before:
                for stop in preempted[stopped_before:]:
                    if stop.tenant != tenant and stop.tenant in queues:
                        rerank = entry_for(stop.tenant)  # its share fell: re-rank it
                        if rerank is not None:
                            heapq.heappush(heap, rerank)
        return deferred

    def _pending_records(self) -> tuple[Pending, ...]:
        texts: dict[tuple[PendingReason, str, str, int, int], str] = {}
        records = []
        for _, w, reason in sorted(self.pending):  # ids are unique: sorts by id
            if reason in _PER_TENANT_TYPE:  # the text names no size: share it
                key = (reason, w.tenant, w.device_type, 0, 0)
            else:
                key = (reason, w.tenant, w.device_type, w.num_cards, w.tp_size)
            text = texts.get(key)
            if text is None:
                text = texts[key] = self._message(w, reason)
            records.append(
                Pending(workload_id=w.workload_id, tenant=w.tenant, reason=reason, message=text)
            )
        return tuple(records)

    def _decision(self) -> AdmissionDecision:
        usage: dict[str, TenantUsage] = {}
        for tenant in sorted(self.quotas):
            quota = self.quotas[tenant]
            held = self.used_by_tenant.get(tenant, {})
            used = {d: held[d] for d in sorted(held) if held[d] > 0}
            borrowed = {d: n - quota.nominal(d) for d, n in used.items() if n > quota.nominal(d)}
            usage[tenant] = TenantUsage(
                tenant=tenant,
                cohort=quota.cohort,
                used_cards=used,
                nominal_cards=dict(quota.nominal_cards),
                borrowed_cards=borrowed,
                dominant_share=self.dominant_share(tenant),
            )
        return AdmissionDecision(
            now_s=self.now_s,
            admitted=tuple(self.admitted),
            preempted=tuple(self.preempted),
            pending=self._pending_records(),
            usage=usage,
        )


def run_cycle(
    snapshot: AdmissionSnapshot,
    pending: Sequence[Workload],
    now_s: float,
    policy: AdmissionPolicy,
) -> AdmissionDecision:
    """Run one cycle; see :func:`npucenter.policy.admission.decide_admission`."""
    return _Cycle(snapshot, now_s, policy).run(pending)
