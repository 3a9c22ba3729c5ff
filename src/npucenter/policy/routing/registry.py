"""What a routing policy is (its Protocol), the registry of policies by name, and the factory the gateway, simulator and CLI call.

Every policy module registers itself here on import; ``npucenter.policy.routing`` imports them
all, so whoever imports any part of the package sees the full set.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

from npucenter.policy.routing.index import RoutingSnapshot
from npucenter.policy.routing.types import RouteDecision, RouteRequest, RoutingContext
from npucenter.registry import Registry

__all__ = ["ROUTING_POLICIES", "RoutingPolicy", "RoutingPolicyFactory", "make_routing_policy"]


@runtime_checkable
class RoutingPolicy(Protocol):
    """Chooses a replica for a request from a snapshot."""

    def route(self, snapshot: RoutingSnapshot, request: RouteRequest) -> RouteDecision: ...


#: A routing policy factory takes one optional :class:`RoutingContext`.
RoutingPolicyFactory = Callable[[RoutingContext | None], RoutingPolicy]

ROUTING_POLICIES: Registry[RoutingPolicyFactory] = Registry("routing policy")


def make_routing_policy(name: str, context: RoutingContext | None = None) -> RoutingPolicy:
    """A fresh policy registered as ``name`` (raises UnknownPluginError listing valid names)."""
    return ROUTING_POLICIES.get(name)(context)
