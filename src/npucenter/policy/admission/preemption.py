"""Preemption: which running workloads a pending one may stop, and a minimal set that lets it fit.

Victims are work running before the cycle: cohort members' borrowed work (reclaim) and the
tenant's own lower-priority work; the set must free cards on one server in the gang's TP shape.
"""

from __future__ import annotations

from npucenter.policy.admission.fair_sharing import FairSharing
from npucenter.policy.admission.types import Admitted, PreemptionPolicy, Workload
from npucenter.policy.quota import PriorityClass

__all__ = ["VictimSearch"]


class VictimSearch(FairSharing):
    """Fair-sharing state plus the victim search of one cycle."""

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
