"""The registry of routing policies by name, and the factory the gateway, simulator and CLI call.

Every policy module registers itself here on import; ``npucenter.policy.routing`` imports them
all, so whoever imports any part of the package sees the full set.
"""

from __future__ import annotations

from npucenter.policy.routing.types import RoutingContext, RoutingPolicy, RoutingPolicyFactory
from npucenter.registry import Registry

__all__ = ["ROUTING_POLICIES", "make_routing_policy"]

ROUTING_POLICIES: Registry[RoutingPolicyFactory] = Registry("routing policy")


def make_routing_policy(name: str, context: RoutingContext | None = None) -> RoutingPolicy:
    """A fresh policy registered as ``name`` (raises UnknownPluginError listing valid names)."""
    return ROUTING_POLICIES.get(name)(context)
