"""Admission of inference replicas and jobs onto the fleet: quotas, cohorts, fair share, preemption.

``decide_admission(snapshot, pending, now_s)`` is one pure, deterministic function shared by the
live control plane and the simulator: it reads a snapshot and returns a decision record; it never
mutates its inputs, reads no clock and does no I/O. Invariants: no card is given twice, no tenant
exceeds nominal + borrowing limit, no cohort lends more than its members' lending limits.
This module is the public face: every admission type is importable from here.
"""

from __future__ import annotations

from collections.abc import Sequence

from npucenter.policy.admission.cycle import run_cycle
from npucenter.policy.admission.fair_sharing import decayed_usage_card_s
from npucenter.policy.admission.types import (
    DEFAULT_ADMISSION_POLICY,
    AdmissionDecision,
    AdmissionPolicy,
    AdmissionSnapshot,
    Admitted,
    Card,
    FairSharingBasis,
    Pending,
    PendingReason,
    Preemption,
    PreemptionPolicy,
    PreemptionReason,
    Server,
    TenantUsage,
    Workload,
    WorkloadKind,
    servers_from_cards,
)
from npucenter.policy.quota import (
    DEFAULT_TOKEN_BURST_S,
    CohortQuota,
    PriorityClass,
    StopPolicy,
    TenantQuota,
    TokenAdmission,
    TokenBudget,
)

__all__ = [
    "DEFAULT_ADMISSION_POLICY",
    "DEFAULT_TOKEN_BURST_S",
    "AdmissionDecision",
    "AdmissionPolicy",
    "AdmissionSnapshot",
    "Admitted",
    "Card",
    "CohortQuota",
    "FairSharingBasis",
    "Pending",
    "PendingReason",
    "Preemption",
    "PreemptionPolicy",
    "PreemptionReason",
    "PriorityClass",
    "Server",
    "StopPolicy",
    "TenantQuota",
    "TenantUsage",
    "TokenAdmission",
    "TokenBudget",
    "Workload",
    "WorkloadKind",
    "decayed_usage_card_s",
    "decide_admission",
    "servers_from_cards",
]


def decide_admission(
    snapshot: AdmissionSnapshot,
    pending: Sequence[Workload],
    now_s: float | None = None,
    *,
    policy: AdmissionPolicy = DEFAULT_ADMISSION_POLICY,
) -> AdmissionDecision:
    """Decide one scheduling cycle: which pending workloads start where, and what is preempted.

    Pure and deterministic: the same snapshot and pending set (in any order) give the same
    decision. ``now_s`` (the admission time stamped on placements) defaults to
    ``snapshot.now_s``. The rules are described in docs/admission.md.

    Raises:
        InvalidConfigError: two pending workloads share an id, a pending id is already running,
            or two running workloads hold the same card.

    Example::

        decision = decide_admission(snapshot, queue, now_s=clock.now_s())
        for placed in decision.admitted: executor.start(placed)
        for stop in decision.preempted: executor.stop(stop.workload_id); requeue(stop)
    """
    at_s = snapshot.now_s if now_s is None else now_s
    return run_cycle(snapshot, tuple(pending), at_s, policy)
