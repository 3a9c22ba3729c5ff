"""The engine loop on a fake clock: modelled timing, streaming, abort, energy."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from factories import make_seq_request
from npucenter.clock import FakeClock
from npucenter.engines.virtual.core import ReplicaConfig, make_replica_core
from npucenter.engines.virtual.loop import EngineLoop
from npucenter.errors import CapacityUnavailableError


def _make_loop(perf: Any, clock: FakeClock, **kwargs: Any) -> EngineLoop:
    core, request_cls = make_replica_core(perf, ReplicaConfig(max_num_seqs=8))

    async def fake_sleep(delay_s: float) -> None:
        clock.advance(max(0.0, delay_s))
        await asyncio.sleep(0)

    return EngineLoop(
        core,
        idle_power_w=perf.idle_power_w,
        kv_capacity_tokens=perf.kv_capacity_tokens,
        request_cls=request_cls,
        clock=clock,
        sleep=fake_sleep,
        **kwargs,
    )


async def test_one_request_has_modelled_ttft_and_e2e(perf: Any) -> None:
    clock = FakeClock()
    loop = _make_loop(perf, clock)
    loop.start()
    handle = loop.submit(100, 4, stream=False)
    result = await asyncio.wait_for(handle.result, 5)
    prefill_s = perf.fixed_s + 100 * perf.per_prefill_token_s
    decode_s = perf.fixed_s + perf.per_decode_seq_s
    assert result.completion_tokens == 4
    assert result.ttft_s == pytest.approx(prefill_s)
    assert result.e2e_s == pytest.approx(prefill_s + 3 * decode_s)
    assert clock.now_s() == pytest.approx(prefill_s + 3 * decode_s)
    assert loop.stats.generation_tokens == 4
    assert loop.stats.energy_j == pytest.approx(perf.busy_power_w * result.e2e_s)
    await loop.stop()


async def test_stream_receives_every_token_then_end(perf: Any) -> None:
    loop = _make_loop(perf, FakeClock())
    loop.start()
    handle = loop.submit(10, 7, stream=True)
    assert handle.queue is not None
    got = []
    while (n := await asyncio.wait_for(handle.queue.get(), 5)) is not None:
        got.append(n)
    assert sum(got) == 7
    assert (await handle.result).completion_tokens == 7
    await loop.stop()


async def test_abort_stops_the_work(perf: Any) -> None:
    clock = FakeClock()
    loop = _make_loop(perf, clock)
    loop.start()
    handle = loop.submit(10, 10_000 - 10, stream=True)
    assert handle.queue is not None
    await asyncio.wait_for(handle.queue.get(), 5)
    loop.abort(handle.request_id)
    assert handle.result.cancelled()
    steps = loop.stats.num_steps
    for _ in range(20):
        await asyncio.sleep(0)
    assert loop.stats.num_steps <= steps + 1  # at most the step already in flight
    assert loop.num_live == 0
    assert loop.counts() == (0, 0)
    assert loop.stats.aborted == 1
    await loop.stop()


async def test_concurrent_requests_are_batched(perf: Any) -> None:
    clock = FakeClock()
    loop = _make_loop(perf, clock)
    loop.start()
    handles = [loop.submit(10, 20, stream=False) for _ in range(8)]
    results = await asyncio.wait_for(asyncio.gather(*(h.result for h in handles)), 5)
    assert all(r.completion_tokens == 20 for r in results)
    # batched: far less than 8 sequential runs of 20 steps each
    assert clock.now_s() < 8 * 20 * perf.fixed_s / 2
    await loop.stop()


async def test_idle_energy_accrues_at_idle_power(perf: Any) -> None:
    clock = FakeClock()
    loop = _make_loop(perf, clock)
    loop.start()
    clock.advance(10.0)
    assert loop.energy_j_now() == pytest.approx(10.0 * perf.idle_power_w)
    assert loop.power_w_now() == perf.idle_power_w
    await loop.stop()


async def test_too_large_request_is_refused(perf: Any) -> None:
    loop = _make_loop(perf, FakeClock())
    with pytest.raises(CapacityUnavailableError):
        loop.submit(perf.kv_capacity_tokens, 10, stream=False)


async def test_time_scale_zero_does_not_wait_on_the_clock(perf: Any) -> None:
    clock = FakeClock()
    loop = _make_loop(perf, clock, time_scale=0.0)
    loop.start()
    result = await asyncio.wait_for(loop.submit(100, 4, stream=False).result, 5)
    assert clock.now_s() == 0.0  # nothing slept on the real clock
    assert result.e2e_s > 0  # yet the modelled timeline moved
    await loop.stop()


async def test_live_loop_reproduces_the_simulator_core_timeline() -> None:
    """The virtual engine is the simulator's replica driven in time: same first-token and
    finish times for the same requests."""
    from npucenter.catalog import default_catalog
    from npucenter.perf import build_perf_model
    from npucenter.sim.replica import ReplicaConfig, ReplicaCore

    pm = build_perf_model(default_catalog(), model="llama-3.1-8b", device="rngd", tp=1)
    reqs = [(300 + 250 * i, 5 + 3 * i) for i in range(6)]

    core = ReplicaCore(pm, ReplicaConfig(max_num_seqs=8))
    for i, (p, o) in enumerate(reqs):
        core.add(make_seq_request(request_id=f"r{i}", prompt_tokens=p, max_output_tokens=o))
    first: dict[str, float] = {}
    done: dict[str, float] = {}
    now = 0.0
    while (step := core.step(now)) is not None:
        now = step.start_s + step.duration_s
        for rid in step.first_token_ids:
            first[rid] = now
        for rid in step.finished_ids:
            done[rid] = now

    clock = FakeClock()
    loop = _make_loop(pm, clock)
    loop.start()
    handles = [loop.submit(p, o, stream=False) for p, o in reqs]
    results = await asyncio.wait_for(asyncio.gather(*(h.result for h in handles)), 5)
    for i, r in enumerate(results):
        assert r.ttft_s == pytest.approx(first[f"r{i}"], rel=1e-9)
        assert r.e2e_s == pytest.approx(done[f"r{i}"], rel=1e-9)
        assert r.completion_tokens == reqs[i][1]
    await loop.stop()
