"""The gateway's routing seam: choose one replica among the candidates for a request.

The gateway builds a snapshot of its replicas and asks a routing policy object from
``npucenter.policy`` (the same objects the simulator runs) through :class:`PolicyRouter`.
:class:`LeastOutstandingRouter` is the built-in fallback used when no policy is named.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from npucenter.clock import Clock
from npucenter.gateway.pool import Replica
from npucenter.policy import prefix_affinity as _prefix_affinity  # registers "prefix-affinity"
from npucenter.policy.routing import (
    ReplicaState,
    RouteRequest,
    RoutingContext,
    RoutingPolicy,
    RoutingSnapshot,
    make_routing_policy,
)

__all__ = ["LeastOutstandingRouter", "PolicyRouter", "RouteTicket", "Router", "make_router"]


@dataclass(slots=True, kw_only=True)
class RouteTicket:
    """What routing knows of a request."""

    request_id: str
    tenant: str
    model_id: str
    priority: int
    input_tokens: int  # estimated
    max_output_tokens: int
    prefix_hashes: tuple[int, ...] = ()  # chained hashes of the prompt's leading blocks
    exclude: frozenset[str] = field(default_factory=frozenset)  # replicas that failed it


class Router(Protocol):
    """Chooses one of ``candidates`` (non-empty, all with a free slot)."""

    def choose(self, candidates: Sequence[Replica], ticket: RouteTicket) -> Replica:
        """The replica to send ``ticket`` to."""
        ...

    def on_routed(self, replica: Replica, ticket: RouteTicket) -> None:
        """Called once the request is sent to ``replica`` (policies that learn, e.g. prefixes)."""
        ...


class LeastOutstandingRouter:
    """The replica with the fewest outstanding tokens (ties: fewest in flight, then id)."""

    def choose(self, candidates: Sequence[Replica], ticket: RouteTicket) -> Replica:
        """The least loaded candidate."""
        return min(candidates, key=lambda r: (r.outstanding_tokens, r.inflight, r.replica_id))

    def on_routed(self, replica: Replica, ticket: RouteTicket) -> None:
        """Nothing to learn."""


class PolicyRouter:
    """Asks a routing policy of ``npucenter.policy`` (the simulator's too) to choose.

    The snapshot holds the candidates only (replicas with a free slot and up): requests that find
    none wait in the gateway's queue, so policies see ``num_waiting = 0``.
    """

    def __init__(self, policy: RoutingPolicy, clock: Clock) -> None:
        self.policy = policy
        self._clock = clock
        self.uses_prefixes = bool(getattr(policy, "uses_prefix_hashes", False))

    def choose(self, candidates: Sequence[Replica], ticket: RouteTicket) -> Replica:
        """The policy's choice among ``candidates`` (the least loaded if it declines)."""
        states = tuple(
            ReplicaState(
                replica_id=r.replica_id,
                model_id=r.endpoint.model_id,
                device_id=r.endpoint.device_id,
                device_kind=r.endpoint.device_kind,
                num_running=r.inflight,
                outstanding_tokens=max(0, r.outstanding_tokens),
                kv_used_fraction=min(1.0, max(0.0, r.kv_usage_fraction)),
                max_num_seqs=r.endpoint.max_inflight,
            )
            for r in candidates
        )
        decision = self.policy.route(
            RoutingSnapshot(now_s=self._clock.now_s(), replicas=states),
            RouteRequest(
                request_id=ticket.request_id,
                model_id=ticket.model_id,
                prompt_tokens=ticket.input_tokens,
                max_output_tokens=ticket.max_output_tokens,
                tenant=ticket.tenant,
                priority=ticket.priority,
                prefix_hashes=ticket.prefix_hashes,
            ),
        )
        for r in candidates:
            if r.replica_id == decision.replica_id:
                return r
        return LeastOutstandingRouter().choose(candidates, ticket)

    def on_routed(self, replica: Replica, ticket: RouteTicket) -> None:
        """Policies keep their own memory inside ``route``."""


def make_router(name: str, clock: Clock, context: RoutingContext | None = None) -> PolicyRouter:
    """A router over the routing policy registered as ``name`` (e.g. ``prefix-affinity``)."""
    assert _prefix_affinity.PrefixAffinity is not None
    return PolicyRouter(make_routing_policy(name, context), clock)
