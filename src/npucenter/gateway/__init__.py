"""The OpenAI-compatible gateway: auth, budgets, fair queueing, routing via policy/, metering.

Mount :class:`Gateway` (a plain ASGI app) at ``/v1``; it needs a :class:`KeyResolver`, the
replica endpoints and a :class:`~npucenter.metering.Ledger`.
"""

from npucenter.gateway.app import Gateway, GatewayConfig
from npucenter.gateway.auth import (
    CachingKeyResolver,
    KeyResolver,
    Principal,
    StaticKeyResolver,
    TenantLimits,
)
from npucenter.gateway.budget import BudgetBook, Reservation
from npucenter.gateway.dispatch import Dispatcher
from npucenter.gateway.fair_queue import FairQueue
from npucenter.gateway.pool import Replica, ReplicaEndpoint, UpstreamPool
from npucenter.gateway.routing import PolicyRouter, make_router

__all__ = [
    "BudgetBook",
    "CachingKeyResolver",
    "Dispatcher",
    "FairQueue",
    "Gateway",
    "GatewayConfig",
    "KeyResolver",
    "PolicyRouter",
    "Principal",
    "Replica",
    "ReplicaEndpoint",
    "Reservation",
    "StaticKeyResolver",
    "TenantLimits",
    "UpstreamPool",
    "make_router",
]
