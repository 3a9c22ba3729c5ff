"""The gateway's routing seam: the live replicas as a snapshot for a policy of ``policy.routing``.

There is no gateway router of its own: :class:`PolicyRouter` turns the candidate replicas into a
:class:`~npucenter.policy.routing.RoutingSnapshot` and asks the very policy object the simulator
runs, with the same :class:`~npucenter.policy.routing.RouteRequest`.
"""

from __future__ import annotations

from collections.abc import Sequence

from npucenter.clock import Clock
from npucenter.gateway.pool import Replica
from npucenter.policy.routing import (
    ReplicaState,
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

    The snapshot holds the candidates only (replicas with a free slot and up): requests that find
    none wait in the gateway's queue; ``num_waiting`` counts the requests an engine reports in its
    own metrics beyond those the gateway sent it (an external server's other clients).
    """

    def __init__(self, policy: RoutingPolicy, clock: Clock) -> None:
        self.policy = policy
        self._clock = clock
        self.uses_prefixes = bool(getattr(policy, "uses_prefix_hashes", False))

    def choose(self, candidates: Sequence[Replica], request: RouteRequest) -> Replica:
        """The policy's choice among ``candidates`` (non-empty; the first if it declines)."""
        states = tuple(
            ReplicaState(
                replica_id=r.replica_id,
                model_id=r.endpoint.model_id,
                device_id=r.endpoint.device_id,
                device_kind=r.endpoint.device_kind,
                num_running=r.inflight,
                num_waiting=r.engine_foreign,  # an external server's other clients' requests
                outstanding_tokens=max(0, r.outstanding_tokens),
                kv_used_fraction=min(1.0, max(0.0, r.kv_usage_fraction)),
                max_num_seqs=r.endpoint.max_inflight,
            )
            for r in candidates
        )
        decision = self.policy.route(
            RoutingSnapshot(now_s=self._clock.now_s(), replicas=states), request
        )
        for r in candidates:
            if r.replica_id == decision.replica_id:
                return r
        return candidates[0]  # a registered policy never declines a non-empty healthy snapshot


def make_router(name: str, clock: Clock, context: RoutingContext | None = None) -> PolicyRouter:
    """A router over the routing policy registered as ``name`` (e.g. ``prefix-affinity``)."""
    return PolicyRouter(make_routing_policy(name, context), clock)
