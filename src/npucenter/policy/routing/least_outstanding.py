"""Least outstanding tokens: the replica with the least prompt + output work still to do.

The gateway's default (it knows the tokens it sent and has not seen finish) and the simulator's.
"""

from __future__ import annotations

import math

from npucenter.policy.routing.index import RoutingSnapshot, candidates
from npucenter.policy.routing.registry import ROUTING_POLICIES
from npucenter.policy.routing.types import (
    ReplicaState,
    RouteDecision,
    RouteRequest,
    RoutingContext,
    no_replica,
)

__all__ = ["LeastOutstandingTokens"]


@ROUTING_POLICIES.register("least-outstanding-tokens", aliases=("lot", "least-tokens"))
class LeastOutstandingTokens:
    """The replica with the fewest tokens still to process (ties: fewer requests, then order)."""

    def __init__(self, context: RoutingContext | None = None) -> None:
        pass

    def route(self, snapshot: RoutingSnapshot, request: RouteRequest) -> RouteDecision:
        """Least outstanding prompt + output tokens."""
        index = snapshot.index
        if index is not None and not request.exclude:
            view = index.min_view("least-outstanding-tokens", _place)
            if not view.num_odd:  # every key fits one float exactly (else: the scan below)
                least = view.least(request.model_id)
                if least is None:
                    return no_replica(request)
                replica_id = index.states[least[1]].replica_id
                return RouteDecision(replica_id=replica_id, reason="least outstanding tokens")
        cands = candidates(snapshot, request)
        if not cands:
            return no_replica(request)
        best = min(
            range(len(cands)),
            key=lambda i: (
                cands[i].outstanding_tokens,
                cands[i].num_running + cands[i].num_waiting,
                i,
            ),
        )
        return RouteDecision(replica_id=cands[best].replica_id, reason="least outstanding tokens")


_REQUESTS_BITS = 21  # the scan's key (tokens, requests) as one number: tokens * 2**21 + requests
_MAX_TOKENS = 1 << (53 - _REQUESTS_BITS)  # below these the number is an exact float64


def _place(state: ReplicaState) -> tuple[str, float]:
    """By model; least outstanding tokens, then fewest requests (the scan's key, as the one
    number ``tokens * 2**21 + requests`` that orders alike; +inf where it would not be exact,
    and the policy then scans)."""
    tokens, requests = state.outstanding_tokens, state.num_running + state.num_waiting
    if 0 <= tokens < _MAX_TOKENS and 0 <= requests < 1 << _REQUESTS_BITS:
        return state.model_id, float((tokens << _REQUESTS_BITS) | requests)
    return state.model_id, math.inf
