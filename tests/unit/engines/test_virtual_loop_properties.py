"""Invariants of the engine loop under random traffic and client aborts (Hypothesis)."""

from __future__ import annotations

import asyncio
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from npucenter.clock import FakeClock
from npucenter.engines.virtual.core import ReplicaConfig, make_replica_core
from npucenter.engines.virtual.loop import EngineLoop

_request = st.tuples(
    st.integers(1, 400),  # prompt tokens
    st.integers(1, 40),  # max tokens
    st.none() | st.integers(1, 40),  # abort after this many tokens (None: never)
    st.integers(0, 30),  # arrival, in ms after the previous one
)


async def _consume(loop: EngineLoop, handle: Any, abort_after: int | None) -> tuple[int, bool]:
    got = 0
    while (n := await handle.queue.get()) is not None:
        got += n
        if abort_after is not None and got >= abort_after:
            loop.abort(handle.request_id)
    return got, handle.result.cancelled()


@settings(max_examples=40, deadline=None)
@given(st.lists(_request, min_size=1, max_size=15), st.integers(1, 6))
def test_every_request_finishes_with_its_tokens_or_is_aborted_once(
    reqs: list[tuple[int, int, int | None, int]], max_seqs: int
) -> None:
    from factories import make_linear_step_cost as LinearPerf

    async def run() -> None:
        perf = LinearPerf(kv_capacity_tokens=1500)
        clock = FakeClock()
        core, request_cls = make_replica_core(
            perf, ReplicaConfig(max_num_seqs=max_seqs, max_num_batched_tokens=512)
        )

        async def fake_sleep(delay_s: float) -> None:
            clock.advance(max(0.0, delay_s))
            await asyncio.sleep(0)

        loop = EngineLoop(
            core,
            idle_power_w=perf.idle_power_w,
            kv_capacity_tokens=perf.kv_capacity_tokens,
            request_cls=request_cls,
            clock=clock,
            sleep=fake_sleep,
        )
        loop.start()
        tasks = []
        for prompt, max_tokens, abort_after, gap_ms in reqs:
            clock.advance(gap_ms / 1000)
            handle = loop.submit(prompt, max_tokens, stream=True)
            tasks.append(asyncio.ensure_future(_consume(loop, handle, abort_after)))
            await asyncio.sleep(0)
        outcomes = await asyncio.wait_for(asyncio.gather(*tasks), 10)
        for (_, max_tokens, abort_after, _), (got, aborted) in zip(reqs, outcomes, strict=True):
            if aborted:  # an abort lands only on a request still short of its tokens
                assert abort_after is not None and abort_after <= got < max_tokens
            else:  # never aborted, or it had finished before the abort (tokens come in chunks)
                assert got == max_tokens
        assert loop.num_live == 0
        assert loop.stats.finished + loop.stats.aborted == len(reqs)
        assert loop.stats.generation_tokens == sum(got for got, _ in outcomes)
        assert loop.counts() == (0, 0)
        await loop.stop()

    asyncio.run(run())
