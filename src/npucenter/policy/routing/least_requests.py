"""Least requests: the replica with the fewest running plus waiting requests."""

from __future__ import annotations

from npucenter.policy.routing.index import RoutingSnapshot, candidates
from npucenter.policy.routing.registry import ROUTING_POLICIES
from npucenter.policy.routing.types import (
    ReplicaState,
    RouteDecision,
    RouteRequest,
    RoutingContext,
    no_replica,
)

__all__ = ["LeastRequests"]


@ROUTING_POLICIES.register("least-requests", aliases=("least-loaded",))
class LeastRequests:
    """The replica with the fewest running plus waiting requests."""

    def __init__(self, context: RoutingContext | None = None) -> None:
        pass

    def route(self, snapshot: RoutingSnapshot, request: RouteRequest) -> RouteDecision:
        """Least running + waiting requests (ties: snapshot order)."""
        index = snapshot.index
        if index is not None and not request.exclude:
            least = index.min_view("least-requests", _place).least(request.model_id)
            if least is None:
                return no_replica(request)
            replica_id = index.states[least[1]].replica_id
            return RouteDecision(replica_id=replica_id, reason="least requests")
        cands = candidates(snapshot, request)
        if not cands:
            return no_replica(request)
        best = min(
            range(len(cands)), key=lambda i: (cands[i].num_running + cands[i].num_waiting, i)
        )
        return RouteDecision(replica_id=cands[best].replica_id, reason="least requests")


def _place(state: ReplicaState) -> tuple[str, int]:
    """By model; fewest running + waiting requests (the scan's key)."""
    return state.model_id, state.num_running + state.num_waiting
