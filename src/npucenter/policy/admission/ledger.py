"""Quota accounting of one cycle: the cohort tree, who holds which cards, limits and budgets.

The state lives only for one call; inputs are never mutated. The fair-sharing, preemption and
cycle layers (``fair_sharing``, ``preemption``, ``cycle``) extend :class:`Ledger` in that order.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

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
from npucenter.policy.quota import CohortQuota, PriorityClass, StopPolicy, TenantQuota

__all__ = ["Ledger", "Limits", "Node", "add_usage", "available", "remove_usage"]

# NOTE(admission): quotas form Kueue's resource tree.  Tenants are leaves, cohorts are inner
# nodes; a node without a parent is a root (a tenant without a cohort is a root of its own).
# Per device type d every node has a subtree quota SQ (a tenant: its nominal N; a cohort: its
# own nominal plus what its children lend, SQ_child - LQ_child), a local quota LQ = SQ - lending
# limit (0 without a lending limit: everything is lent; a tenant's G = N - L), an optional
# borrowing limit, and a usage U.  A node's usage above its LQ counts in its parent's usage.  A
# node may take ``available`` more cards: what is left of its LQ plus what its parent has
# available, capped by its borrowing limit.  Two usage trees are kept: ``usage`` (everything,
# including what this cycle admits) and ``old`` (work that ran before the cycle and was not
# preempted since), which decides who is a reclaim victim: a tenant is borrowing, and may lose
# work to an owner, only while the work it ran *before* the cycle exceeds its quota.


class Node:
    """One tenant or cohort in the quota tree, with its per-device-type quota and usage."""

    __slots__ = (
        "borrow_default",
        "borrowing_limit",
        "depth",
        "is_tenant",
        "local_quota",
        "name",
        "old",
        "parent",
        "root",
        "subtree_quota",
        "total",
        "usage",
        "weight",
    )

    def __init__(self, name: str, *, is_tenant: bool, weight: float) -> None:
        self.name = name
        self.is_tenant = is_tenant
        self.weight = weight
        self.parent: Node | None = None
        self.root: Node = self  # set once the tree is built
        self.depth = 0
        self.total = 0  # cards held, all device types (tenants only)
        self.subtree_quota: dict[str, int] = {}  # device_type -> SQ
        self.local_quota: dict[str, int] = {}  # device_type -> LQ (never lent to the parent)
        self.borrowing_limit: dict[str, int | None] = {}  # named types; None: unlimited
        self.borrow_default: int | None = None  # the limit for types not in borrowing_limit
        self.usage: dict[str, int] = {}
        self.old: dict[str, int] = {}

    def limit(self, device_type: str) -> int | None:
        """The borrowing limit on ``device_type`` (None: unlimited)."""
        return self.borrowing_limit.get(device_type, self.borrow_default)

    def path(self) -> list[Node]:
        """This node and its ancestors, leaf first."""
        out: list[Node] = []
        node: Node | None = self
        while node is not None:
            out.append(node)
            node = node.parent
        return out


def add_usage(node: Node, device_type: str, cards: int, old: bool) -> None:
    """Add ``cards`` to ``node``'s usage, and what exceeds its local quota to its parent's."""
    at: Node | None = node
    while at is not None and cards > 0:
        use = at.old if old else at.usage
        used = use.get(device_type, 0)
        local = at.local_quota.get(device_type, 0)
        left = local - used if local > used else 0
        use[device_type] = used + cards
        cards -= left
        at = at.parent


def remove_usage(node: Node, device_type: str, cards: int, old: bool) -> None:
    """Remove ``cards`` from ``node``'s usage, and what it stored in its parent from theirs."""
    at: Node | None = node
    while at is not None and cards > 0:
        use = at.old if old else at.usage
        used = use.get(device_type, 0)
        stored = used - at.local_quota.get(device_type, 0)
        use[device_type] = used - cards
        if stored <= 0:
            return
        if cards > stored:
            cards = stored
        at = at.parent


def available(node: Node, device_type: str, cached: dict[Node, int] | None = None) -> int:
    """Cards of ``device_type`` the node may still take (negative when over-admitted).

    ``cached``: node -> its figure, read and filled for the node and the ancestors it needs
    (siblings share their parent's); valid only while no usage on the type changes.
    """
    used = node.usage.get(device_type, 0)
    parent = node.parent
    if parent is None:
        left = node.subtree_quota.get(device_type, 0) - used
    else:
        from_parent = None if cached is None else cached.get(parent)
        if from_parent is None:
            from_parent = available(parent, device_type, cached)
        local = node.local_quota.get(device_type, 0)
        limit = node.borrowing_limit.get(device_type, node.borrow_default)
        if limit is not None:
            stored = node.subtree_quota.get(device_type, 0) - local
            cap = stored - (used - local if used > local else 0) + limit
            if cap < from_parent:
                from_parent = cap
        left = (local - used if local > used else 0) + from_parent
    if cached is not None:
        cached[node] = left
    return left


def potential(node: Node, device_type: str) -> float:
    """The most cards of ``device_type`` the node could hold with nothing else running."""
    parent = node.parent
    if parent is None:
        return float(node.subtree_quota.get(device_type, 0))
    out = node.local_quota.get(device_type, 0) + potential(parent, device_type)
    limit = node.limit(device_type)
    if limit is not None:
        out = min(out, float(node.subtree_quota.get(device_type, 0) + limit))
    return out


@dataclass(frozen=True, slots=True)
class Limits:
    """One tenant's limits on one device type, resolved once per cycle."""

    nominal: int
    max_cards: float  # nominal + borrowing limit, and no more than the tree could ever give
    node: Node
    budget_s: float | None  # device-seconds budget, None: none
    named: bool  # the quota names the device type (or opts in to unnamed types)


class Ledger:
    """Mutable working state of one cycle: the fleet, the quota tree and who holds what."""

    def __init__(self, snapshot: AdmissionSnapshot, now_s: float, policy: AdmissionPolicy) -> None:
        self.now_s = now_s
        self.policy = policy
        self.quotas: dict[str, TenantQuota] = {q.tenant: q for q in snapshot.quotas}
        self.known_tenants = frozenset(self.quotas)
        self.cohort_specs: dict[str, CohortQuota] = {c.name: c for c in snapshot.cohorts}
        self.nodes: dict[str, Node] = {}  # tenant -> leaf
        self.cohort_nodes: dict[str, Node] = {}
        self.root_members: dict[int, list[str]] = {}  # id(root) -> tenants under it
        self.types: dict[str, TypeState] = {}
        self.server_at: dict[str, tuple[str, int]] = {}  # server_id -> (device_type, index)
        self.running: dict[str, Admitted] = {}
        self.by_tenant_type: dict[tuple[str, str], dict[str, Admitted]] = {}
        self.share_cache: dict[str, float] = {}
        self.ratio_cache: dict[str, float] = {}
        self.budget_used: dict[tuple[str, str], float] = {}
        self.limit_cache: dict[tuple[str, str], Limits] = {}
        self.victim_orders: dict[tuple[int, str], list[Admitted]] = {}
        # (id(root), type) -> (tenant -> its entries of victim_orders, workload id -> place there)
        self.victims_by_tenant: dict[
            tuple[int, str], tuple[dict[str, list[Admitted]], dict[str, int]]
        ] = {}
        # (id(root), type) -> (preemptions when built, running work of borrowing tenants)
        self.own_orders: dict[tuple[str, str], list[Admitted]] = {}
        self.lca_cache: dict[tuple[str, str], Node] = {}
        self.cohort_candidates_cache: dict[tuple[object, ...], tuple[list[Any], bool]] = {}
        self.candidate_objects: dict[tuple[str, int, int], Any] = {}  # preemption.Candidate
        self.borrowed_cache: dict[tuple[str, str, int], tuple[int, bool]] = {}
        # (id(root), device type) -> preemptions in this cycle (what most caches depend on)
        self.preempt_count: dict[tuple[int, str], int] = {}
        # (preemptor's tenant, victim's tenant, device type) of this cycle's preemptions between
        # tenants: a tenant never takes back cards of a type from a tenant that took them
        self.took: set[tuple[str, str, str]] = set()
        # (tenant, device type) -> how many tenants took cards of the type from it this cycle
        self.took_from: dict[tuple[str, str], int] = {}
        self.advantage_cache: dict[tuple[str, str, int], tuple[tuple[int, int], bool]] = {}
        # (id(root), type) -> (preemptions in the tree on the type, victimable running work)
        self.victimable_cache: dict[tuple[int, str], tuple[int, list[Admitted]]] = {}
        # (id(root), type) -> victim tenant -> its victimable cards per priority class
        self.victim_cards_cache: dict[tuple[int, str], dict[str, list[int]]] = {}
        # (tenant, type) -> (eligible_version of its tree on the type, the other tenants whose
        # work may be its victims at all but for `took`, took_from when filtered, those not in it)
        self.eligible_cache: dict[tuple[str, str], tuple[int, list[str], int, list[str]]] = {}
        # (id(root), type) -> preemptions in this cycle that changed whether some node of the
        # tree borrows on the type with its old work
        self.eligible_version: dict[tuple[int, str], int] = {}
        self.may_reclaim = policy.reclaim_within_cohort is not PreemptionPolicy.NEVER
        self.may_preempt_own = policy.within_tenant is not PreemptionPolicy.NEVER
        self.may_borrow_preempt = (
            policy.borrow_within_cohort is not PreemptionPolicy.NEVER
            or policy.fair_sharing_preemption
        )
        self.may_preempt = self.may_reclaim or self.may_preempt_own or self.may_borrow_preempt
        # (tenant, type) -> lowest priority class of work running before the cycle
        self.lowest_running: dict[tuple[str, str], int] = {}
        # (tenant, type, tp) -> (preemptions in its tree on the type, priority -> fewest cards
        # whose victim search failed)
        self.victim_failures: dict[tuple[str, str, int], tuple[int, list[int | None]]] = {}
        self.admitted: list[Admitted] = []
        self.admitted_now: set[str] = set()
        self.preempted: list[Preemption] = []
        self.by_id: dict[str, Workload] = {}  # pending workload id -> workload
        # id of a workload left pending -> (stamp, class number, number of the reason, the device
        # type it is about or "" for its own): the failure remembered for its shape (cycle.py),
        # shared by every workload it holds
        self.waiting: dict[str, tuple[int, int, int, str]] = {}
        self._build_fleet(snapshot.fleet)
        self._build_tree()
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

    def _cohort_node(self, name: str) -> Node:
        node = self.cohort_nodes.get(name)
        if node is None:
            spec = self.cohort_specs.get(name) or CohortQuota(name=name)
            node = Node(name, is_tenant=False, weight=spec.fair_share_weight)
            self.cohort_nodes[name] = node
            node.subtree_quota.update(spec.nominal_cards)
            node.borrowing_limit.update(spec.borrowing_limit_cards)
            if spec.parent is not None:
                node.parent = self._cohort_node(spec.parent)
        return node

    def _add_tenant(self, quota: TenantQuota) -> Node:
        self.quotas[quota.tenant] = quota
        node = Node(quota.tenant, is_tenant=True, weight=quota.fair_share_weight)
        node.subtree_quota.update(quota.nominal_cards)
        for device_type in (*quota.nominal_cards, *quota.borrowing_limit_cards):
            node.borrowing_limit[device_type] = quota.borrowing_limit(device_type)
        node.borrow_default = None if quota.borrow_unnamed_device_types else 0
        if quota.cohort is not None:
            node.parent = self._cohort_node(quota.cohort)
        self.nodes[quota.tenant] = node
        return node

    def _build_tree(self) -> None:
        for quota in self.quotas.values():
            self._add_tenant(quota)
        for spec in self.cohort_specs.values():
            self._cohort_node(spec.name)
        everyone = [*self.nodes.values(), *self.cohort_nodes.values()]
        for node in everyone:
            path = node.path()
            node.depth, node.root = len(path) - 1, path[-1]
        # children before parents: a cohort's subtree quota sums what its children lend
        for node in sorted(everyone, key=lambda n: -n.depth):
            lending = (
                self.quotas[node.name].lending_limit_cards
                if node.is_tenant
                else self.cohort_specs.get(
                    node.name, CohortQuota(name=node.name)
                ).lending_limit_cards
            )
            for device_type, cards in node.subtree_quota.items():
                lent = lending.get(device_type)
                node.local_quota[device_type] = 0 if lent is None else max(0, cards - lent)
            parent = node.parent
            if parent is not None:
                for device_type, cards in node.subtree_quota.items():
                    lent = cards - node.local_quota[device_type]
                    parent.subtree_quota[device_type] = (
                        parent.subtree_quota.get(device_type, 0) + lent
                    )
        for tenant in sorted(self.nodes):
            self.root_members.setdefault(id(self.nodes[tenant].root), []).append(tenant)

    def _load_running(self, running: Sequence[Admitted]) -> None:
        holder: dict[tuple[str, int], str] = {}
        drained = {t for t, q in self.quotas.items() if q.stop_policy is StopPolicy.HOLD_AND_DRAIN}
        for entry in sorted(running, key=lambda a: a.workload_id):
            if entry.tenant not in self.quotas:  # a tenant deleted while its work runs
                self._add_tenant(TenantQuota(tenant=entry.tenant))
                self.root_members[id(self.nodes[entry.tenant])] = [entry.tenant]
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
            if problem or entry.tenant in drained:
                self.preempted.append(
                    Preemption(
                        workload_id=entry.workload_id,
                        tenant=entry.tenant,
                        reason=PreemptionReason.UNHEALTHY if problem else PreemptionReason.DRAIN,
                        by_workload_id=None,
                        message=f"{problem}; requeue it"
                        if problem
                        else f"tenant {entry.tenant} is held and drained; requeue it",
                    )
                )
                continue
            device_type, index = self.server_at[entry.server_id]
            self.types[device_type].take(index, entry.card_indices)
            self._account(entry, +1, old=True)
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

    def _account(self, entry: Admitted, sign: int, *, old: bool) -> None:
        """Add (sign +1) or remove (-1) a placement; ``old``: it ran before the cycle."""
        tenant, device_type, cards = entry.tenant, entry.device_type, entry.num_cards
        node = self.nodes[tenant]
        node.total += sign * cards
        if sign > 0:
            add_usage(node, device_type, cards, False)
            if old:
                add_usage(node, device_type, cards, True)
        else:
            remove_usage(node, device_type, cards, False)
            if old:
                remove_usage(node, device_type, cards, True)
        self.share_cache.pop(tenant, None)
        self.ratio_cache.pop(tenant, None)
        held = self.by_tenant_type.setdefault((tenant, device_type), {})
        if sign > 0:
            self.running[entry.workload_id] = entry
            held[entry.workload_id] = entry
        else:
            del self.running[entry.workload_id]
            del held[entry.workload_id]

    def used(self, tenant: str, device_type: str) -> int:
        """Cards of ``device_type`` the tenant holds now."""
        return self.nodes[tenant].usage.get(device_type, 0)

    # -- checks -------------------------------------------------------------------------------

    def limits(self, tenant: str, device_type: str) -> Limits:
        """The tenant's limits on ``device_type`` (cached for the cycle)."""
        key = (tenant, device_type)
        found = self.limit_cache.get(key)
        if found is None:
            quota = self.quotas[tenant]
            node = self.nodes[tenant]
            limit = node.limit(device_type) if node.parent is not None else 0
            own = math.inf if limit is None else float(quota.nominal(device_type) + limit)
            found = Limits(
                nominal=quota.nominal(device_type),
                max_cards=min(own, potential(node, device_type)),
                node=node,
                budget_s=quota.device_seconds_budget.get(device_type),
                named=quota.names(device_type) or quota.borrow_unnamed_device_types,
            )
            self.limit_cache[key] = found
        return found

    def _static_reason(
        self, w: Workload, device_type: str, lim: Limits
    ) -> PendingReason | Literal[False]:
        """Blockers that hold for the whole cycle: topology of the fleet and quota size."""
        reason: PendingReason | Literal[False] = False
        types = self.types.get(device_type)
        if types is None or not types.could_ever_fit(w.num_cards, w.tp_size):
            reason = PendingReason.UNSCHEDULABLE
        elif not lim.named and lim.nominal == 0:
            reason = PendingReason.NO_QUOTA_FOR_DEVICE
        elif w.num_cards > lim.max_cards:
            reason = PendingReason.QUOTA_LIMIT
        return reason

    def _over_budget(self, w: Workload, device_type: str, budget_s: float) -> bool:
        used_s = self.budget_used.get((w.tenant, device_type), 0.0)
        return used_s >= budget_s or used_s + w.num_cards * (w.max_duration_s or 0.0) > budget_s

    def quota_reason(
        self, tenant: str, device_type: str, cards: int, *, borrow: bool = True
    ) -> PendingReason | None:
        """Why the quota tree forbids ``cards`` more cards now (None: it allows them).

        ``borrow=False`` also forbids going above the tenant's nominal quota.
        """
        lim = self.limit_cache.get((tenant, device_type)) or self.limits(tenant, device_type)
        node = lim.node
        used = node.usage.get(device_type, 0)
        if used + cards > lim.max_cards:
            return PendingReason.QUOTA_IN_USE
        if not borrow and used + cards > lim.nominal:
            return PendingReason.COHORT_EXHAUSTED
        if cards > available(node, device_type):
            return PendingReason.COHORT_EXHAUSTED
        return None

    def priority_of(self, w: Workload) -> PriorityClass:
        """The workload's class, capped by its tenant's."""
        ceiling = self.quotas[w.tenant].priority_class
        return ceiling if w.priority_class is None else min(w.priority_class, ceiling)

    def within_nominal(self, tenant: str, device_type: str, cards: int) -> bool:
        """Whether ``cards`` more keep the tenant within its nominal quota of ``device_type``."""
        node = self.nodes[tenant]
        return node.usage.get(device_type, 0) + cards <= node.subtree_quota.get(device_type, 0)

    def borrowing_before(self, tenant: str, device_type: str, upto: Node | None) -> bool:
        """Whether the tenant, and each cohort below ``upto`` on its path, uses more than its
        quota with the work that ran before the cycle (what makes its work a reclaim victim)."""
        node: Node | None = self.nodes[tenant]
        while node is not None and node is not upto:
            if node.old.get(device_type, 0) <= node.subtree_quota.get(device_type, 0):
                return False
            node = node.parent
        return True
