"""The gateway's routing seam: the live replicas as a snapshot for a policy of ``policy.routing``.

There is no gateway router of its own: :class:`PolicyRouter` turns the candidate replicas into a
:class:`~npucenter.policy.routing.RoutingSnapshot` and asks the very policy object the simulator
runs, with the same :class:`~npucenter.policy.routing.RouteRequest`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from npucenter.clock import Clock
from npucenter.gateway.pool import Replica, UpstreamPool
from npucenter.policy.routing import (
    RouteRequest,
    RoutingContext,
    RoutingPolicy,
    RoutingSnapshot,
    make_routing_policy,
)

__all__ = ["DEFAULT_GATEWAY_POLICY", "PolicyRouter", "make_router"]

#: The policy a gateway built without a router uses.
DEFAULT_GATEWAY_POLICY = "least-outstanding-tokens"


class PolicyRouter:
    """Asks a routing policy of ``npucenter.policy.routing`` (the simulator's too) to choose.

    The policy sees the model's replicas as :meth:`Replica.routing_state` describes them:
    healthy while up with a free slot (requests that find none wait in the gateway's queue);
    ``num_waiting`` counts the requests an engine reports beyond those the gateway sent it (an
    external server's other clients). :meth:`pick` hands it the pool's routing index, so a
    decision costs the same for 10 or 10,000 replicas.
    """

    def __init__(self, policy: RoutingPolicy, clock: Clock) -> None:
        self.policy = policy
        self._clock = clock
        self.uses_prefixes = bool(getattr(policy, "uses_prefix_hashes", False))

    def pick(self, pool: UpstreamPool, request: RouteRequest) -> Replica | None:
        """The policy's choice among the model's replicas that are up with a free slot (those
        ``request.exclude`` names only when no other has one); None when none has."""
        if pool.num_free(request.model_id) == 0:
            return None
        snapshot = pool.routing_snapshot(request.model_id)
        if snapshot is None:
            return None
        decision = self.policy.route(snapshot, request)
        return pool.get(decision.replica_id) if decision.replica_id is not None else None

    def choose(self, candidates: Sequence[Replica], request: RouteRequest) -> Replica:
        """The policy's choice among ``candidates`` (non-empty; the first if it declines), by a
        scan of a snapshot of them (tests; the dispatcher calls :meth:`pick`)."""
        now_s = self._clock.now_s()
        states = tuple(replace(r.routing_state(now_s), healthy=True) for r in candidates)
        decision = self.policy.route(RoutingSnapshot(now_s=now_s, replicas=states), request)
        for r in candidates:
            if r.replica_id == decision.replica_id:
                return r
        return candidates[0]  # a registered policy never declines a non-empty healthy snapshot


def make_router(name: str, clock: Clock, context: RoutingContext | None = None) -> PolicyRouter:
    """A router over the routing policy registered as ``name`` (e.g. ``prefix-affinity``)."""
    return PolicyRouter(make_routing_policy(name, context), clock)
