"""Capacity planner: the cheapest NPU:GPU fleet that meets every service's SLO under a power cap.

A MILP (scipy.optimize.milp / HiGHS) chooses whole servers per device type and replicas per
candidate configuration; per-replica capacities come from a :class:`ProfileSource`; the chosen
plan is verified by simulation. Pure core: no I/O, no clock reads.
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
from npucenter.plan.spec import PlanSpec, parse_plan_spec

__all__ = [
    "Allocation",
    "CapacityProblem",
    "DeviceType",
    "PlanSpec",
    "ReplicaOption",
    "pareto_front",
    "parse_plan_spec",
    "solve_capacity",
]
