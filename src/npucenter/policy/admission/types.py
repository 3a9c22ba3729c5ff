"""The values of admission: inventory, workloads, placements, snapshot, policy knobs and decision.

Frozen dataclasses validated at construction (``InvalidConfigError``); import them from
``npucenter.policy.admission``, which re-exports every public name here.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from npucenter.errors import InvalidConfigError
from npucenter.policy.quota import CohortQuota, PriorityClass, TenantQuota

__all__ = [
    "DEFAULT_ADMISSION_POLICY",
    "AdmissionDecision",
    "AdmissionPolicy",
    "AdmissionSnapshot",
    "Admitted",
    "Card",
    "FairSharingBasis",
    "Pending",
    "PendingReason",
    "Preemption",
    "PreemptionPolicy",
    "PreemptionReason",
    "Server",
    "TenantUsage",
    "Workload",
    "WorkloadKind",
    "servers_from_cards",
]


# ----------------------------------------------------------------------------------------------
# Inventory
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Card:
    """One accelerator card as the store lists it; see :func:`servers_from_cards`."""

    server_id: str
    card_index: int
    device_type: str
    interconnect_group: int = 0  # cards of one server sharing a group id share an interconnect
    healthy: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class Server:
    """A server holding ``num_cards`` cards of one device type.

    ``interconnect_groups`` gives each card's interconnect group id (one entry per card, e.g.
    ``(0, 0, 0, 0, 1, 1, 1, 1)`` for two 4-card islands); empty means all cards share one
    interconnect. A tensor-parallel group is placed inside one interconnect group.
    """

    server_id: str
    device_type: str
    num_cards: int
    interconnect_groups: tuple[int, ...] = ()  # card index -> group id; () = one group
    healthy: bool = True
    unhealthy_card_indices: frozenset[int] = frozenset()

    def __post_init__(self) -> None:
        if not isinstance(self.server_id, str) or not self.server_id:
            raise InvalidConfigError("server_id", self.server_id, "must be a non-empty string")
        if not isinstance(self.device_type, str) or not self.device_type:
            raise InvalidConfigError("device_type", self.device_type, "must be a non-empty string")
        if isinstance(self.num_cards, bool) or not isinstance(self.num_cards, int):
            raise InvalidConfigError("num_cards", self.num_cards, "must be a whole number")
        if self.num_cards < 0:
            raise InvalidConfigError("num_cards", self.num_cards, "must be >= 0")
        groups = tuple(self.interconnect_groups)
        if groups and len(groups) != self.num_cards:
            raise InvalidConfigError(
                "interconnect_groups",
                groups,
                f"needs one group id per card ({self.num_cards}), got {len(groups)}",
            )
        object.__setattr__(self, "interconnect_groups", groups)
        bad = frozenset(self.unhealthy_card_indices)
        for index in bad:
            if not 0 <= index < self.num_cards:
                raise InvalidConfigError(
                    "unhealthy_card_indices", index, f"not a card of {self.server_id}"
                )
        object.__setattr__(self, "unhealthy_card_indices", bad)

    def group_of(self, card_index: int) -> int:
        """The interconnect group of one card."""
        return self.interconnect_groups[card_index] if self.interconnect_groups else 0

    def usable_card_indices(self) -> tuple[int, ...]:
        """Cards that may be given to workloads (none when the server is unhealthy)."""
        if not self.healthy:
            return ()
        return tuple(i for i in range(self.num_cards) if i not in self.unhealthy_card_indices)


def servers_from_cards(cards: Iterable[Card]) -> tuple[Server, ...]:
    """Group a store's card rows into :class:`Server` values (sorted by server id).

    A server is healthy when at least one of its cards is; unhealthy cards are listed per server.
    A gap in a server's card indices (a card removed) is treated as an unhealthy card.

    Raises:
        InvalidConfigError: one server lists two device types, or a card index twice or < 0.
    """
    by_server: dict[str, list[Card]] = {}
    for card in cards:
        by_server.setdefault(card.server_id, []).append(card)
    servers: list[Server] = []
    for server_id in sorted(by_server):
        rows = sorted(by_server[server_id], key=lambda c: c.card_index)
        types = {c.device_type for c in rows}
        if len(types) != 1:
            raise InvalidConfigError("device_type", sorted(types), f"{server_id} mixes types")
        indices = [c.card_index for c in rows]
        if len(set(indices)) != len(indices) or indices[0] < 0:
            raise InvalidConfigError(
                "card_index", indices, f"{server_id} needs distinct card indices >= 0"
            )
        num_cards = indices[-1] + 1
        by_index = {c.card_index: c for c in rows}
        servers.append(
            Server(
                server_id=server_id,
                device_type=rows[0].device_type,
                num_cards=num_cards,
                interconnect_groups=tuple(
                    by_index[i].interconnect_group if i in by_index else -1
                    for i in range(num_cards)
                ),
                healthy=any(c.healthy for c in rows),
                unhealthy_card_indices=frozenset(
                    i for i in range(num_cards) if i not in by_index or not by_index[i].healthy
                ),
            )
        )
    return tuple(servers)


# ----------------------------------------------------------------------------------------------
# Workloads and their placements
# ----------------------------------------------------------------------------------------------


class WorkloadKind(enum.StrEnum):
    """What a workload is; admission treats all kinds alike (the kind is carried for reports)."""

    REPLICA = "replica"
    FINETUNE = "finetune"
    PREPROCESS = "preprocess"
    BENCHMARK = "benchmark"
    SIMULATE = "simulate"  # the twin as a job (npucenter.jobs.twin)
    PLAN = "plan"


@dataclass(frozen=True, slots=True, kw_only=True)
class Workload:
    """A pending inference replica or job: a gang of ``num_cards`` cards on one server.

    The gang is split into ``num_cards // tp_size`` tensor-parallel groups; each group is placed
    on cards sharing one interconnect. ``priority_class`` None means the tenant's class; a class
    above the tenant's is capped to it. ``fallback_device_types`` makes the workload fungible
    (Kueue's flavor fungibility): ``device_type`` first, then each fallback in order; it is
    placed on the first with quota and room (see :attr:`device_types`).
    """

    workload_id: str
    tenant: str
    kind: WorkloadKind = WorkloadKind.REPLICA
    device_type: str
    num_cards: int = 1  # the gang: all on one server, admitted all or nothing
    tp_size: int = 1  # cards per tensor-parallel group (divides num_cards)
    priority_class: PriorityClass | None = None
    submitted_s: float = 0.0
    max_duration_s: float | None = None  # if set, charged against the device-seconds budget
    fallback_device_types: tuple[str, ...] = ()  # tried in order after device_type

    def __post_init__(self) -> None:
        fallbacks = tuple(self.fallback_device_types)
        for device_type in fallbacks:
            if not isinstance(device_type, str) or not device_type:
                raise InvalidConfigError(
                    "fallback_device_types", device_type, "must be non-empty strings"
                )
        if len(set((self.device_type, *fallbacks))) != len(fallbacks) + 1:
            raise InvalidConfigError(
                "fallback_device_types", fallbacks, "names a device type twice"
            )
        object.__setattr__(self, "fallback_device_types", fallbacks)
        for name in ("workload_id", "tenant", "device_type"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise InvalidConfigError(name, value, "must be a non-empty string")
        try:
            object.__setattr__(self, "kind", WorkloadKind(self.kind))
        except ValueError:
            raise InvalidConfigError(
                "kind", self.kind, "use one of: " + ", ".join(k.value for k in WorkloadKind)
            ) from None
        if self.priority_class is not None:
            object.__setattr__(self, "priority_class", PriorityClass.parse(self.priority_class))
        for name in ("num_cards", "tp_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidConfigError(name, value, "must be a whole number >= 1")
        if self.num_cards % self.tp_size:
            raise InvalidConfigError(
                "tp_size",
                self.tp_size,
                f"must divide num_cards={self.num_cards}",
                hint="ask for a multiple of the tensor-parallel size",
            )
        if not math.isfinite(self.submitted_s):
            raise InvalidConfigError("submitted_s", self.submitted_s, "must be finite")
        if self.max_duration_s is not None and not (
            math.isfinite(self.max_duration_s) and self.max_duration_s > 0
        ):
            raise InvalidConfigError("max_duration_s", self.max_duration_s, "must be > 0")

    @property
    def device_types(self) -> tuple[str, ...]:
        """The device types this workload accepts, in order of preference."""
        return (self.device_type, *self.fallback_device_types)


@dataclass(frozen=True, slots=True, kw_only=True)
class Admitted:
    """A workload placed on cards: the output of a decision and, later, a running entry of a snapshot."""

    workload_id: str
    tenant: str
    kind: WorkloadKind = WorkloadKind.REPLICA
    device_type: str
    server_id: str
    card_indices: tuple[int, ...]
    tp_size: int = 1
    priority_class: PriorityClass = PriorityClass.RESEARCH
    admitted_s: float = 0.0
    borrowed_cards: int = 0  # cards above the tenant's nominal at admission (lent by its cohort)
    max_duration_s: float | None = None

    def __post_init__(self) -> None:
        cards = tuple(self.card_indices)
        if not cards or len(set(cards)) != len(cards) or min(cards) < 0:
            raise InvalidConfigError(
                "card_indices", cards, f"{self.workload_id} needs distinct card indices >= 0"
            )
        object.__setattr__(self, "card_indices", cards)
        object.__setattr__(self, "kind", WorkloadKind(self.kind))
        object.__setattr__(self, "priority_class", PriorityClass.parse(self.priority_class))

    @property
    def num_cards(self) -> int:
        """How many cards this workload holds."""
        return len(self.card_indices)


# ----------------------------------------------------------------------------------------------
# Snapshot, policy and decision
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class AdmissionSnapshot:
    """What a scheduling cycle reads: the fleet, every tenant's quota and what runs now.

    ``cohorts`` describes nested cohorts (a parent and quotas of their own); a cohort a tenant
    names but ``cohorts`` does not describe is flat. ``usage_history_card_s`` is each tenant's
    decayed card-seconds (see :func:`npucenter.policy.admission.decayed_usage_card_s`), read
    only when fair sharing is by usage.
    """

    fleet: tuple[Server, ...]
    quotas: tuple[TenantQuota, ...]
    running: tuple[Admitted, ...] = ()
    now_s: float = 0.0
    #: tenant -> device_type -> device-seconds used so far in the accounting period
    device_seconds_used: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    cohorts: tuple[CohortQuota, ...] = ()
    #: tenant -> decayed card-seconds of recent use (fair sharing by usage)
    usage_history_card_s: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "fleet", tuple(self.fleet))
        object.__setattr__(self, "quotas", tuple(self.quotas))
        object.__setattr__(self, "running", tuple(self.running))
        object.__setattr__(self, "cohorts", tuple(self.cohorts))
        _require_unique("server_id", [s.server_id for s in self.fleet])
        _require_unique("tenant", [q.tenant for q in self.quotas])
        _require_unique("workload_id", [a.workload_id for a in self.running])
        _require_unique("cohort", [c.name for c in self.cohorts])
        _check_cohort_tree(self.cohorts)
        for tenant, card_s in self.usage_history_card_s.items():
            if not (math.isfinite(card_s) and card_s >= 0):
                raise InvalidConfigError(
                    f"usage_history_card_s[{tenant}]", card_s, "must be finite and >= 0"
                )


class FairSharingBasis(enum.StrEnum):
    """What fair sharing compares between tenants.

    ``borrowed``: Kueue's dominant resource share, cards held above nominal over what the
    cohort can lend. ``usage``: Kueue's admission fair sharing, decayed recent card-seconds plus
    what the tenant holds now.
    """

    BORROWED = "borrowed"
    USAGE = "usage"


class PreemptionPolicy(enum.StrEnum):
    """Which running workloads a pending one may preempt (Kueue's ``Never``/``LowerPriority``/``Any``)."""

    NEVER = "never"
    LOWER_PRIORITY = "lower-priority"
    ANY = "any"


@dataclass(frozen=True, slots=True, kw_only=True)
class AdmissionPolicy:
    """Knobs of the cycle; the defaults are npucenter's documented behaviour (docs/admission.md)."""

    #: an owner within its nominal quota may preempt cohort members' borrowing workloads
    reclaim_within_cohort: PreemptionPolicy = PreemptionPolicy.ANY
    #: a workload may preempt its own tenant's workloads of the same device type
    within_tenant: PreemptionPolicy = PreemptionPolicy.LOWER_PRIORITY
    #: order tenants by fair share (else only priority and submission time)
    fair_sharing: bool = True
    #: what fair sharing compares: cards borrowed (Kueue's DRS) or decayed recent usage
    fair_sharing_basis: FairSharingBasis = FairSharingBasis.BORROWED
    #: half-life of usage history; a tenant's current cards count as held for this long / ln 2
    usage_half_life_s: float = 3600.0
    #: a borrowing workload may preempt cohort members' borrowed work whose tenant's share stays
    #: above its own after the preemption (Kueue's fair-sharing preemption)
    fair_sharing_preemption: bool = False
    #: a borrowing workload may preempt lower-priority work of borrowing cohort members
    #: (Kueue's borrowWithinCohort): never or lower-priority
    borrow_within_cohort: PreemptionPolicy = PreemptionPolicy.NEVER
    #: with borrow_within_cohort: only victims of this class or lower (None: any lower class)
    borrow_within_cohort_max_priority: PriorityClass | None = None

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "reclaim_within_cohort", PreemptionPolicy(self.reclaim_within_cohort)
        )
        object.__setattr__(self, "within_tenant", PreemptionPolicy(self.within_tenant))
        object.__setattr__(self, "fair_sharing_basis", FairSharingBasis(self.fair_sharing_basis))
        object.__setattr__(
            self, "borrow_within_cohort", PreemptionPolicy(self.borrow_within_cohort)
        )
        if self.within_tenant is PreemptionPolicy.ANY:
            raise InvalidConfigError(
                "within_tenant",
                "any",
                "would let a workload preempt its equals; use lower-priority",
            )
        if self.borrow_within_cohort is PreemptionPolicy.ANY:
            raise InvalidConfigError(
                "borrow_within_cohort",
                "any",
                "a borrower may preempt only lower-priority work; use lower-priority",
            )
        if self.borrow_within_cohort_max_priority is not None:
            object.__setattr__(
                self,
                "borrow_within_cohort_max_priority",
                PriorityClass.parse(self.borrow_within_cohort_max_priority),
            )
        if not (math.isfinite(self.usage_half_life_s) and self.usage_half_life_s > 0):
            raise InvalidConfigError("usage_half_life_s", self.usage_half_life_s, "must be > 0")

    @classmethod
    def from_text(cls, text: str) -> AdmissionPolicy:
        """A policy from ``"knob=value,..."`` (the ``NPUCENTER_ADMISSION_POLICY`` setting).

        Knobs are the field names (``-`` may stand for ``_``); booleans are ``true``/``false``
        (or ``on``/``off``, ``1``/``0``). Example: ``"fair_sharing_basis=usage,
        borrow_within_cohort=lower-priority,fair_sharing_preemption=on"``; ``""`` is the default.

        Raises:
            InvalidConfigError: an unknown knob, a pair without ``=``, or a bad value.
        """
        fields: dict[str, object] = {}
        known = set(cls.__dataclass_fields__)
        for part in (p.strip() for p in text.split(",")):
            if not part:
                continue
            name, sep, value = part.partition("=")
            name = name.strip().replace("-", "_")
            value = value.strip()
            if not sep or name not in known:
                raise InvalidConfigError(
                    "admission_policy",
                    part,
                    "use knob=value with knobs " + ", ".join(sorted(known)),
                )
            kind = cls.__dataclass_fields__[name].type
            if kind in ("bool", bool):
                if value.lower() not in ("true", "false", "on", "off", "1", "0"):
                    raise InvalidConfigError(
                        f"admission_policy.{name}", value, "must be true/false"
                    )
                fields[name] = value.lower() in ("true", "on", "1")
            elif kind in ("float", float):
                try:
                    fields[name] = float(value)
                except ValueError:
                    raise InvalidConfigError(
                        f"admission_policy.{name}", value, "must be a number"
                    ) from None
            elif name == "borrow_within_cohort_max_priority":
                fields[name] = None if value.lower() in ("", "none") else PriorityClass.parse(value)
            else:
                fields[name] = value
        try:
            return cls(**fields)  # type: ignore[arg-type]
        except ValueError as exc:
            raise InvalidConfigError("admission_policy", text, str(exc)) from None


DEFAULT_ADMISSION_POLICY = AdmissionPolicy()


def _check_cohort_tree(cohorts: Sequence[CohortQuota]) -> None:
    parent = {c.name: c.parent for c in cohorts}
    for name in sorted(parent):
        seen = {name}
        at = parent[name]
        while at is not None:
            if at in seen:
                raise InvalidConfigError("cohorts", name, f"its parents loop back to {at}")
            seen.add(at)
            at = parent.get(at)


class PendingReason(enum.StrEnum):
    """Why a workload stays pending; the first four clear themselves as the fleet changes."""

    NO_CAPACITY = "no_capacity"  # quota allows it, but no server has the free cards (topology)
    COHORT_EXHAUSTED = "cohort_exhausted"  # it would borrow, but the cohort has nothing to lend
    QUOTA_IN_USE = "quota_in_use"  # nominal + borrowing limit is taken by the tenant's own work
    BUDGET_EXHAUSTED = "budget_exhausted"  # the device-seconds budget would be overspent
    QUOTA_LIMIT = "quota_limit"  # larger than nominal + borrowing limit: never admissible as is
    NO_QUOTA_FOR_DEVICE = "no_quota_for_device"  # the quota names no cards of that device type
    UNSCHEDULABLE = "unschedulable"  # no healthy server of that device type could ever hold it
    UNKNOWN_TENANT = "unknown_tenant"  # the tenant has no quota
    HELD = "held"  # the tenant is held (stop policy hold or hold-and-drain)


class PreemptionReason(enum.StrEnum):
    """Why a running workload is stopped (and should be requeued by the control plane)."""

    RECLAIM = "reclaim"  # its cohort member took back nominal cards this tenant had borrowed
    RECLAIM_WHILE_BORROWING = "reclaim_while_borrowing"  # a higher-priority borrower took them
    FAIR_SHARING = "fair_sharing"  # a borrower with a lower fair share took them
    PRIORITY = "priority"  # a higher-priority workload of the same tenant needed the cards
    UNHEALTHY = "unhealthy"  # its server or one of its cards is unhealthy or gone
    DRAIN = "drain"  # its tenant is held and drained (stop policy hold-and-drain)


@dataclass(frozen=True, slots=True, kw_only=True)
class Pending:
    """A workload left pending this cycle, with the reason and one actionable line."""

    workload_id: str
    tenant: str
    reason: PendingReason
    message: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Preemption:
    """A running workload to stop, why, and for whom."""

    workload_id: str
    tenant: str
    reason: PreemptionReason
    by_workload_id: str | None  # the workload it makes room for; None for UNHEALTHY
    message: str


@dataclass(frozen=True, slots=True, kw_only=True)
class TenantUsage:
    """A tenant's cards after the decision, against its quota."""

    tenant: str
    cohort: str | None
    used_cards: Mapping[str, int]  # device_type -> cards held
    nominal_cards: Mapping[str, int]
    borrowed_cards: Mapping[str, int]  # device_type -> cards above nominal (0 entries omitted)
    #: the fair-sharing rank: by default max over device types of borrowed / what the cohort
    #: can lend, divided by the weight (Kueue's dominant resource share)
    dominant_share: float


@dataclass(frozen=True, slots=True, kw_only=True)
class AdmissionDecision:
    """The record of one cycle: what to start, what to stop, what waits and why."""

    now_s: float
    admitted: tuple[Admitted, ...]  # in admission order
    preempted: tuple[Preemption, ...]  # in decision order
    pending: tuple[Pending, ...]  # sorted by workload id
    usage: Mapping[str, TenantUsage]  # tenant -> usage after the decision

    def admitted_ids(self) -> frozenset[str]:
        """Ids of the workloads admitted this cycle."""
        return frozenset(a.workload_id for a in self.admitted)

    def preempted_ids(self) -> frozenset[str]:
        """Ids of the running workloads to stop."""
        return frozenset(p.workload_id for p in self.preempted)

    def pending_reason(self, workload_id: str) -> PendingReason | None:
        """Why ``workload_id`` waits, or None if it was not left pending."""
        for entry in self.pending:
            if entry.workload_id == workload_id:
                return entry.reason
        return None


def _require_unique(name: str, values: Sequence[str]) -> None:
    seen: set[str] = set()
    for value in values:
        if value in seen:
            raise InvalidConfigError(name, value, "appears twice in the snapshot")
        seen.add(value)
