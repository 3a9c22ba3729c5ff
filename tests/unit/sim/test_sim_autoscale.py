"""The twin runs the live center's autoscaling policy: idle -> zero, a cold start for a request
held at zero, more replicas under load, fewer card-hours than the fixed fleet."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from npucenter.catalog import default_catalog
from npucenter.fleet.spec import fleet_spec_from_mapping
from npucenter.sim.autoscale import COLD_START_S
from npucenter.sim.center import Center
from npucenter.workload import FixedLength, PoissonArrivals, synthetic_trace
from npucenter.workload.trace import Trace


def _fleet(engine: str = "virtual", **scale: object) -> dict[str, object]:
    return {
        "name": "scaled",
        "servers": [{"device": "rngd", "count": 1, "cards_per_server": 8}],
        "services": [
            {"model": "llama-3.1-8b", "device": "rngd", "tp": 1, "replicas_per_server": 8,
             "engine": engine, **scale},
        ],
        "slo": "mlperf-llama-3.1-8b",
    }  # fmt: skip


def _bursts() -> Trace:
    """Ten requests, 1000 s of nothing, ten more."""
    arrivals = np.concatenate([np.linspace(0, 9, 10), np.linspace(1000, 1009, 10)])
    n = len(arrivals)
    return Trace(
        name="bursts",
        arrival_s=arrivals,
        prompt_tokens=np.full(n, 200, dtype=np.int64),
        output_tokens=np.full(n, 50, dtype=np.int64),
    )


@pytest.fixture(scope="module")
def catalog():  # type: ignore[no-untyped-def]
    return default_catalog()


@pytest.mark.parametrize("engine", ["virtual", "vllm"])
def test_idle_goes_to_zero_and_the_next_request_waits_one_cold_start(catalog, engine) -> None:  # type: ignore[no-untyped-def]
    spec = fleet_spec_from_mapping(
        _fleet(engine, min_replicas=0, max_replicas=8, autoscale={"idle_to_zero_s": 100})
    )
    trace = _bursts()
    result = Center(spec, catalog).run(trace)
    s = result.summary
    assert s["completed"] == len(trace)  # nothing lost: the late burst was held, then served
    scaled = s["autoscaling"]["chat" if "chat" in s["autoscaling"] else "llama-3.1-8b"]
    assert scaled["scale_downs"] >= 1 and scaled["scale_ups"] >= 1 and scaled["held_requests"] >= 1
    ttft = result.ttft_s
    cold = COLD_START_S[engine]
    assert ttft[10] >= cold  # the first request after the gap waited for the cold start
    assert np.all(ttft[:10] < cold)  # the first burst found the warm replica
    fixed = Center(spec, catalog, autoscale=False).run(trace).summary
    assert s["held"]["card_hours"] < fixed["held"]["card_hours"] / 4
    assert s["held"]["energy_j"] < fixed["held"]["energy_j"]


def test_load_brings_more_replicas_up_to_the_maximum(catalog) -> None:  # type: ignore[no-untyped-def]
    spec = fleet_spec_from_mapping(
        _fleet(min_replicas=1, max_replicas=4, autoscale={"target_concurrency_per_replica": 2})
    )
    trace = synthetic_trace(
        num_requests=400,
        arrivals=PoissonArrivals(rate_rps=20.0),
        prompt=FixedLength(tokens=500),
        output=FixedLength(tokens=200),
        rng=np.random.default_rng(1),
    )
    result = Center(spec, catalog).run(trace)
    used = set(result.replica_index[result.replica_index >= 0].tolist())
    assert 1 < len(used) <= 4  # scaled out, never past max_replicas of the 8 placed
    assert result.summary["completed"] == len(trace)


def test_a_fleet_without_autoscaling_runs_as_before(catalog) -> None:  # type: ignore[no-untyped-def]
    spec = fleet_spec_from_mapping(_fleet())
    trace = _bursts()
    a = Center(spec, catalog).run(trace).summary
    b = Center(spec, catalog, autoscale=False).run(trace).summary
    assert "autoscaling" not in a and a["energy_j"] == b["energy_j"]
    assert a["held"]["card_hours"] == pytest.approx(8 * a["simulated_s"] / 3600)


def test_simulate_compares_a_fixed_and_an_autoscaled_fleet(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import json

    from typer.testing import CliRunner

    from npucenter.cli.main import app

    example = Path(__file__).parents[3] / "examples" / "fleets" / "autoscale.yaml"
    out = tmp_path / "cmp.json"
    args = ["simulate", "--fleet", str(example), "--trace", "conv"]
    result = CliRunner().invoke(app, [*args, "-n", "2000", "--autoscaling", "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "autoscaled" in result.output and "card-hours" in result.output
    docs = json.loads(out.read_text())
    assert docs["autoscaled"]["held"]["card_hours"] < docs["fixed"]["held"]["card_hours"]
    fixed_only = tmp_path / "fixed.yaml"
    fixed_only.write_text("\n".join(
        line for line in example.read_text().splitlines()
        if "min_replicas" not in line and "autoscale:" not in line
    ).replace("replicas_per_server: 8,", "replicas_per_server: 8}"))  # fmt: skip
    refused = CliRunner().invoke(app, ["simulate", "--fleet", str(fixed_only), "--autoscaling"])
    assert refused.exit_code != 0 and "no service autoscales" in refused.output


def _disaggregated(**scale: object) -> dict[str, object]:
    role = {"service": "chat", "model": "llama-3.1-8b", "device": "rngd", "tp": 1,
            "replicas_per_server": 4, **scale}  # fmt: skip
    return {
        "name": "pd",
        "servers": [{"device": "rngd", "count": 1, "cards_per_server": 8}],
        "services": [{**role, "role": "prefill"}, {**role, "role": "decode"}],
        "slo": "mlperf-llama-3.1-8b",
    }


def _load_then_quiet() -> Trace:
    """A busy minute (Poisson, 20 req/s), 1000 s of nothing, then five requests."""
    busy = synthetic_trace(
        num_requests=1200,
        arrivals=PoissonArrivals(rate_rps=20.0),
        prompt=FixedLength(tokens=4000),
        output=FixedLength(tokens=300),
        rng=np.random.default_rng(7),
    )
    late = busy.arrival_s[-1] + 1000.0 + np.arange(5.0)
    n = len(busy) + 5
    return Trace(
        name="load-then-quiet",
        arrival_s=np.concatenate([busy.arrival_s, late]),
        prompt_tokens=np.full(n, 4000, dtype=np.int64),
        output_tokens=np.full(n, 300, dtype=np.int64),
    )


def test_a_disaggregated_service_scales_each_pool_up_under_load_and_to_zero_idle(catalog) -> None:  # type: ignore[no-untyped-def]
    knobs = {"idle_to_zero_s": 100, "target_concurrency_per_replica": 4, "scale_down_delay_s": 10}
    spec = fleet_spec_from_mapping(_disaggregated(min_replicas=0, max_replicas=4, autoscale=knobs))
    trace = _load_then_quiet()
    result = Center(spec, catalog).run(trace)
    s = result.summary
    assert s["completed"] == len(trace)  # the late requests were held in both pools, then served
    prefill, decode = s["autoscaling"]["chat/prefill"], s["autoscaling"]["chat/decode"]
    for pool in (prefill, decode):  # each pool went up under load, and down to zero when idle
        assert pool["peak_replicas"] > 1 and pool["scale_ups"] > 1
        assert pool["scale_downs"] >= pool["peak_replicas"]
    assert prefill["held_requests"] >= 1 and decode["held_requests"] >= 1
    ttft = result.ttft_s
    assert ttft[-5] >= COLD_START_S["virtual"]  # the first late one waited for a cold start
    fixed = Center(spec, catalog, autoscale=False).run(trace).summary
    assert s["held"]["card_hours"] < fixed["held"]["card_hours"]
    # deterministic: the same run twice decides the same
    again = Center(spec, catalog).run(trace)
    assert again.summary["autoscaling"] == s["autoscaling"]
    assert np.array_equal(again.finish_s, result.finish_s, equal_nan=True)


def test_each_pool_scales_on_its_own_signal(catalog) -> None:  # type: ignore[no-untyped-def]
    # prompts heavy, outputs short: the prefill pool needs more replicas than the decode pool
    spec = fleet_spec_from_mapping(_disaggregated(
        min_replicas=1, max_replicas=4, autoscale={"target_concurrency_per_replica": 2}
    ))  # fmt: skip
    trace = synthetic_trace(
        num_requests=600,
        arrivals=PoissonArrivals(rate_rps=10.0),
        prompt=FixedLength(tokens=6000),
        output=FixedLength(tokens=4),
        rng=np.random.default_rng(3),
    )
    s = Center(spec, catalog).run(trace).summary
    prefill, decode = s["autoscaling"]["chat/prefill"], s["autoscaling"]["chat/decode"]
    assert prefill["peak_replicas"] > decode["peak_replicas"]
    assert s["completed"] == len(trace)
