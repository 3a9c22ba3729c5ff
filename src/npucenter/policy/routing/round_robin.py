"""Round-robin: each healthy replica of the model in turn.

Its only memory is one counter per model, so replaying the same calls gives the same answers.
"""

from __future__ import annotations

from npucenter.policy.routing.index import RoutingSnapshot, candidates
from npucenter.policy.routing.registry import ROUTING_POLICIES
from npucenter.policy.routing.types import (
    RouteDecision,
    RouteRequest,
    RoutingContext,
    no_replica,
)

__all__ = ["RoundRobin"]


@ROUTING_POLICIES.register("round-robin", aliases=("rr",))
class RoundRobin:
    """Each healthy replica of the model in turn (one counter per model)."""

    def __init__(self, context: RoutingContext | None = None) -> None:
        self._next: dict[str, int] = {}

    def route(self, snapshot: RoutingSnapshot, request: RouteRequest) -> RouteDecision:
        """The next replica in snapshot order after the previous choice for this model."""
        index = snapshot.index
        if index is not None and not request.exclude:
            members = index.members(request.model_id)
            if not members:
                return no_replica(request)
            turn = self._next.get(request.model_id, 0)
            self._next[request.model_id] = turn + 1
            chosen = index.states[members[turn % len(members)]].replica_id
            return RouteDecision(replica_id=chosen, reason="round-robin")
        cands = candidates(snapshot, request)
        if not cands:
            return no_replica(request)
        turn = self._next.get(request.model_id, 0)
        self._next[request.model_id] = turn + 1
        return RouteDecision(replica_id=cands[turn % len(cands)].replica_id, reason="round-robin")
