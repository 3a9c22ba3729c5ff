"""Requests wait in the gateway for a replica slot; released slots go to waiters, fairly."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from npucenter.clock import FakeClock
from npucenter.errors import CapacityUnavailableError, NotFoundError
from npucenter.gateway.dispatch import Dispatcher
from npucenter.gateway.pool import ReplicaEndpoint, UpstreamPool
from npucenter.gateway.routing import make_router
from npucenter.policy.routing import RouteRequest


def _pool(clock: FakeClock, n: int = 2, slots: int = 1) -> UpstreamPool:
    return UpstreamPool(
        clock,
        [
            ReplicaEndpoint(
                replica_id=f"r{i}",
                base_url=f"http://127.0.0.1:{9000 + i}",
                model_id="m",
                max_inflight=slots,
            )
            for i in range(n)
        ],
    )


def _ticket(i: int, tenant: str = "a", priority: int = 0, model: str = "m") -> RouteRequest:
    return RouteRequest(
        request_id=f"q{i}",
        tenant=tenant,
        model_id=model,
        priority=priority,
        prompt_tokens=10,
        max_output_tokens=10,
    )


async def test_free_slots_are_taken_immediately_and_spread() -> None:
    clock = FakeClock()
    d = Dispatcher(_pool(clock), make_router("least-outstanding-tokens", clock), clock)
    a = await d.acquire(_ticket(0))
    b = await d.acquire(_ticket(1))
    assert {a.replica_id, b.replica_id} == {"r0", "r1"}
    assert a.inflight == 1 and b.inflight == 1


async def test_waiters_get_released_slots_by_priority() -> None:
    clock = FakeClock()
    d = Dispatcher(
        _pool(clock, n=1), make_router("least-outstanding-tokens", clock), clock, max_wait_s=5
    )
    held = await d.acquire(_ticket(0))
    low = asyncio.create_task(d.acquire(_ticket(1, priority=0)))
    high = asyncio.create_task(d.acquire(_ticket(2, priority=9)))
    await asyncio.sleep(0)
    assert d.queued("m") == 2
    d.release(held, _ticket(0))
    got = await asyncio.wait_for(high, 1)
    assert got.replica_id == "r0" and not low.done()
    d.release(got, _ticket(2))
    await asyncio.wait_for(low, 1)
    assert d.queued() == 0


async def test_wait_times_out_with_a_retryable_error() -> None:
    clock = FakeClock()
    d = Dispatcher(
        _pool(clock, n=1), make_router("least-outstanding-tokens", clock), clock, max_wait_s=0.01
    )
    await d.acquire(_ticket(0))
    with pytest.raises(CapacityUnavailableError) as info:
        await d.acquire(_ticket(1))
    assert info.value.retryable and d.queued() == 0


async def test_cancelled_waiter_leaves_the_queue_and_holds_no_slot() -> None:
    clock = FakeClock()
    d = Dispatcher(
        _pool(clock, n=1), make_router("least-outstanding-tokens", clock), clock, max_wait_s=5
    )
    held = await d.acquire(_ticket(0))
    waiter = asyncio.create_task(d.acquire(_ticket(1)))
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert d.queued() == 0
    d.release(held, _ticket(0))
    assert held.inflight == 0


async def test_unknown_model_and_all_down() -> None:
    clock = FakeClock()
    pool = _pool(clock, n=1)
    d = Dispatcher(pool, make_router("least-outstanding-tokens", clock), clock)
    with pytest.raises(NotFoundError):
        await d.acquire(_ticket(0, model="nope"))
    replica = pool.replicas("m")[0]
    pool.mark_failed(replica, cooldown_s=10)
    with pytest.raises(CapacityUnavailableError):
        await d.acquire(_ticket(1))
    clock.advance(11)
    assert (await d.acquire(_ticket(2))).replica_id == "r0"


async def test_excluded_replica_is_avoided_when_another_is_free() -> None:
    clock = FakeClock()
    d = Dispatcher(
        _pool(clock, n=2, slots=4), make_router("least-outstanding-tokens", clock), clock
    )
    t = dataclasses.replace(_ticket(0), exclude=frozenset({"r0"}))
    for _ in range(3):
        r = await d.acquire(t)
        assert r.replica_id == "r1"


async def test_a_flooding_tenant_does_not_starve_another() -> None:
    clock = FakeClock()
    d = Dispatcher(
        _pool(clock, n=1), make_router("least-outstanding-tokens", clock), clock, max_wait_s=5
    )
    held = await d.acquire(_ticket(0, tenant="flood"))
    flood = [asyncio.create_task(d.acquire(_ticket(i, tenant="flood"))) for i in range(1, 9)]
    await asyncio.sleep(0)
    polite = asyncio.create_task(d.acquire(_ticket(99, tenant="polite")))
    await asyncio.sleep(0)
    order: list[str] = []
    current, current_ticket = held, _ticket(0, tenant="flood")
    pending = {t: _ticket(i + 1, tenant="flood") for i, t in enumerate(flood)}
    pending[polite] = _ticket(99, tenant="polite")
    while pending:
        d.release(current, current_ticket)
        await asyncio.wait(list(pending), timeout=1.0, return_when=asyncio.FIRST_COMPLETED)
        done = [t for t in pending if t.done()]
        assert len(done) == 1
        task = done[0]
        current, current_ticket = task.result(), pending.pop(task)
        order.append(current_ticket.tenant)
    assert order.index("polite") <= 1  # served right after the flood's first waiter at worst
