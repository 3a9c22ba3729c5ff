"""Routing: which engine replica serves a request — one home for the live gateway and the twin.

Policies are plain deterministic objects: a :class:`RoutingSnapshot` and a :class:`RouteRequest`
in, a :class:`RouteDecision` out. They never import simulator or gateway types and never read a
clock; any memory they keep (round-robin's counter, prefix affinity's LRU) depends only on the
sequence of calls, so replaying the same calls gives the same answers.

Layout (one policy per module; each imports only the shared modules below it, never this
package, so there is no import circle; an import-linter contract holds it): ``types`` (values,
estimator Protocols), ``index`` (``RoutingSnapshot`` and ``ReplicaIndex``, the incrementally
kept snapshot whose views give the scan's answer without Python per replica), ``registry`` (the
``RoutingPolicy`` Protocol, ``ROUTING_POLICIES``, ``make_routing_policy``), ``estimate``
(TTFT/TPOT estimates), then ``round_robin``, ``least_outstanding``, ``least_requests``,
``npu_first``, ``slo_aware``, ``prefix_affinity``. Importing anything under
``npucenter.policy.routing`` registers them all.
"""

from __future__ import annotations

from npucenter.policy.routing.estimate import PerfEstimator
from npucenter.policy.routing.index import ReplicaIndex, RoutingSnapshot
from npucenter.policy.routing.least_outstanding import LeastOutstandingTokens
from npucenter.policy.routing.least_requests import LeastRequests
from npucenter.policy.routing.npu_first import NpuFirst
from npucenter.policy.routing.prefix_affinity import (
    PrefixAffinity,
    PrefixAffinityWeights,
    PrefixIndex,
    prefix_block_hashes,
)
from npucenter.policy.routing.registry import (
    ROUTING_POLICIES,
    RoutingPolicy,
    RoutingPolicyFactory,
    make_routing_policy,
)
from npucenter.policy.routing.round_robin import RoundRobin
from npucenter.policy.routing.slo_aware import SloAware
from npucenter.policy.routing.types import (
    DEFAULT_TTFT_SLO_S,
    ReplicaState,
    RouteDecision,
    RouteRequest,
    RoutingContext,
    StepLatencyModel,
    TtftEstimator,
)

__all__ = [
    "DEFAULT_TTFT_SLO_S",
    "ROUTING_POLICIES",
    "LeastOutstandingTokens",
    "LeastRequests",
    "NpuFirst",
    "PerfEstimator",
    "PrefixAffinity",
    "PrefixAffinityWeights",
    "PrefixIndex",
    "ReplicaIndex",
    "ReplicaState",
    "RoundRobin",
    "RouteDecision",
    "RouteRequest",
    "RoutingContext",
    "RoutingPolicy",
    "RoutingPolicyFactory",
    "RoutingSnapshot",
    "SloAware",
    "StepLatencyModel",
    "TtftEstimator",
    "make_routing_policy",
    "prefix_block_hashes",
]
