"""The live center and the digital twin agree: one small trace, replayed through the gateway on
virtual engines and simulated, gives p50 TTFT and TPOT within 10 % of each other."""

from __future__ import annotations

import asyncio
import json
import random
import time

import httpx
import numpy as np
import pytest

from npucenter.catalog import default_catalog
from npucenter.clock import SystemClock
from npucenter.fleet.spec import fleet_spec_from_mapping
from npucenter.gateway import Gateway, GatewayConfig, Principal, StaticKeyResolver
from npucenter.gateway.routing import make_router
from npucenter.gateway.testing import running_server, start_virtual_replicas
from npucenter.sim.center import build_center
from npucenter.workload.trace import Trace

pytestmark = pytest.mark.e2e

MODEL = "llama-3.1-8b"
FLEET = {
    "name": "agreement",
    "servers": [{"device": "rngd", "count": 1, "cards_per_server": 8}],
    "services": [
        {"model": MODEL, "device": "rngd", "tp": 1, "replicas_per_server": 2, "max_num_seqs": 64}
    ],
}


def small_trace(num_requests: int = 30, rate_rps: float = 4.0, seed: int = 7) -> Trace:
    rng = random.Random(seed)
    gaps = [0.0] + [rng.expovariate(rate_rps) for _ in range(num_requests - 1)]
    return Trace(
        name="agreement",
        arrival_s=np.cumsum(gaps),
        prompt_tokens=np.array([rng.randint(1500, 4000) for _ in range(num_requests)]),
        output_tokens=np.array([rng.randint(20, 80) for _ in range(num_requests)]),
        source="synthetic (seeded) for the live/sim agreement test",
    )


async def replay(url: str, trace: Trace) -> list[tuple[float, float, int]]:
    """Send each request at its arrival time (token-id prompts: exact counts); time its tokens."""
    async with httpx.AsyncClient(
        base_url=url, headers={"authorization": "Bearer k"}, timeout=60
    ) as client:
        t0 = time.perf_counter() + 0.3

        async def one(i: int) -> tuple[float, float, int]:
            await asyncio.sleep(max(0.0, t0 + float(trace.arrival_s[i]) - time.perf_counter()))
            body = {
                "model": MODEL,
                "prompt": list(range(1, int(trace.prompt_tokens[i]) + 1)),
                "max_tokens": int(trace.output_tokens[i]),
                "ignore_eos": True,
                "stream": True,
            }
            sent = time.perf_counter()
            stamps: list[float] = []
            async with client.stream("POST", "/v1/completions", json=body) as resp:
                assert resp.status_code == 200
                async for line in resp.aiter_lines():
                    if line.startswith("data: {"):
                        choices = json.loads(line[6:]).get("choices") or []
                        if choices and choices[0].get("text"):
                            stamps.append(time.perf_counter())
            tpot = (stamps[-1] - stamps[0]) / (len(stamps) - 1) if len(stamps) > 1 else float("nan")
            return stamps[0] - sent, tpot, len(stamps)

        return list(await asyncio.gather(*(one(i) for i in range(len(trace)))))


def test_live_and_simulated_p50_ttft_and_tpot_agree_within_10_percent() -> None:
    trace = small_trace()
    simulated = build_center(
        fleet_spec_from_mapping(FLEET), default_catalog(), policy="round-robin"
    ).run(trace)

    executor, endpoints = asyncio.run(start_virtual_replicas(MODEL, "rngd", 2))
    try:
        gateway = Gateway(
            keys=StaticKeyResolver({"k": Principal(key_id="k", tenant="t")}),
            endpoints=endpoints,
            router=make_router("round-robin", SystemClock()),  # the simulator's policy object
            config=GatewayConfig(scrape_interval_s=0),
        )
        with running_server(gateway) as url:
            live = asyncio.run(replay(url, trace))
    finally:
        asyncio.run(executor.shutdown())

    assert [n for _, _, n in live] == [int(n) for n in trace.output_tokens]  # every token arrived
    live_ttft = float(np.median([t for t, _, _ in live]))
    live_tpot = float(np.nanmedian([p for _, p, _ in live]))
    sim_ttft = float(np.nanmedian(simulated.ttft_s))
    sim_tpot = float(np.nanmedian(simulated.tpot_s))
    assert abs(live_ttft / sim_ttft - 1) <= 0.10, (live_ttft, sim_ttft)
    assert abs(live_tpot / sim_tpot - 1) <= 0.10, (live_tpot, sim_tpot)
