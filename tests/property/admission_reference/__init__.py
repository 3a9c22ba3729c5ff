"""A frozen copy of the admission cycle before the cycle was made faster (issue 17, item 1).

``tests/property/test_admission_equivalence.py`` checks that ``decide_admission`` decides exactly
as this copy does on random scenarios: the speed-ups (searches skipped because they cannot
succeed, O(1) queue heads) must not change a single decision. The copy is the code of
``npucenter.policy.admission`` at commit 4420420 (cycle, preemption, ledger, fair_sharing,
topology; the value types are shared). When a decision rule changes on purpose, change it here
too, in the same commit, and say so.
"""

from __future__ import annotations

from collections.abc import Sequence

from npucenter.policy.admission.types import (
    DEFAULT_ADMISSION_POLICY,
    AdmissionDecision,
    AdmissionPolicy,
    AdmissionSnapshot,
    Workload,
)

from .cycle import run_cycle

__all__ = ["decide_admission_reference"]


def decide_admission_reference(
    snapshot: AdmissionSnapshot,
    pending: Sequence[Workload],
    now_s: float | None = None,
    *,
    policy: AdmissionPolicy = DEFAULT_ADMISSION_POLICY,
) -> AdmissionDecision:
    """The reference cycle: what ``decide_admission`` decided before it was made faster."""
    at_s = snapshot.now_s if now_s is None else now_s
    return run_cycle(snapshot, tuple(pending), at_s, policy)
