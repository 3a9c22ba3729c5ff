"""The gateway's routing seam: choose one replica among the candidates for a request.

The gateway builds a snapshot of its replicas and asks a routing policy object from
``npucenter.policy`` (the same objects the simulator runs) through :class:`PolicyRouter`.
:class:`LeastOutstandingRouter` is the built-in fallback used when no policy is named.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from npucenter.gateway.pool import Replica

__all__ = ["LeastOutstandingRouter", "RouteTicket", "Router"]


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
