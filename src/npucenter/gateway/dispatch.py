"""Admission to replicas: requests wait here, in the gateway, never inside the engines.

A request takes a slot on a replica chosen by the router when one is free; otherwise it waits in
its model's :class:`FairQueue` (priority first, then fair across tenants) until a slot frees or
``max_wait_s`` passes. Releasing a slot hands it straight to the next waiter, so a slot is never
idle while someone waits.
"""

from __future__ import annotations

import asyncio
import math

from npucenter.clock import Clock
from npucenter.errors import CapacityUnavailableError, NotFoundError
from npucenter.gateway.fair_queue import FairQueue
from npucenter.gateway.pool import Replica, UpstreamPool
from npucenter.gateway.routing import PolicyRouter
from npucenter.gateway.shedding import WaitEstimator
from npucenter.policy.routing import RouteRequest

__all__ = ["Dispatcher"]


class _Waiter:
    __slots__ = ("future", "ticket")

    def __init__(self, ticket: RouteRequest, future: asyncio.Future[Replica]) -> None:
        self.ticket = ticket
        self.future = future


class Dispatcher:
    """Slots on replicas, a fair queue per model, and the router that picks among free slots."""

    def __init__(
        self,
        pool: UpstreamPool,
        router: PolicyRouter,
        clock: Clock,
        *,
        max_queued: int = 1024,
        max_wait_s: float = 30.0,
        max_expected_wait_s: float = 30.0,
    ) -> None:
        self.pool = pool
        self.router = router
        self._clock = clock
        self.max_queued = max_queued
        self.max_wait_s = max_wait_s
        self._queues: dict[str, FairQueue[_Waiter]] = {}
        self.waits = WaitEstimator(max_expected_wait_s)  # refuses a wait expected too long

    def saturated(self) -> CapacityUnavailableError | None:
        """The 503 to answer at the door when every served model has waiters and its next one
        would be refused for its expected wait (``max_expected_wait_s``); else None.

        NOTE(gateway): refusing there costs a few microseconds; the same refusal at the fair
        queue comes after the body, the key, the parse and the budget, and writes a ledger row,
        so under overload most of the gateway's CPU went to requests it refused anyway.
        """
        shortest = math.inf
        for model_id in self.pool.model_ids():
            queue = self._queues.get(model_id)
            if not queue:
                return None
            wait = self.waits.expected_wait_s(model_id, len(queue) + 1)
            if wait <= self.waits.max_expected_wait_s:
                return None
            shortest = min(shortest, wait)
        if math.isinf(shortest):
            return None  # no model served
        return CapacityUnavailableError(
            f"every model's queue is full for now (the shortest expected wait ~{shortest:.1f} s, "
            f"bound {self.waits.max_expected_wait_s:g} s)",
            hint="retry after the Retry-After seconds; the fleet is saturated",
            retry_after_s=float(max(1, min(60, math.ceil(shortest / 2)))),
        )

    def queued(self, model_id: str | None = None) -> int:
        """Requests waiting (for one model)."""
        if model_id is not None:
            q = self._queues.get(model_id)
            return len(q) if q else 0
        return sum(len(q) for q in self._queues.values())

    async def acquire(self, ticket: RouteRequest, *, weight: float = 1.0) -> Replica:
        """A replica with a slot taken for ``ticket``; waits in the fair queue when all are busy.

        Raises:
            NotFoundError: no replica serves the model.
            CapacityUnavailableError: no replica is up, the queue is full or the wait timed out.
        """
        replica = self._try_route(ticket)
        if replica is not None:
            return replica
        self._check_servable(ticket)
        queue = self._queues.get(ticket.model_id)
        if queue is None:
            queue = self._queues[ticket.model_id] = FairQueue(self.max_queued)
        self.waits.check(ticket.model_id, len(queue) + 1)
        if not queue:  # a busy period starts: the first service interval is measured from now
            self.waits.served(ticket.model_id, self._clock.now_s(), measure=False)
        waiter = _Waiter(ticket, asyncio.get_running_loop().create_future())
        queue.push(
            waiter,
            tenant=ticket.tenant,
            priority=ticket.priority,
            cost=ticket.prompt_tokens + ticket.max_output_tokens,
            weight=weight,
        )
        try:
            return await asyncio.wait_for(asyncio.shield(waiter.future), self.max_wait_s)
        except TimeoutError:
            queue.remove(waiter)
            if waiter.future.done() and not waiter.future.cancelled():
                self.release(waiter.future.result(), ticket)
            raise CapacityUnavailableError(
                f"no {ticket.model_id} replica freed up within {self.max_wait_s:g} s",
                hint="retry later; the fleet is saturated",
                retry_after_s=2.0,
                model=ticket.model_id,
            ) from None
        except asyncio.CancelledError:
            queue.remove(waiter)
            if waiter.future.done() and not waiter.future.cancelled():
                self.release(waiter.future.result(), ticket)
            else:
                waiter.future.cancel()
            raise

    def release(self, replica: Replica, ticket: RouteRequest) -> None:
        """Give back ``ticket``'s slot on ``replica`` and hand free slots to waiters."""
        replica.inflight -= 1
        replica.outstanding_tokens -= ticket.prompt_tokens + ticket.max_output_tokens
        self.wake(replica.endpoint.model_id)

    def wake(self, model_id: str) -> None:
        """Give free slots of ``model_id`` to waiters (also after a replica comes back)."""
        queue = self._queues.get(model_id)
        while queue:
            if self.pool.num_free(model_id) == 0:
                return
            waiter = queue.pop()
            if waiter is None or waiter.future.done():
                continue
            replica = self._take(waiter.ticket)
            assert replica is not None  # a replica had a free slot
            waiter.future.set_result(replica)
            self.waits.served(model_id, self._clock.now_s())

    def _try_route(self, ticket: RouteRequest) -> Replica | None:
        queue = self._queues.get(ticket.model_id)
        if queue:  # others wait: no jumping the queue
            return None
        return self._take(ticket)

    def _take(self, ticket: RouteRequest) -> Replica | None:
        # the policy prefers replicas ticket.exclude does not name (RouteRequest.exclude)
        replica = self.router.pick(self.pool, ticket)
        if replica is None:
            return None
        replica.inflight += 1
        replica.outstanding_tokens += ticket.prompt_tokens + ticket.max_output_tokens
        return replica

    def _check_servable(self, ticket: RouteRequest) -> None:
        replicas = self.pool.replicas(ticket.model_id)
        if not replicas:
            raise NotFoundError("model", ticket.model_id, valid=self.pool.models())
        if self.pool.num_up(ticket.model_id) == 0:
            raise CapacityUnavailableError(
                f"every {ticket.model_id} replica is down",
                hint="retry shortly; replicas are being restarted",
                retry_after_s=1.0,
                model=ticket.model_id,
            )
