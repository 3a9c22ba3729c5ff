"""One request's record (:class:`Call`) and one try of it on one replica (:class:`Attempt`).

An attempt holds a slot taken from the dispatcher and a metering mark on its replica; ending it
(once, whatever happened) frees the slot and charges the request its share of the replica.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from npucenter.gateway.auth import Principal
from npucenter.gateway.budget import Reservation
from npucenter.gateway.pool import Replica
from npucenter.metering.ledger import UsageRecord
from npucenter.policy.routing import RouteRequest

if TYPE_CHECKING:
    from npucenter.gateway.app import Gateway

__all__ = ["Attempt", "Call"]

log = logging.getLogger(__name__)


@dataclass(slots=True, kw_only=True)
class Call:
    """One request's bookkeeping, from its first byte to its ledger row."""

    request_id: str
    endpoint: str
    started_s: float
    started_wall_s: float
    principal: Principal | None = None
    model_id: str = ""
    ticket: RouteRequest | None = None
    reservation: Reservation | None = None
    replica: Replica | None = None  # the replica that served (last tried)
    status: str = "ok"
    input_tokens: int = 0  # from the engine's usage (or estimate when it gave none)
    output_tokens: int = 0
    usage_seen: bool = False
    num_events: int = 0  # content events streamed (a token count when usage is missing)
    first_token_s: float | None = None
    last_token_s: float | None = None
    device_s: float = 0.0
    energy_j: float = 0.0
    device_id: str = ""
    attempts: list[dict[str, Any]] = field(default_factory=list)
    responded: bool = False  # the final byte went out (no more disconnect handling)
    journaled: bool = False  # its final ledger row is in the usage journal already
    settled: UsageRecord | None = None  # that row (the ledger gets the same one)
    adapter: Any = None  # the LoRA adapter it asked for (gateway.adapters.AdapterTarget)


class Attempt:
    """One try of a request on one replica: its slot, its metering mark, its end (once)."""

    __slots__ = ("call", "gateway", "mark", "open", "replica")

    def __init__(self, gateway: Gateway, call: Call, replica: Replica) -> None:
        self.gateway = gateway
        self.call = call
        self.replica = replica
        self.mark = replica.meter.start()
        self.open = True
        call.replica = replica

    def fail(self, why: str) -> None:
        """The replica failed before the first token: cool it down, exclude it, count a retry."""
        gw, call, replica = self.gateway, self.call, self.replica
        self.end()
        call.attempts.append({"replica": replica.replica_id, "error": why})
        gw.pool.mark_failed(replica, gw.config.failure_cooldown_s)
        if call.ticket is not None:
            call.ticket = replace(call.ticket, exclude=call.ticket.exclude | {replica.replica_id})
        gw.metrics.retries.labels(call.model_id).inc()
        log.warning(
            "request %s failed on replica %s before its first token: %s",
            call.request_id,
            replica.replica_id,
            why,
        )

    def end(self) -> None:
        """Free the slot and charge the request its share of the replica (idempotent)."""
        if not self.open:
            return
        self.open = False
        call, replica = self.call, self.replica
        share = replica.meter.finish(self.mark)
        call.device_s += share.device_s
        call.energy_j += share.energy_j
        call.device_id = replica.endpoint.device_id
        if call.ticket is not None:
            self.gateway.dispatcher.release(replica, call.ticket)
        replica.num_served += 1
