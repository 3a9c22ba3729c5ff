"""Preemption: which running workloads a pending one may stop, and a minimal set that lets it fit.

Kueue's classical preemption on the quota tree, plus topology: victims must free cards on one
server in the gang's TP shape. Only work running before the cycle is ever a victim.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable
from dataclasses import dataclass

from npucenter.policy.admission.fair_sharing import FairSharing
from npucenter.policy.admission.ledger import Node, add_usage, remove_usage
from npucenter.policy.admission.types import (
    Admitted,
    PreemptionPolicy,
    PreemptionReason,
    Workload,
)
from npucenter.policy.quota import PriorityClass

__all__ = ["Candidate", "CandidateKind", "VictimSearch"]

_NUM_CLASSES = len(PriorityClass)  # EnumMeta.__len__ is slow: once

# NOTE(admission): after Kueue's classical preemption (pkg/scheduler/preemption/classical).
# Candidates are, in this order: other tenants' work in the preemptor's cohort tree (those over
# which it has a hierarchical advantage first), then its own lower-priority work; each group by
# lowest priority, then most recently admitted.  Another tenant's workload is a candidate under
# reclaim_within_cohort; it stays one only while that tenant (and each cohort between it and the
# common ancestor) uses more than its quota with the work it ran before the cycle.  The
# preemptor has a hierarchical advantage over a tenant when the request fits the quota of the
# preemptor or of one of its cohorts below their common ancestor: such work may be taken even if
# the preemptor ends up borrowing.  Any other tenant's work may be taken only if the preemptor
# ends within its nominal quota ("reclaim without borrowing"), unless borrow_within_cohort lets a
# borrower take strictly lower-priority work ("reclaim while borrowing").  Two attempts, with
# and without borrowing, in Kueue's order; in each, candidates are taken in order until the
# workload fits (quota tree, then topology), then every victim not needed is given back.  With
# fair_sharing_preemption a borrower that found no victims may take borrowed work of a tenant
# whose fair share after the preemption is still at least the preemptor's with the workload
# (Kueue's LessThanOrEqualToFinalShare).  Two tenants cannot take cards back and forth: the
# preemptor's share counts its request and the victim's does not count the victim, so the
# reverse move would need a share below itself.  Shares of victims count only the work they ran
# before the cycle (as reclaim does), so they change only by preemption; a zero-weight
# preemptor (infinite share) never preempts by fair sharing.
# Nor by any other rule in one cycle: a tenant's work of a type is never a candidate for a
# tenant it took cards of that type from in this cycle (Kueue skips a second preemptor in a
# cohort whose flavors overlap the first's); it may be in the next cycle.


class CandidateKind(enum.IntEnum):
    """Why a running workload may be preempted (Kueue's preemption variants)."""

    OWN = 0  # the preemptor's own tenant, lower priority
    HIERARCHY = 1  # the preemptor has a hierarchical advantage over its tenant
    WITHOUT_BORROWING = 2  # only if the preemptor ends within its nominal quota
    WHILE_BORROWING = 3  # borrow_within_cohort: even if the preemptor borrows
    FAIR = 4  # fair-sharing preemption between borrowers


_REASON = {
    CandidateKind.OWN: PreemptionReason.PRIORITY,
    CandidateKind.HIERARCHY: PreemptionReason.RECLAIM,
    CandidateKind.WITHOUT_BORROWING: PreemptionReason.RECLAIM,
    CandidateKind.WHILE_BORROWING: PreemptionReason.RECLAIM_WHILE_BORROWING,
    CandidateKind.FAIR: PreemptionReason.FAIR_SHARING,
}


@dataclass(slots=True, eq=False)
class Candidate:
    """A running workload that may be preempted, and on what grounds."""

    entry: Admitted
    kind: CandidateKind
    upto: Node | None  # the common ancestor with the preemptor (None: own tenant)
    index: int  # its server's index among the servers of its device type
    cards: int = 0  # how many cards it holds (set from the entry)

    def __post_init__(self) -> None:
        self.cards = len(self.entry.card_indices)

    @property
    def reason(self) -> PreemptionReason:
        """The reason recorded when it is preempted."""
        return _REASON[self.kind]


class VictimSearch(FairSharing):
    """Fair-sharing state plus the victim search of one cycle."""

    def find_victims(
        self,
        w: Workload,
        device_type: str,
        priority: PriorityClass,
        *,
        classical: bool = True,
        fair: bool = True,
    ) -> tuple[list[Candidate], int] | None:
        """A minimal set of victims that lets ``w`` run on ``device_type``, and its server.

        ``classical``/``fair``: run Kueue's classical attempts / the fair-sharing attempt.
        """
        own = self._own_candidates(w, device_type, priority)
        if classical:
            found = self._classical(w, device_type, priority, own)
            if found is not None:
                return found
        if fair and self.policy.fair_sharing_preemption and self.policy.fair_sharing:
            candidates = self._fair_candidates(w, device_type, priority)
            if candidates:
                return self._search(w, device_type, candidates + own, True)
        return None

    def _classical(
        self, w: Workload, device_type: str, priority: PriorityClass, own: list[Candidate]
    ) -> tuple[list[Candidate], int] | None:
        others, advantage = self._cohort_candidates(w, device_type, priority)
        node = self.nodes[w.tenant]
        used = node.usage.get(device_type, 0)
        under_nominal = used < node.subtree_quota.get(device_type, 0)
        forbidden = self.policy.borrow_within_cohort is PreemptionPolicy.NEVER
        attempts: tuple[bool, ...]
        if not others or (forbidden and not under_nominal):
            attempts = (True,)
        elif forbidden and not advantage:
            attempts = (False, True)
        else:
            attempts = (True, False)
        candidates = others + own
        for borrow in attempts:  # _search drops what may be taken only without borrowing
            found = self._search(w, device_type, candidates, borrow)
            if found is not None:
                return found
        return None

    # -- candidates ---------------------------------------------------------------------------

    def _victim_order(self, root: Node, device_type: str) -> list[Admitted]:
        """Work running before the cycle on ``device_type`` under ``root``, in victim order:
        lowest priority, then most recently admitted, then id. Built once per cycle; entries
        preempted since are filtered by the caller."""
        key = (id(root), device_type)
        order = self.victim_orders.get(key)
        if order is None:
            order = sorted(
                (
                    entry
                    for tenant in self.root_members.get(id(root), ())
                    for entry in self.by_tenant_type.get((tenant, device_type), {}).values()
                    if entry.workload_id not in self.admitted_now
                ),
                key=lambda e: (e.priority_class, -e.admitted_s, e.workload_id),
            )
            self.victim_orders[key] = order
        return order

    def _victims_by_tenant(
        self, root: Node, device_type: str
    ) -> tuple[dict[str, list[Admitted]], dict[str, int]]:
        """:meth:`_victim_order` per tenant, and each entry's place in it (by workload id);
        built once per cycle (entries preempted since are filtered by the caller)."""
        key = (id(root), device_type)
        found = self.victims_by_tenant.get(key)
        if found is None:
            per_tenant: dict[str, list[Admitted]] = {}
            rank: dict[str, int] = {}
            for i, entry in enumerate(self._victim_order(root, device_type)):
                per_tenant.setdefault(entry.tenant, []).append(entry)
                rank[entry.workload_id] = i
            found = self.victims_by_tenant[key] = (per_tenant, rank)
        return found

    def victimable(self, root: Node, device_type: str) -> list[Admitted]:
        """The victim order restricted to running work of tenants that use more than their
        nominal with the work they ran before the cycle (nobody else can be a cohort victim).
        Old usage only falls by preemption, so the list holds until the next preemption."""
        return self._victimable_entry(root, device_type)[1]

    def victim_cards(self, root: Node, device_type: str) -> dict[str, list[int]]:
        """Per tenant of :meth:`victimable`'s entries: its cards there per priority class.

        Built once per cycle and kept exact by :meth:`forget_victim` at each preemption (the
        list of entries itself is rebuilt only when asked for).
        """
        key = (id(root), device_type)
        found = self.victim_cards_cache.get(key)
        if found is None:
            found = self.victim_cards_cache[key] = {}
            for entry in self._victimable_entry(root, device_type)[1]:
                per = found.get(entry.tenant)
                if per is None:
                    per = found[entry.tenant] = [0] * _NUM_CLASSES
                per[entry.priority_class] += len(entry.card_indices)
        return found

    def forget_victim(self, entry: Admitted, device_type: str, root: Node) -> None:
        """Update :meth:`victim_cards` after ``entry`` (work from before the cycle) stopped."""
        cards = self.victim_cards_cache.get((id(root), device_type))
        if cards is None:
            return
        node = self.nodes[entry.tenant]
        if node.old.get(device_type, 0) <= node.subtree_quota.get(device_type, 0):
            cards.pop(entry.tenant, None)  # no longer borrowing: none of its work is a victim
        elif entry.tenant in cards:
            cards[entry.tenant][entry.priority_class] -= len(entry.card_indices)

    def _victimable_entry(self, root: Node, device_type: str) -> tuple[int, list[Admitted]]:
        key = (id(root), device_type)
        stamp = self.preempt_count.get(key, 0)
        found = self.victimable_cache.get(key)
        if found is None or found[0] != stamp:
            nodes, running = self.nodes, self.running
            # the list only shrinks: rebuild from the last one, not from all running work
            source = self._victim_order(root, device_type) if found is None else found[1]
            over: dict[str, bool] = {}
            for tenant in {entry.tenant for entry in source}:
                node = nodes[tenant]
                over[tenant] = node.old.get(device_type, 0) > node.subtree_quota.get(device_type, 0)
            out = [e for e in source if over[e.tenant] and e.workload_id in running]
            found = self.victimable_cache[key] = (stamp, out)
        return found

    def eligible_victims(self, tenant: str, device_type: str) -> list[str]:
        """Other tenants whose work on ``device_type`` may be a victim of ``tenant``'s work at
        all (their cards per priority class: :meth:`victim_cards`).

        A superset of the tenants whose work :meth:`_cohort_candidates` and the fair-sharing
        search may take: the tenant borrows with its old work up to the common ancestor, and
        did not take cards of the type from ``tenant`` in this cycle. Empty for a tenant without
        a cohort or when no tenant may be reclaimed from. Cached until a preemption changes
        whether a node of the tree borrows on the type (``eligible_version``).
        """
        node = self.nodes[tenant]
        key = (tenant, device_type)
        version = self.eligible_version.get((id(node.root), device_type), 0)
        took = self.took
        took_from = self.took_from.get(key, 0)  # `took` entries that concern this list
        found = self.eligible_cache.get(key)
        if found is None or found[0] != version:
            names: list[str] = []
            if node.parent is not None and self.may_reclaim:
                ancestors = {id(n) for n in node.path()[1:]}
                for other in self.victim_cards(node.root, device_type):
                    if other == tenant:
                        continue
                    upto = self._common_ancestor(tenant, other, ancestors)
                    if self.borrowing_before(other, device_type, upto):
                        names.append(other)
        elif found[2] != took_from:
            names = found[1]
        else:
            return found[3]
        kept = [o for o in names if (o, tenant, device_type) not in took] if took_from else names
        self.eligible_cache[key] = (version, names, took_from, kept)
        return kept

    def _own_candidates(
        self, w: Workload, device_type: str, priority: PriorityClass
    ) -> list[Candidate]:
        if not self.may_preempt_own:
            return []
        key = (w.tenant, device_type)
        order = self.own_orders.get(key)
        if order is None:  # work running before the cycle, in victim order (built once)
            order = self.own_orders[key] = sorted(
                self.by_tenant_type.get(key, {}).values(),
                key=lambda e: (e.priority_class, -e.admitted_s, e.workload_id),
            )
        out: list[Candidate] = []
        server_at, running = self.server_at, self.running
        lowest: int | None = None
        admitted_now = self.admitted_now
        for entry in order:
            if entry.workload_id not in running or entry.workload_id in admitted_now:
                continue  # preempted since, or admitted in this cycle
            if lowest is None:
                lowest = int(entry.priority_class)
            if entry.priority_class >= priority:
                break  # sorted by priority: the rest rank at least as high
            out.append(Candidate(entry, CandidateKind.OWN, None, server_at[entry.server_id][1]))
        # keep the cheap pre-check exact: the lowest class still running from before the cycle
        if lowest is None:
            self.lowest_running.pop(key, None)
        else:
            self.lowest_running[key] = lowest
        return out

    def has_advantage(self, w: Workload, device_type: str) -> bool:
        """Whether the request fits the quota of one of the tenant's cohorts below the root
        (cached while admissions and preemptions stay the same)."""
        key = (w.tenant, device_type, w.num_cards)
        version = (len(self.admitted), len(self.preempted))
        found = self.advantage_cache.get(key)
        if found is None or found[0] != version:
            found = self.advantage_cache[key] = (
                version,
                any(self._advantages(w, device_type).values()),
            )
        return found[1]

    def _advantages(self, w: Workload, device_type: str) -> dict[int, bool]:
        """id(ancestor) -> whether the preemptor has a hierarchical advantage over the tenants
        whose common ancestor with it is that ancestor (Kueue's QuantitiesFitInQuota walk)."""
        node = self.nodes[w.tenant]
        used = node.usage.get(device_type, 0)
        advantage = used + w.num_cards <= node.subtree_quota.get(device_type, 0)
        local = node.local_quota.get(device_type, 0)
        remaining = max(0, w.num_cards - max(0, local - used))
        out: dict[int, bool] = {}
        at = node.parent
        while at is not None:
            out[id(at)] = advantage
            used = at.usage.get(device_type, 0)
            if used + remaining <= at.subtree_quota.get(device_type, 0):
                advantage = True
            local = at.local_quota.get(device_type, 0)
            remaining = max(0, remaining - max(0, local - used))
            at = at.parent
        return out

    def _cohort_candidates(
        self, w: Workload, device_type: str, priority: PriorityClass
    ) -> tuple[list[Candidate], bool]:
        """Other tenants' candidates (advantaged first) and whether any is advantaged.

        Only candidates some attempt could use are listed: without an advantage, work that may
        be reclaimed only without borrowing is useless to a preemptor at or above its nominal.
        """
        node = self.nodes[w.tenant]
        if node.parent is None or not self.may_reclaim:
            return [], False
        advantages = self._advantages(w, device_type)
        under_nominal = node.usage.get(device_type, 0) < node.subtree_quota.get(device_type, 0)
        lower_only = self.policy.reclaim_within_cohort is PreemptionPolicy.LOWER_PRIORITY
        forbidden = self.policy.borrow_within_cohort is PreemptionPolicy.NEVER
        if forbidden and not under_nominal and not self.has_advantage(w, device_type):
            return [], False  # no attempt could use another tenant's work
        # the list depends on the preemptor's tree (preemptions there), its priority and its
        # advantages; cached while those stay the same
        key = (
            w.tenant,
            device_type,
            int(priority),
            self.preempt_count.get((id(node.root), device_type), 0),
            under_nominal,
            tuple(advantages.values()),
        )
        cached: tuple[list[Candidate], bool] | None = self.cohort_candidates_cache.get(key)
        if cached is not None:
            return cached
        threshold = self.policy.borrow_within_cohort_max_priority
        ancestors = {id(n) for n in node.path()[1:]}
        tenants: dict[str, tuple[Node, bool] | None] = {}  # tenant -> (upto, advantage) or None
        advantaged: list[Candidate] = []
        rest: list[Candidate] = []
        server_at = self.server_at
        eligible = self.eligible_victims(w.tenant, device_type)
        if not eligible:  # the checks below would drop every entry
            result = self.cohort_candidates_cache[key] = ([], False)
            return result
        # the victimable work of eligible tenants, in victim order
        per_tenant, rank = self._victims_by_tenant(node.root, device_type)
        running = self.running
        entries = [e for t in eligible for e in per_tenant.get(t, ()) if e.workload_id in running]
        entries.sort(key=lambda e: rank[e.workload_id])
        for entry in entries:  # eligible: never the preemptor's tenant nor one it took from
            tenant = entry.tenant
            if lower_only and entry.priority_class >= priority:
                continue
            if tenant in tenants:
                found = tenants[tenant]
            else:
                at = self._common_ancestor(w.tenant, tenant, ancestors)
                found = (at, advantages[id(at)])
                if not self._borrowed_before(tenant, device_type, at):
                    found = None  # within its quota below the common ancestor: never a victim
                tenants[tenant] = found
            if found is None:
                continue
            upto, advantage = found
            if advantage:
                kind = CandidateKind.HIERARCHY
            elif (
                forbidden
                or entry.priority_class >= priority
                or (threshold is not None and entry.priority_class > threshold)
            ):
                if not under_nominal:
                    continue
                kind = CandidateKind.WITHOUT_BORROWING
            else:
                kind = CandidateKind.WHILE_BORROWING
            made = (entry.workload_id, kind, id(upto))
            candidate = self.candidate_objects.get(made)  # one object per victim and ground
            if candidate is None:
                candidate = self.candidate_objects[made] = Candidate(
                    entry, kind, upto, server_at[entry.server_id][1]
                )
            (advantaged if advantage else rest).append(candidate)
        result = self.cohort_candidates_cache[key] = (advantaged + rest, bool(advantaged))
        return result

    def _common_ancestor(self, tenant: str, other: str, ancestors: set[int]) -> Node:
        key = (tenant, other)
        found = self.lca_cache.get(key)
        if found is None:
            at: Node | None = self.nodes[other].parent
            while at is not None and id(at) not in ancestors:
                at = at.parent
            assert at is not None  # same root
            found = self.lca_cache[key] = at
        return found

    def _borrowed_before(self, tenant: str, device_type: str, upto: Node) -> bool:
        """:meth:`borrowing_before`, cached until the next preemption in the tree on the type
        (only outside a search, where nothing is lifted)."""
        node = self.nodes[tenant]
        key = (tenant, device_type, id(upto))
        stamp = self.preempt_count.get((id(node.root), device_type), 0)
        found = self.borrowed_cache.get(key)
        if found is None or found[0] != stamp:
            found = self.borrowed_cache[key] = (
                stamp,
                self.borrowing_before(tenant, device_type, upto),
            )
        return found[1]

    def _fair_candidates(
        self, w: Workload, device_type: str, priority: PriorityClass
    ) -> list[Candidate]:
        """Borrowed work of tenants whose fair share is above the preemptor's after admission."""
        node = self.nodes[w.tenant]
        if node.parent is None or not self.may_reclaim:
            return []
        mine = self.share_with(w.tenant, device_type, w.num_cards)
        if math.isinf(mine):
            return []
        lower_only = self.policy.reclaim_within_cohort is PreemptionPolicy.LOWER_PRIORITY
        ancestors = {id(n): n for n in node.path()[1:]}
        shares: dict[str, float] = {}
        out: list[tuple[float, Candidate]] = []
        for entry in self.victimable(node.root, device_type):
            if entry.tenant == w.tenant or (entry.tenant, w.tenant, device_type) in self.took:
                continue
            if lower_only and entry.priority_class >= priority:
                continue
            share = shares.get(entry.tenant)
            if share is None:
                share = shares[entry.tenant] = self.old_share(entry.tenant)
            if share < mine:
                continue
            at: Node | None = self.nodes[entry.tenant].parent
            while at is not None and id(at) not in ancestors:
                at = at.parent
            candidate = Candidate(entry, CandidateKind.FAIR, at, self.server_at[entry.server_id][1])
            out.append((-share, candidate))
        out.sort(key=lambda pair: pair[0])  # stable: victim order within a share
        return [c for _, c in out]

    def _valid(
        self, w: Workload, device_type: str, c: Candidate, borrow: bool, mine: float
    ) -> bool:
        """Whether ``c`` may still be taken, with the victims chosen so far lifted."""
        if c.kind is CandidateKind.OWN:
            return True
        if borrow and c.kind is CandidateKind.WITHOUT_BORROWING:
            return False
        if not self.borrowing_before(c.entry.tenant, device_type, c.upto):
            return False
        if c.kind is CandidateKind.FAIR:
            node = self.nodes[c.entry.tenant]
            lifted = self._lifted_share(node, c.entry)
            return lifted >= mine
        return True

    def _lifted_share(self, node: Node, entry: Admitted) -> float:
        remove_usage(node, entry.device_type, entry.num_cards, True)
        try:
            return self.old_share(node.name)
        finally:
            add_usage(node, entry.device_type, entry.num_cards, True)

    # -- search -------------------------------------------------------------------------------

    def _lift(self, victims: list[Candidate]) -> None:
        for c in victims:
            node = self.nodes[c.entry.tenant]
            remove_usage(node, c.entry.device_type, c.cards, False)
            remove_usage(node, c.entry.device_type, c.cards, True)

    def _drop(self, victims: list[Candidate]) -> None:
        for c in victims:
            node = self.nodes[c.entry.tenant]
            add_usage(node, c.entry.device_type, c.cards, False)
            add_usage(node, c.entry.device_type, c.cards, True)

    def _search(
        self, w: Workload, device_type: str, candidates: list[Candidate], borrow: bool
    ) -> tuple[list[Candidate], int] | None:
        """Victims among ``candidates`` that let ``w`` fit, and the server it then gets.

        If some server could hold ``w`` already, only quota blocks it: victims are taken in
        candidate order. Otherwise victims must free one server: each server holding candidates
        is tried, and the set with the fewest of the preemptor's own workloads (other tenants'
        borrowed work goes first, as in Kueue), then whose worst victim has the lowest priority,
        then the fewest victims, then the fewest cards wins.
        """
        mine = self.share_with(w.tenant, device_type, w.num_cards)
        # validity only shrinks as victims are lifted: drop what is invalid already (a tenant's
        # borrowing is checked once, not per workload)
        borrowing: dict[tuple[str, int], bool] = {}
        kept: list[Candidate] = []
        fair, own, without = CandidateKind.FAIR, CandidateKind.OWN, CandidateKind.WITHOUT_BORROWING
        for c in candidates:
            kind = c.kind
            if kind is own:
                kept.append(c)
                continue
            if borrow and kind is without:
                continue
            if kind is not fair:  # _cohort_candidates listed it borrowing, and nothing has
                kept.append(c)  # been preempted in the tree since (its cache key) or lifted
                continue
            key = (c.entry.tenant, id(c.upto))
            ok = borrowing.get(key)
            if ok is None:
                ok = borrowing[key] = self.borrowing_before(c.entry.tenant, device_type, c.upto)
            if ok and (
                kind is not CandidateKind.FAIR or self._valid(w, device_type, c, borrow, mine)
            ):
                kept.append(c)
        candidates = kept
        if not candidates:
            return None
        types = self.types[device_type]
        totals: dict[str, int] = {}
        largest: dict[str, int] = {}
        freed = 0
        for c in candidates:
            if c.entry.device_type == device_type:
                tenant, cards = c.entry.tenant, c.cards
                freed += cards
                totals[tenant] = totals.get(tenant, 0) + cards
                if cards > largest.get(tenant, 0):
                    largest[tenant] = cards
        if types.total_free + freed < w.num_cards:
            return None  # not even every candidate would free enough cards
        nodes = self.nodes
        for tenant in totals:
            if tenant != w.tenant:
                # another tenant loses work only while it borrows: at most its excess, plus
                # what the last victim taken overshoots
                node = nodes[tenant]
                excess = node.old.get(device_type, 0) - node.subtree_quota.get(device_type, 0)
                totals[tenant] = max(0, min(totals[tenant], excess + largest[tenant] - 1))
        freed = sum(totals.values())
        if types.total_free + freed < w.num_cards:
            return None
        if types.find(w.num_cards, w.tp_size) is not None:
            chosen = self._greedy(w, device_type, candidates, [], borrow, mine)
            return None if chosen is None else self._pruned(w, device_type, chosen, borrow)
        first = candidates[0]
        if first.kind is not CandidateKind.OWN and first.cards == min(c.cards for c in candidates):
            # one victim of the lowest class and the fewest cards that makes room is the best set
            # the search below could find (ties aside): try it before grouping every candidate
            self._lift([first])
            try:
                alone = self._server_fits(w, device_type, first.index, [first]) and (
                    self.quota_reason(w.tenant, device_type, w.num_cards, borrow=borrow) is None
                )
            finally:
                self._drop([first])
            if alone:
                return self._pruned(w, device_type, [first], borrow)
        on_server: dict[int, list[Candidate]] = {}  # servers in order of their first candidate
        lowest: dict[int, int] = {}  # server index -> lowest priority among its candidates
        fewest_cards = w.num_cards
        for c in candidates:
            rank = int(c.entry.priority_class)
            local = on_server.get(c.index)
            if local is None:
                on_server[c.index] = [c]
                lowest[c.index] = rank
            else:
                local.append(c)
                if rank < lowest[c.index]:
                    lowest[c.index] = rank
            if c.cards < fewest_cards:
                fewest_cards = c.cards
        floor = (0, min(lowest.values()), 1, fewest_cards)
        best: list[Candidate] | None = None
        best_cost: tuple[int, int, int, int, int] | None = None
        for index, local in on_server.items():
            if best_cost is not None:
                if best_cost[:4] <= floor:
                    break  # nothing beats one smallest victim of the lowest priority
                if best_cost[0] == 0 and lowest[index] > best_cost[1]:
                    continue
            chosen = self._clear_server(w, device_type, index, local, candidates, borrow, mine)
            if chosen is None:
                continue
            cost = (
                # as Kueue: other tenants' work before the preemptor's own
                sum(1 for c in chosen if c.kind is CandidateKind.OWN),
                max(int(c.entry.priority_class) for c in chosen),
                len(chosen),
                sum(c.cards for c in chosen),
                index,
            )
            if best_cost is None or cost < best_cost:
                best, best_cost = chosen, cost
        return None if best is None else self._pruned(w, device_type, best, borrow)

    def _fits(
        self, w: Workload, device_type: str, lifted: list[Candidate], borrow: bool
    ) -> int | None:
        """The server for ``w`` with ``lifted`` (already lifted from the tree) stopped, or None."""
        if self.quota_reason(w.tenant, device_type, w.num_cards, borrow=borrow) is not None:
            return None
        return self._fits_without(w, device_type, lifted)

    def _greedy(
        self,
        w: Workload,
        device_type: str,
        candidates: list[Candidate],
        chosen: list[Candidate],
        borrow: bool,
        mine: float,
    ) -> list[Candidate] | None:
        """Extend ``chosen`` in candidate order until ``w`` fits; None if it never does."""
        chosen = list(chosen)
        taken = {id(c) for c in chosen}
        self._lift(chosen)
        try:
            for c in candidates:
                if id(c) in taken or not self._valid(w, device_type, c, borrow, mine):
                    continue
                self._lift([c])
                chosen.append(c)
                if self._fits(w, device_type, chosen, borrow) is not None:
                    return chosen
            return None
        finally:
            self._drop(chosen)

    def _clear_server(
        self,
        w: Workload,
        device_type: str,
        index: int,
        local: list[Candidate],
        candidates: list[Candidate],
        borrow: bool,
        mine: float,
    ) -> list[Candidate] | None:
        """Victims on server ``index`` until ``w`` fits there, then any needed for quota."""
        chosen: list[Candidate] = []
        try:
            for c in local:
                if not self._valid(w, device_type, c, borrow, mine):
                    continue
                self._lift([c])
                chosen.append(c)
                if self._server_fits(w, device_type, index, chosen):
                    break
            else:
                return None
            if self.quota_reason(w.tenant, device_type, w.num_cards, borrow=borrow) is None:
                return list(chosen)
        finally:
            self._drop(chosen)
        return self._greedy(w, device_type, candidates, chosen, borrow, mine)

    def _pruned(
        self, w: Workload, device_type: str, chosen: list[Candidate], borrow: bool
    ) -> tuple[list[Candidate], int]:
        """Give back every victim not needed (last chosen first); the server ``w`` then gets."""
        chosen = list(chosen)
        self._lift(chosen)
        try:
            index = self._fits(w, device_type, chosen, borrow)
            assert index is not None  # chosen was built to fit
            if len(chosen) == 1:
                # without any victim it does not fit: the search runs only after w failed to
                # be admitted as things stand, and every lift is undone before it returns
                return chosen, index
            for c in list(reversed(chosen)):
                self._drop([c])
                trial = [x for x in chosen if x is not c]
                trial_index = self._fits(w, device_type, trial, borrow)
                if trial_index is not None:
                    chosen, index = trial, trial_index
                else:
                    self._lift([c])
            return chosen, index
        finally:
            self._drop(chosen)

    def _server_fits(
        self, w: Workload, device_type: str, index: int, victims: list[Candidate]
    ) -> bool:
        s = self.types[device_type].servers[index]
        back = [card for v in victims if v.index == index for card in v.entry.card_indices]
        if s.free_total + len(back) < w.num_cards:
            return False
        if w.tp_size == 1:
            return True
        counts = dict(s.free_in_group)
        for card in back:
            counts[s.group_of[card]] += 1
        return sum(n // w.tp_size for n in counts.values()) >= w.num_cards // w.tp_size

    def _fits_without(self, w: Workload, device_type: str, victims: list[Candidate]) -> int | None:
        """The best-fit server for ``w`` if ``victims`` were stopped (topology only), or None.

        Among servers without victims the best fit is what :meth:`TypeState.find` returns, so
        only the victims' servers are checked one by one.
        """
        extra: dict[int, list[int]] = {}
        for victim in victims:
            if victim.entry.device_type == device_type:
                extra.setdefault(victim.index, []).extend(victim.entry.card_indices)
        types = self.types[device_type]
        best: tuple[int, int] | None = None
        found = types.find(w.num_cards, w.tp_size)
        if found is not None and found not in extra:
            best = (types.servers[found].free_total, found)
            indices: Iterable[int] = sorted(extra)
        else:  # the best fit now is a victim's server (or none fits): check them all
            indices = range(len(types.servers))
        for i in indices:
            s = types.servers[i]
            back = extra.get(i, ())
            total = s.free_total + len(back)
            if total < w.num_cards or (best is not None and (total, i) >= best):
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
