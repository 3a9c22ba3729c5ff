"""One admission cycle: the two phases behind :func:`npucenter.policy.admission.decide_admission`.

The state lives only for one call; inputs are never mutated. Everything that orders anything breaks
ties by id, so the decision does not depend on the order of the inputs.
"""

from __future__ import annotations

import heapq
import math
import operator
from collections.abc import Sequence
from dataclasses import fields

from npucenter.errors import InvalidConfigError
from npucenter.policy.admission.ledger import Limits, Node, available
from npucenter.policy.admission.preemption import Candidate, VictimSearch
from npucenter.policy.admission.types import (
    AdmissionDecision,
    AdmissionPolicy,
    AdmissionSnapshot,
    Admitted,
    Pending,
    PendingReason,
    Preemption,
    PreemptionPolicy,
    PreemptionReason,
    TenantUsage,
    Workload,
)
from npucenter.policy.quota import PriorityClass, StopPolicy

__all__ = ["run_cycle"]

# NOTE(admission): the cycle runs two phases over per-tenant queues (priority, then submission
# time).  Phase 1 admits only workloads that stay within their tenant's nominal quota on one of
# their device types, so an owner is served before any borrower; if one does not fit, it may
# preempt (see preemption.py).  A tenant that loses work to reclaim in phase 1 has its deferred
# workloads tried again as owners before phase 2, so a workload set aside as "would borrow" is
# never served after the borrowers.  Phase 2 admits the rest, borrowing.  In each phase the next
# tenant served is the one whose head has the highest priority class, then the lowest fair
# share with the head admitted (fair_sharing.py), then the earliest submission.  A fungible
# workload tries its device types in order: the first that fits without preemption wins, else
# the first where preemption makes room (Kueue's whenCanPreempt: TryNextFlavor).

_PER_TENANT_TYPE = frozenset(
    {
        PendingReason.QUOTA_IN_USE,
        PendingReason.COHORT_EXHAUSTED,
        PendingReason.BUDGET_EXHAUSTED,
        PendingReason.HELD,
        PendingReason.NO_QUOTA_FOR_DEVICE,
    }
)
_LASTING = frozenset(
    {
        PendingReason.QUOTA_LIMIT,
        PendingReason.NO_QUOTA_FOR_DEVICE,
        PendingReason.UNSCHEDULABLE,
    }
)

_UNSEARCHABLE = _LASTING | {PendingReason.BUDGET_EXHAUSTED}

# (-priority class, fair share, submitted_s, id, queue version, queue): ids are unique, so the
# queue itself is never compared
_HeapEntry = tuple[int, float, float, str, int, "_Queue"]
# a remembered failure: (stamp, priority class number, number of the reason in _REASONS, the device type the reason
# is about or "" for the workload's own): atoms only, so that the collector stops tracking it
_Blocked = tuple[int, int, int, str]
_CLASSES = tuple(sorted(PriorityClass))  # class number -> class
_REASONS = tuple(PendingReason)  # reason number -> reason
_REASON_NUMBER = {reason: i for i, reason in enumerate(_REASONS)}
# what waiting holds for a workload of an unknown or a held tenant
_UNKNOWN_TENANT = (0, 0, _REASON_NUMBER[PendingReason.UNKNOWN_TENANT], "")
_HELD = (0, 0, _REASON_NUMBER[PendingReason.HELD], "")
_BY_ID = operator.attrgetter("workload_id")
_BY_SUBMITTED = operator.attrgetter("submitted_s")


class _Queue:
    """One tenant's waiting workloads in the order they are served, and beside each its code:
    the number of its ask's shape (see _Cycle.run) times the number of classes, plus its
    effective priority class (no tuple per workload: a cycle queues thousands)."""

    __slots__ = ("at", "codes", "node", "tenant", "version", "workloads")

    def __init__(self, tenant: str, node: Node) -> None:
        self.tenant = tenant
        self.node = node  # the tenant's leaf in the quota tree
        self.workloads: list[Workload] = []
        self.codes: list[int] = []
        self.at = 0  # the next head (a queue is served by one phase only)
        self.version = 0  # bumped at each ranking of its head: older heap entries are stale


_NUM_CLASSES = len(PriorityClass)  # EnumMeta.__len__ is slow: once


class _Cycle(VictimSearch):
    """One cycle: the ledger, fair sharing and victim search, run in two phases."""

    def __init__(self, snapshot: AdmissionSnapshot, now_s: float, policy: AdmissionPolicy) -> None:
        super().__init__(snapshot, now_s, policy)
        self.reclaimed: set[str] = set()  # tenants that lost work to another tenant
        self.fair_failures: _Memo = {}
        self.fair_on = policy.fair_sharing_preemption and policy.fair_sharing
        # (tenant, type) -> cards per priority class of its work from before the cycle
        self.own_old_cards: dict[tuple[str, str], list[int]] = {}
        # number of the ask's shape (see run) -> its remembered failure, one map per phase kind
        self.blocked_owners: dict[int, _Blocked] = {}
        self.blocked_borrowers: dict[int, _Blocked] = {}
        # (tenant, type, fallbacks, cards, tp) -> its number
        self.shape_ids: dict[tuple[str, str, tuple[str, ...], int, int], int] = {}
        # device type -> quota-tree node -> available cards; an admission or a preemption
        # changes what is available on its own device type only, and starts that type's map
        self.available_cache: dict[str, dict[Node, int]] = {}
        # (tenant, type, cards, tp) -> the static reason the ask can never run there, else the
        # tenant's limits on the type (no pair: one object fewer per entry for the collector)
        self.admit_cache: dict[tuple[str, str, int, int], Limits | PendingReason] = {}
        self.top_share_cache: dict[tuple[str, str, int], tuple[int, float]] = {}
        # (tenant, type) whose eligible_victims was empty: it stays empty for the rest of the
        # cycle (tenants only stop borrowing, `took` only grows), so a search of such a tenant on
        # the type can succeed only with its own lower-priority work
        self.no_victims: set[tuple[str, str]] = set()
        # (tenant, type) -> (preemptions when asked, eligible_victims then)
        self.others_cache: dict[tuple[str, str], tuple[int, list[str]]] = {}

    # -- the phases ---------------------------------------------------------------------------

    def run(self, pending: Sequence[Workload]) -> AdmissionDecision:
        by_id = self.by_id
        # tenant -> its workloads per priority class and its class (the cap)
        buckets: dict[str, tuple[list[list[Workload]], PriorityClass]] = {}
        turned_away: set[str] = set()  # tenants unknown or held: their workloads wait
        running, waiting = self.running, self.waiting
        for w in pending:
            wid, tenant = w.workload_id, w.tenant
            if wid in by_id:
                raise InvalidConfigError("pending", wid, "appears twice in the queue")
            if wid in running:
                raise InvalidConfigError("pending", wid, "is already running")
            by_id[wid] = w
            found = buckets.get(tenant)
            if found is None:
                found = None if tenant in turned_away else self._bucket(tenant)
                if found is None:
                    turned_away.add(tenant)
                    quota = self.quotas.get(tenant)
                    unknown = quota is None or tenant not in self.known_tenants
                    waiting[wid] = _UNKNOWN_TENANT if unknown else _HELD
                    continue
                buckets[tenant] = found
            per_class, ceiling = found
            cls = w.priority_class  # a workload's class is capped by its tenant's
            if cls is None or cls > ceiling:
                cls = ceiling
            per_class[cls].append(w)
        # per tenant: priority class, then submission time, then id (ids are unique); stable
        # sorts on one attribute each, so that no key tuple is made per workload
        shape_ids = self.shape_ids
        queues: dict[str, _Queue] = {}
        for tenant, (per_class, _) in buckets.items():
            queue = queues[tenant] = _Queue(tenant, self.nodes[tenant])
            workloads, codes = queue.workloads, queue.codes
            for rank in reversed(range(_NUM_CLASSES)):
                ws = per_class[rank]
                if not ws:
                    continue
                ws.sort(key=_BY_ID)
                ws.sort(key=_BY_SUBMITTED)
                workloads += ws
                for w in ws:
                    # the ask's shape, numbered: what identical asks share (failures)
                    ask = (tenant, w.device_type, w.fallback_device_types, w.num_cards, w.tp_size)
                    sid = shape_ids.get(ask)
                    if sid is None:
                        sid = shape_ids[ask] = len(shape_ids)
                    codes.append(sid * _NUM_CLASSES + rank)
        deferred = self._phase(queues, owners=True)
        while True:  # owners reclaimed from in phase 1 are owners again for what they deferred
            again = {t: deferred.pop(t) for t in sorted(self.reclaimed) if t in deferred}
            self.reclaimed.clear()
            if not again:
                break
            deferred.update(self._phase(again, owners=True))
        self._phase(deferred, owners=False)
        return self._decision()

    def _owner_types(self, w: Workload) -> tuple[str, ...]:
        """The workload's device types on which it stays within its tenant's nominal quota."""
        node = self.nodes[w.tenant]
        usage, quota = node.usage, node.subtree_quota
        cards = w.num_cards
        return tuple([d for d in w.device_types if usage.get(d, 0) + cards <= quota.get(d, 0)])

    def _bucket(self, tenant: str) -> tuple[list[list[Workload]], PriorityClass] | None:
        """A tenant's empty queue per priority class and its class, None if it is unknown or
        held (its workloads wait)."""
        quota = self.quotas.get(tenant)
        if quota is None or tenant not in self.known_tenants:
            return None
        if quota.stop_policy is not StopPolicy.NONE:
            return None
        return [[] for _ in _CLASSES], quota.priority_class

    def _phase(self, queues: dict[str, _Queue], *, owners: bool) -> dict[str, _Queue]:
        deferred: dict[str, _Queue] = {}
        heap: list[_HeapEntry] = []
        waiting = self.waiting
        fair = self.policy.fair_sharing
        blocked = self.blocked_owners if owners else self.blocked_borrowers
        fair_on = self.fair_on
        preempted = self.preempted
        by_usage, history, hold_s = self.by_usage, self.history, self.hold_s
        block_stamp = self._block_stamp
        num_classes = _NUM_CLASSES

        def entry_for(queue: _Queue) -> _HeapEntry | None:
            """The heap entry of the queue's next head, or None when done.

            Either way the queue's version moves on, so any older entry of it goes stale.
            """
            queue.version += 1
            at, tenant = queue.at, queue.tenant
            workloads, codes = queue.workloads, queue.codes
            size = len(workloads)
            if owners:  # defer heads that would borrow, without a heap round
                node = queue.node
                usage, quota = node.usage, node.subtree_quota
                start = at
                while at < size:
                    head = workloads[at]
                    cards = head.num_cards
                    d = head.device_type
                    if usage.get(d, 0) + cards <= quota.get(d, 0):
                        break
                    within = False
                    for f in head.fallback_device_types:
                        if usage.get(f, 0) + cards <= quota.get(f, 0):
                            within = True  # it stays within nominal on a fallback type
                            break
                    if within:
                        break
                    at += 1
                if at > start:
                    later = deferred.get(tenant)
                    if later is None:
                        later = deferred[tenant] = _Queue(tenant, queue.node)
                    later.workloads += workloads[start:at]
                    later.codes += codes[start:at]
            # heads that fail as an identical ask did: no heap round. Admissions only take
            # cards and quota (and victims are judged by the work they ran before the cycle), so
            # a failure stands until the next preemption that may matter (_block_stamp) for every
            # ask of the same shape at the same or a lower priority
            if blocked and at < size:
                stamp = len(preempted) if fair_on else -1
                while at < size:
                    code = codes[at]
                    found = blocked.get(code // num_classes)
                    if found is None or code % num_classes > found[1]:
                        break
                    head = workloads[at]
                    if found[0] != (stamp if fair_on else block_stamp(head)):
                        break
                    waiting[head.workload_id] = found
                    at += 1
            queue.at = at
            if at >= size:
                return None
            head = workloads[at]
            if not fair:
                share = 0.0
            elif by_usage:  # share_with by usage, inline: it runs once per queue head
                node = queue.node
                share = history.get(tenant, 0.0) + (node.total + head.num_cards) * hold_s
                weight = node.weight
                share = (math.inf if share else 0.0) if weight == 0 else share / weight
            else:
                share = self.share_with(tenant, head.device_type, head.num_cards)
            return (
                -(codes[at] % num_classes),
                share,
                head.submitted_s,
                head.workload_id,
                queue.version,
                queue,
            )

        for tenant in sorted(queues):
            entry = entry_for(queues[tenant])
            if entry is not None:
                heap.append(entry)
        heapq.heapify(heap)
        following: _HeapEntry | None = None
        pushpop, pop, try_admit = heapq.heappushpop, heapq.heappop, self.try_admit
        while True:
            if following is not None:  # one heap operation instead of a push and a pop
                entry = pushpop(heap, following)
            elif heap:
                entry = pop(heap)
            else:
                break
            queue = entry[5]
            if entry[4] != queue.version:  # stale: the tenant was re-ranked since
                following = None
                continue
            at = queue.at
            code = queue.codes[at]
            queue.at = at + 1
            stopped_before = len(preempted)
            try_admit(
                queue.workloads[at], _CLASSES[code % num_classes], code // num_classes, owners
            )
            following = entry_for(queue)
            if len(preempted) > stopped_before:
                tenant = queue.tenant
                for stop in preempted[stopped_before:]:
                    other = queues.get(stop.tenant)
                    if stop.tenant != tenant and other is not None:
                        rerank = entry_for(other)  # its share fell: re-rank it
                        if rerank is not None:
                            heapq.heappush(heap, rerank)
        return deferred

    # -- admission ----------------------------------------------------------------------------

    def try_admit(self, w: Workload, priority: PriorityClass, shape: int, owners: bool) -> None:
        """Admit ``w`` (preempting if allowed and needed), or record why it must wait.

        ``shape``: the number of its ask (see run); ``owners``: phase 1, where only device
        types within the tenant's nominal are tried.
        """
        if w.fallback_device_types:
            self._try_types(w, priority, shape, owners)
            return
        d = w.device_type
        outcome = self._admit_on(w, d, priority)
        if isinstance(outcome, Admitted):
            return
        if outcome not in _UNSEARCHABLE and self.may_preempt:
            pair = (w.tenant, d)
            if pair in self.no_victims:  # _search_for's first check, inline: most end here
                lowest = self.lowest_running.get(pair)
                search = lowest is not None and lowest < priority and self.may_preempt_own
            else:
                search = True
            found = self._search_for(w, d, priority) if search else None
            if found is not None:
                self._preempt_and_place(w, d, priority, found)
                return
        stamp = len(self.preempted) if self.fair_on else self._block_stamp(w)
        blocked = self.blocked_owners if owners else self.blocked_borrowers
        blocked[shape] = self.waiting[w.workload_id] = (
            stamp,
            int(priority),
            _REASON_NUMBER[outcome],
            d,
        )

    def _try_types(self, w: Workload, priority: PriorityClass, shape: int, owners: bool) -> None:
        """:meth:`try_admit` for a fungible workload: each type as is, then with preemption."""
        device_types = (owners and self._owner_types(w)) or w.device_types
        reasons: list[tuple[PendingReason, str]] = []
        for d in device_types:
            outcome = self._admit_on(w, d, priority)
            if isinstance(outcome, Admitted):
                return
            reasons.append((outcome, d))
        if self.may_preempt:
            no_victims = self.no_victims
            for reason, d in reasons:  # nothing fits as is: preempt on the first type that can
                if reason in _UNSEARCHABLE:
                    continue
                if (w.tenant, d) in no_victims:  # _search_for's first check, inline
                    lowest = self.lowest_running.get((w.tenant, d))
                    if lowest is None or lowest >= priority or not self.may_preempt_own:
                        continue
                found = self._search_for(w, d, priority)
                if found is not None:
                    self._preempt_and_place(w, d, priority, found)
                    return
        chosen, on = reasons[0]  # the first reason that clears itself, else the first
        for pair in reasons:
            if pair[0] not in _LASTING:
                chosen, on = pair
                break
        stamp = len(self.preempted) if self.fair_on else self._block_stamp(w)
        blocked = self.blocked_owners if owners else self.blocked_borrowers
        blocked[shape] = self.waiting[w.workload_id] = (
            stamp,
            int(priority),
            _REASON_NUMBER[chosen],
            on,
        )

    def _preempt_and_place(
        self,
        w: Workload,
        d: str,
        priority: PriorityClass,
        found: tuple[list[Candidate], int],
    ) -> Admitted:
        victims, index = found
        for victim in victims:
            self._preempt(victim, w, priority)
        return self._place(w, d, priority, index)

    def _block_stamp(self, w: Workload) -> int:
        """What a failure of ``w`` depends on: preemptions in its tree on its device types (all
        preemptions when fair-sharing preemption may weigh shares over every type)."""
        if self.fair_on:
            return len(self.preempted)
        root = id(self.nodes[w.tenant].root)
        count = self.preempt_count
        if not w.fallback_device_types:
            return count.get((root, w.device_type), 0)
        return sum(count.get((root, d), 0) for d in w.device_types)

    def _admit_on(self, w: Workload, d: str, priority: PriorityClass) -> Admitted | PendingReason:
        """Place ``w`` on ``d`` without preemption, or say why not."""
        tenant, cards = w.tenant, w.num_cards
        key = (tenant, d, cards, w.tp_size)
        found = self.admit_cache.get(key)
        if found is None:
            lim = self.limit_cache.get((tenant, d)) or self.limits(tenant, d)
            found = self.admit_cache[key] = self._static_reason(w, d, lim) or lim
        if not isinstance(found, Limits):
            return found  # a static reason
        lim = found
        if lim.budget_s is not None and self._over_budget(w, d, lim.budget_s):
            return PendingReason.BUDGET_EXHAUSTED
        node = lim.node
        if node.usage.get(d, 0) + cards > lim.max_cards:
            return PendingReason.QUOTA_IN_USE
        # outside a victim search the tree changes only by admission and preemption
        cached = self.available_cache.get(d)  # _available, inline: it runs once per try
        if cached is None:
            cached = self.available_cache[d] = {}
        left = cached.get(node)
        if left is None:
            left = available(node, d, cached)
        if cards > left:
            return PendingReason.COHORT_EXHAUSTED
        index = self.types[d].find(w.num_cards, w.tp_size)
        if index is None:
            return PendingReason.NO_CAPACITY
        return self._place(w, d, priority, index)

    def _search_for(
        self, w: Workload, d: str, priority: PriorityClass
    ) -> tuple[list[Candidate], int] | None:
        """Run the victim search unless it cannot succeed (or failed for a smaller ask).

        Between preemptions in its tree on ``d``, candidates only shrink and usage only grows,
        so a failure for (tenant, type, tp) at c cards and priority p stands for any c' >= c at
        any p' <= p (fair-sharing victims are ranked by the work they ran before the cycle, so
        their shares change only by preemption too, on any type).
        """
        pair = (w.tenant, d)
        others: list[str] = []
        if pair not in self.no_victims:
            # eligible_victims changes only by preemption: asked once per preemption
            asked = self.others_cache.get(pair)
            if asked is not None and asked[0] == len(self.preempted):
                others = asked[1]
            else:
                others = self.eligible_victims(w.tenant, d)
                self.others_cache[pair] = (len(self.preempted), others)
        if not others:
            # no other tenant's work may ever be its victim in this cycle: only its own
            # lower-priority work could make room
            self.no_victims.add(pair)
            lowest = self.lowest_running.get(pair)  # never above the lowest still running
            if lowest is None or lowest >= priority or not self.may_preempt_own:
                return None
        node = self.nodes[w.tenant]
        key = (w.tenant, d, w.tp_size)
        stamp = self.preempt_count.get((id(node.root), d), 0)
        fair_stamp = len(self.preempted)
        memo = self.victim_failures.get(key)
        classical = memo is None or memo[0] != stamp or not _below(memo[1], w.num_cards, priority)
        fair = self.fair_on and node.parent is not None
        if fair:
            memo = self.fair_failures.get(key)
            fair = (
                memo is None or memo[0] != fair_stamp or not _below(memo[1], w.num_cards, priority)
            )
        if not (classical or fair):
            return None
        lim = self.limit_cache.get((w.tenant, d)) or self.limits(w.tenant, d)
        after = node.usage.get(d, 0) + w.num_cards
        if after > lim.max_cards or after <= lim.nominal:
            # its own limit blocks it (only its own lower-priority work helps), or it would not
            # borrow (an owner reclaims instead): fair sharing is between borrowers
            fair = False
        if classical and not self._classical_may_help(w, d, priority, node, others):
            classical = False
            _record(self.victim_failures, key, stamp, w.num_cards, priority)
        if fair:  # some borrowing tenant must rank above it after it is admitted
            mine = self.share_with(w.tenant, d, w.num_cards)
            fair = not math.isinf(mine) and mine <= self._top_share(w, d, priority, others)
            if not fair:
                _record(self.fair_failures, key, fair_stamp, w.num_cards, priority)
        if not (classical or fair):
            return None
        found = self.find_victims(w, d, priority, classical=classical, fair=fair)
        if found is None:
            if classical:
                _record(self.victim_failures, key, stamp, w.num_cards, priority)
            if fair:
                _record(self.fair_failures, key, fair_stamp, w.num_cards, priority)
        return found

    def _top_share(self, w: Workload, d: str, priority: PriorityClass, others: list[str]) -> float:
        """The highest fair share among the tenants whose work on ``d`` may be a victim of
        ``w`` (``others``: :meth:`eligible_victims`; -1 when there are none); cached while
        preemptions stay the same."""
        version = len(self.preempted)  # old shares change only by preemption (any type)
        key = (w.tenant, d, int(priority))
        cached = self.top_share_cache.get(key)
        if cached is None or cached[0] != version:
            top = -1.0
            if others:
                lower_only = self.policy.reclaim_within_cohort is PreemptionPolicy.LOWER_PRIORITY
                cards = self.victim_cards(self.nodes[w.tenant].root, d)
                for tenant in others:
                    if lower_only and not any(cards[tenant][:priority]):
                        continue
                    share = self.old_share(tenant)
                    if share > top:
                        top = share
            cached = self.top_share_cache[key] = (version, top)
        return cached[1]

    def _classical_may_help(
        self, w: Workload, d: str, priority: PriorityClass, node: Node, others: list[str]
    ) -> bool:
        """Whether Kueue's classical attempts could find victims at all (cheap, exact checks:
        False only where the search would fail). ``others``: :meth:`eligible_victims`, the
        other tenants whose work may be a victim at all ([] without a cohort or reclaim)."""
        lowest = self.lowest_running.get((w.tenant, d))  # kept exact by _own_candidates
        own = self.may_preempt_own and lowest is not None and lowest < priority
        cards = self.victim_cards(node.root, d) if others else {}
        if not others:
            usable = False
        elif self.policy.reclaim_within_cohort is PreemptionPolicy.LOWER_PRIORITY:
            usable = any(any(cards[t][:priority]) for t in others)
        else:
            usable = True
        used, nominal = node.usage.get(d, 0), node.subtree_quota.get(d, 0)
        if used + w.num_cards <= nominal:
            return own or usable  # an owner within nominal reclaims
        if usable and used < nominal:
            return True  # with its own lower-priority work gone it may reclaim without borrowing
        if usable and node.depth > 1 and self.has_advantage(w, d):
            return True  # a cohort below the root has room for it: a hierarchical advantage
        # it would borrow: only its own lower-priority work and, with borrow_within_cohort,
        # lower-priority borrowed work may go, and freeing c cards makes at most c available
        freeable = self._own_low_cards(w, d, priority) if own else 0
        if others and self.policy.borrow_within_cohort is not PreemptionPolicy.NEVER:
            threshold = self.policy.borrow_within_cohort_max_priority
            below = priority if threshold is None else min(int(priority), threshold + 1)
            for t in others:
                freeable += sum(cards[t][:below])
        if not freeable:
            return False
        return self._available(d, node) + freeable >= w.num_cards

    def _own_low_cards(self, w: Workload, d: str, priority: PriorityClass) -> int:
        """Cards of the tenant's work from before the cycle on ``d`` below ``priority``."""
        key = (w.tenant, d)
        per_class = self.own_old_cards.get(key)
        if per_class is None:  # built once; _preempt keeps it exact
            per_class = self.own_old_cards[key] = [0] * _NUM_CLASSES
            admitted_now = self.admitted_now
            for entry in self.by_tenant_type.get(key, {}).values():
                if entry.workload_id not in admitted_now:
                    per_class[entry.priority_class] += entry.num_cards
        return sum(per_class[:priority])

    def _available(self, d: str, node: Node) -> int:
        """:func:`available`, cached while admissions and preemptions on ``d`` stay the same."""
        cached = self.available_cache.get(d)
        if cached is None:
            cached = self.available_cache[d] = {}
        found = cached.get(node)
        if found is None:
            found = available(node, d, cached)
        return found

    def _place(self, w: Workload, d: str, priority: PriorityClass, index: int) -> Admitted:
        types = self.types[d]
        node = self.nodes[w.tenant]
        used = node.usage.get(d, 0)
        nominal = node.subtree_quota.get(d, 0)
        cards = types.servers[index].pick(w.num_cards, w.tp_size)
        # Admitted(...) without its keyword __init__ and __post_init__: every field comes from
        # a validated workload, a class, and distinct free cards of one server (pick)
        placed: Admitted = _new(Admitted)
        set_field = _SET_ADMITTED
        set_field["workload_id"](placed, w.workload_id)
        set_field["tenant"](placed, w.tenant)
        set_field["kind"](placed, w.kind)
        set_field["device_type"](placed, d)
        set_field["server_id"](placed, types.servers[index].server.server_id)
        set_field["card_indices"](placed, cards)
        set_field["tp_size"](placed, w.tp_size)
        set_field["priority_class"](placed, priority)
        set_field["admitted_s"](placed, self.now_s)
        set_field["borrowed_cards"](
            placed, max(0, used + w.num_cards - nominal) - max(0, used - nominal)
        )
        set_field["max_duration_s"](placed, w.max_duration_s)
        types.take(index, cards)
        self._account(placed, +1, old=False)
        self.available_cache[d] = {}
        if w.max_duration_s is not None:
            key = (w.tenant, d)
            self.budget_used[key] = self.budget_used.get(key, 0.0) + w.num_cards * w.max_duration_s
        self.admitted.append(placed)
        self.admitted_now.add(w.workload_id)
        return placed

    def _preempt(self, victim: Candidate, by: Workload, priority: PriorityClass) -> None:
        entry = victim.entry
        reason = victim.reason
        if entry.tenant == by.tenant:
            message = f"preempted for {by.workload_id} ({priority.label}) of the same tenant"
        elif reason is PreemptionReason.RECLAIM:
            message = (
                f"tenant {by.tenant} reclaimed its nominal {entry.device_type} cards for "
                f"{by.workload_id}; requeue it"
            )
        elif reason is PreemptionReason.FAIR_SHARING:
            message = (
                f"tenant {by.tenant} has a lower fair share of borrowed {entry.device_type} "
                f"cards; preempted for {by.workload_id}; requeue it"
            )
        else:
            message = (
                f"preempted for the higher-priority borrower {by.workload_id} of tenant "
                f"{by.tenant} (borrow within cohort); requeue it"
            )
        device_type, index = self.server_at[entry.server_id]
        self.types[device_type].release(index, entry.card_indices)
        path = self.nodes[entry.tenant].path()
        before = [n.old.get(device_type, 0) > n.subtree_quota.get(device_type, 0) for n in path]
        self._account(entry, -1, old=True)
        self.forget_victim(entry, device_type, path[-1])
        own_old = self.own_old_cards.get((entry.tenant, device_type))
        if own_old is not None:
            own_old[entry.priority_class] -= entry.num_cards
        self.available_cache[device_type] = {}
        key = (id(path[-1]), device_type)
        self.preempt_count[key] = self.preempt_count.get(key, 0) + 1
        changed = before != [
            n.old.get(device_type, 0) > n.subtree_quota.get(device_type, 0) for n in path
        ]
        if entry.tenant != by.tenant:
            self.reclaimed.add(entry.tenant)
            took = (by.tenant, entry.tenant, device_type)
            if took not in self.took:
                self.took.add(took)
                pair = (entry.tenant, device_type)
                self.took_from[pair] = self.took_from.get(pair, 0) + 1
        if changed:  # who borrows on the type (eligible_victims) changed
            self.eligible_version[key] = self.eligible_version.get(key, 0) + 1
        self.preempted.append(
            Preemption(
                workload_id=entry.workload_id,
                tenant=entry.tenant,
                reason=reason,
                by_workload_id=by.workload_id,
                message=message,
            )
        )

    # -- the record ---------------------------------------------------------------------------

    def _message(self, w: Workload, d: str, reason: PendingReason) -> str:
        """One actionable line for a pending record, from the state at the end of the cycle."""
        quota = self.quotas.get(w.tenant)
        if reason is PendingReason.UNKNOWN_TENANT:
            return f"tenant {w.tenant} has no quota; ask the operator to set one"
        if quota is None:  # pragma: no cover - every other reason has a quota
            return reason.value
        if reason is PendingReason.HELD:
            return (
                f"tenant {w.tenant} is held (stop policy {quota.stop_policy.value}); "
                "it starts when the operator releases the tenant"
            )
        used = self.used(w.tenant, d)
        also = ""
        if w.fallback_device_types:
            also = f" (accepts {', '.join(w.device_types)}; none admits it now)"
        if reason is PendingReason.UNSCHEDULABLE:
            text = (
                f"no healthy {d} server can hold {w.num_cards} cards in TP groups of "
                f"{w.tp_size}; ask for fewer cards or another device type"
            )
        elif reason is PendingReason.NO_QUOTA_FOR_DEVICE:
            text = (
                f"tenant {w.tenant}'s quota names no {d} cards, so it may not borrow them; "
                "ask the operator for a nominal quota on it or to allow borrowing unnamed types"
            )
        elif reason is PendingReason.QUOTA_LIMIT:
            text = (
                f"{w.num_cards} {d} cards exceed what tenant {w.tenant}'s quota and cohort could "
                f"ever give ({self.limits(w.tenant, d).max_cards:g}); ask the operator for more"
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
                f"tenant {w.tenant} holds {used} of its {self.limits(w.tenant, d).max_cards:g} "
                f"{d} cards; it starts when the tenant's own work ends"
            )
        elif reason is PendingReason.COHORT_EXHAUSTED:
            left = self._available(d, self.nodes[w.tenant])
            text = (
                f"cohort {quota.cohort or '(none)'} can lend {max(0, left)} more {d} cards to "
                f"tenant {w.tenant}; it starts when cohort members release cards"
            )
        else:
            text = (
                f"no {d} server has {w.num_cards} free cards in TP groups of {w.tp_size} "
                f"({self.types[d].total_free} free in all); it starts when cards free up"
            )
        return text + also

    def _pending_records(self) -> tuple[Pending, ...]:
        texts: dict[tuple[PendingReason, str, str, int, int, tuple[str, ...]], str] = {}
        records: list[Pending] = []
        append = records.append
        by_id, waiting, reasons = self.by_id, self.waiting, _REASONS
        per_tenant_type = _PER_TENANT_TYPE
        new, set_id, set_tenant, set_reason, set_message = (
            _new,
            _SET_ID,
            _SET_TENANT,
            _SET_REASON,
            _SET_MESSAGE,
        )
        for wid in sorted(waiting):
            w = by_id[wid]
            _, _, number, d = waiting[wid]
            reason = reasons[number]
            d = d or w.device_type
            if reason in per_tenant_type:  # the text names no size: share it
                key = (reason, w.tenant, d, 0, 0, w.fallback_device_types)
            else:
                key = (reason, w.tenant, d, w.num_cards, w.tp_size, w.fallback_device_types)
            text = texts.get(key)
            if text is None:
                text = texts[key] = self._message(w, d, reason)
            # Pending(...) without the frozen dataclass' keyword __init__: its slots set
            # directly (half the cost; one per waiting workload, thousands a cycle)
            record: Pending = new(Pending)
            set_id(record, wid)
            set_tenant(record, w.tenant)
            set_reason(record, reason)
            set_message(record, text)
            append(record)
        return tuple(records)

    def _decision(self) -> AdmissionDecision:
        usage: dict[str, TenantUsage] = {}
        for tenant in sorted(self.quotas):
            quota = self.quotas[tenant]
            node = self.nodes[tenant]
            held = node.usage
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


_Memo = dict[tuple[str, str, int], tuple[int, list[int | None]]]

_new = object.__new__
_SET_ID, _SET_TENANT, _SET_REASON, _SET_MESSAGE = (
    getattr(Pending, name).__set__ for name in ("workload_id", "tenant", "reason", "message")
)
_SET_ADMITTED = {field.name: getattr(Admitted, field.name).__set__ for field in fields(Admitted)}


def _below(smallest: list[int | None], cards: int, priority: int) -> bool:
    """Whether a search failed at ``priority`` or above with at most ``cards`` cards."""
    for p in range(int(priority), len(smallest)):
        failed_cards = smallest[p]
        if failed_cards is not None and failed_cards <= cards:
            return True
    return False


def _record(memo: _Memo, key: tuple[str, str, int], stamp: int, cards: int, priority: int) -> None:
    found = memo.get(key)
    if found is None or found[0] != stamp:
        found = memo[key] = (stamp, [None] * _NUM_CLASSES)
    smallest = found[1]
    current = smallest[int(priority)]
    if current is None or cards < current:
        smallest[int(priority)] = cards


def run_cycle(
    snapshot: AdmissionSnapshot,
    pending: Sequence[Workload],
    now_s: float,
    policy: AdmissionPolicy,
) -> AdmissionDecision:
    """Run one cycle; see :func:`npucenter.policy.admission.decide_admission`."""
    return _Cycle(snapshot, now_s, policy).run(pending)
