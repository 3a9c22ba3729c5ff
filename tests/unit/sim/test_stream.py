"""A streamed run serves the same requests as Center.run at the same times, keeping only totals."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import yaml

from npucenter.catalog import default_catalog
from npucenter.errors import InvalidConfigError
from npucenter.fleet.spec import fleet_spec_from_mapping
from npucenter.sim import stream
from npucenter.sim.center import Center, build_center
from npucenter.workload import EmpiricalLengths, PoissonArrivals, read_azure_trace, synthetic_trace

ROOT = Path(__file__).resolve().parents[3]


def _center(policy: str = "least-outstanding-tokens") -> Center:
    data = yaml.safe_load((ROOT / "examples" / "fleets" / "gwangju-80-20.yaml").read_text())
    return build_center(fleet_spec_from_mapping(data), default_catalog(), policy=policy)


def _trace(n: int, rate: float):  # type: ignore[no-untyped-def]
    conv = read_azure_trace("conv")
    return synthetic_trace(
        num_requests=n,
        arrivals=PoissonArrivals(rate_rps=rate),
        prompt=EmpiricalLengths.from_array(conv.prompt_tokens),
        output=EmpiricalLengths.from_array(conv.output_tokens),
        rng=np.random.default_rng(3),
    )


@pytest.mark.parametrize("policy", ["least-outstanding-tokens", "npu-first", "slo-aware"])
def test_streamed_blocks_give_the_records_summary(policy: str) -> None:
    center = _center(policy)
    trace = _trace(3000, 12.0)
    full = center.run(trace)
    blocks = [trace._with(slice(k, k + 700)) for k in range(0, len(trace), 700)]
    seen: list[int] = []
    out = stream.run_streamed(center, blocks, progress=lambda n, t: seen.append(n))
    s = full.summary
    assert seen == [700, 1400, 2100, 2800, 3000]
    assert out["requests"] == s["requests"] == 3000
    assert out["completed"] == s["completed"]
    assert out["rejected"] + out["completed"] == 3000 and out["in_flight_at_end"] == 0
    assert out["events"] == full.num_events
    for key in ("ttft_s", "tpot_s", "e2e_s"):
        assert math.isclose(out[key]["mean"], s[key]["mean"], rel_tol=1e-9)
        for q in ("p50", "p90", "p99"):  # one bin of a log-spaced histogram: 0.5 % wide
            assert out[key][q] == pytest.approx(s[key][q], rel=0.006)
    assert out["simulated_s"] == pytest.approx(full.simulated_s)


def test_memory_does_not_keep_finished_requests() -> None:
    center = _center()
    trace = _trace(2000, 12.0)
    sizes: list[int] = []

    def blocks():  # type: ignore[no-untyped-def]
        for k in range(0, 2000, 200):
            yield trace._with(slice(k, k + 200))

    state_sizes = []
    real = stream._InFlight

    class Spy(real):  # type: ignore[misc, valid-type]
        def finish(self, idx: int, finish_s: float) -> None:
            super().finish(idx, finish_s)
            state_sizes.append(len(self.arrival))

    stream._InFlight = Spy  # type: ignore[misc]
    try:
        out = stream.run_streamed(center, blocks(), progress=lambda n, t: sizes.append(n))
    finally:
        stream._InFlight = real  # type: ignore[misc]
    assert out["completed"] == 2000
    # in flight at any finish: far fewer than the requests served (12 replicas, ~20 each)
    assert max(state_sizes) < 600 and state_sizes[-1] == 0


def test_refuses_what_reaches_back_into_the_trace() -> None:
    fleet = fleet_spec_from_mapping(
        {
            "servers": [{"device": "h100", "count": 1, "cards_per_server": 8}],
            "services": [
                {"model": "llama-3.1-8b", "device": "h100", "role": "prefill", "replicas": 2},
                {"model": "llama-3.1-8b", "device": "h100", "role": "decode", "replicas": 2},
            ],
        }
    )
    center = build_center(fleet, default_catalog())
    with pytest.raises(InvalidConfigError, match="colocated"):
        stream.run_streamed(center, [_trace(10, 1.0)])
    with pytest.raises(InvalidConfigError, match="at least one"):
        stream.run_streamed(_center(), [])
