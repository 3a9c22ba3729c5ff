"""Capacity planner: the cheapest NPU:GPU fleet that meets every service's SLO under a power cap.

A MILP (scipy.optimize.milp / HiGHS) chooses whole servers per device type and replicas per
candidate configuration; per-replica capacities come from a :class:`ProfileSource`; the chosen
plan is verified by simulation (:mod:`npucenter.plan.simulate`). Pure core: no I/O, no clocks.
See docs/planner.md.
"""

from __future__ import annotations

from npucenter.plan.milp import (
    Allocation,
    CapacityProblem,
    DeviceType,
    ReplicaOption,
    pareto_front,
    solve_capacity,
)
from npucenter.plan.planner import (
    BASELINES,
    PlanOutcome,
    PlanResult,
    Verification,
    Verifier,
    plan_capacity,
)
from npucenter.plan.profile import (
    AnalyticProfile,
    CachedProfile,
    Candidate,
    ProfileSource,
    TrafficStats,
)
from npucenter.plan.spec import PlanSpec, parse_plan_spec

__all__ = [
    "BASELINES",
    "Allocation",
    "AnalyticProfile",
    "CachedProfile",
    "Candidate",
    "CapacityProblem",
    "DeviceType",
    "PlanOutcome",
    "PlanResult",
    "PlanSpec",
    "ProfileSource",
    "ReplicaOption",
    "TrafficStats",
    "Verification",
    "Verifier",
    "pareto_front",
    "parse_plan_spec",
    "plan_capacity",
    "solve_capacity",
]
