"""One admission cycle: the two phases behind :func:`npucenter.policy.admission.decide_admission`.

The state lives only for one call; inputs are never mutated. Everything that orders anything breaks
ties by id, so the decision does not depend on the order of the inputs.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence

from npucenter.errors import InvalidConfigError
from npucenter.policy.admission.preemption import VictimSearch
from npucenter.policy.admission.types import (
    AdmissionDecision,
    AdmissionPolicy,
    AdmissionSnapshot,
    Admitted,
    Pending,
    PendingReason,
    Preemption,
    PreemptionReason,
    TenantUsage,
    Workload,
)
from npucenter.policy.quota import PriorityClass

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


class _Cycle(VictimSearch):
    """One cycle: the ledger, fair sharing and victim search, run in two phases."""

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
