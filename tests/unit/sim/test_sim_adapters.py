"""LoRA adapters in the twin: requests name adapters by share, replicas load them (a measured
time on the CPU engine), affinity keeps them where they are loaded, the perf model's LoRA term."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from npucenter.catalog import default_catalog
from npucenter.catalog.precision import Precision
from npucenter.cli.main import app
from npucenter.errors import InvalidConfigError
from npucenter.fleet.adapters import AdapterMix
from npucenter.fleet.spec import fleet_spec_from_mapping
from npucenter.perf import PerfModel
from npucenter.perf.lora import LoraShape, lora_flops_per_token, lora_weight_bytes
from npucenter.sim.adapters import adapter_load_s
from npucenter.sim.center import Center
from npucenter.workload import FixedLength, PoissonArrivals, synthetic_trace


def _fleet(adapters: dict[str, Any] | None, replicas: int = 2) -> dict[str, Any]:
    fleet: dict[str, Any] = {
        "name": "lora",
        "servers": [{"device": "h100", "count": 1, "cards_per_server": 8}],
        "services": [
            {"model": "llama-3.1-8b", "device": "h100", "replicas": replicas, "max_num_seqs": 32}
        ],
        "slo": "mlperf-llama-3.1-8b",
    }
    if adapters is not None:
        fleet["adapters"] = {"llama-3.1-8b": adapters}
    return fleet


def _trace(n: int = 400, rate_rps: float = 20.0) -> Any:
    return synthetic_trace(
        num_requests=n,
        arrivals=PoissonArrivals(rate_rps=rate_rps),
        prompt=FixedLength(tokens=256),
        output=FixedLength(tokens=32),
        rng=np.random.default_rng(3),
    )


def _run(fleet: dict[str, Any], policy: str = "prefix-affinity", n: int = 400) -> Any:
    center = Center(fleet_spec_from_mapping(fleet), default_catalog(), policy=policy)
    return center.run(_trace(n))


def test_lora_cost_is_the_adapters_matmuls_from_the_architecture() -> None:
    cat = default_catalog()
    model = cat.model("llama-3.1-8b")  # hidden 4096, 8 KV heads of 128: kv_dim 1024, 32 layers
    shape = LoraShape(rank=8, target_modules=("q_proj", "v_proj"))
    per_layer = 2 * 8 * (4096 + 4096) + 2 * 8 * (4096 + 1024)
    assert lora_flops_per_token(model, shape) == 32 * per_layer
    assert lora_weight_bytes(model, shape) == 32 * per_layer / 2 * 2  # r·(in+out) at 16 bits
    base = PerfModel(model, cat.device("h100"), Precision.FP8)
    lora = base.with_lora(shape)
    wide = base.with_lora(LoraShape(rank=64, target_modules=("q_proj", "v_proj", "o_proj")))
    for args in ((512.0, base.attn_pairs(512.0, 0.0), 0.0, 0.0), (0.0, 0.0, 32.0, 32 * 600.0)):
        assert base.step_time_s(*args) < lora.step_time_s(*args) < wide.step_time_s(*args)
    assert base.lora is None and any("LoRA r=8" in a for a in lora.assumptions())
    with pytest.raises(InvalidConfigError):
        LoraShape(target_modules=("lm_head",))


def test_requests_name_adapters_by_share_deterministically() -> None:
    fleet = _fleet({"shares": {"lab-a": 0.5, "lab-b": 0.25}, "load_s": 0.2})
    one, two = _run(fleet).summary["adapters"], _run(fleet).summary["adapters"]
    assert one == two
    mine = one["llama-3.1-8b"]
    a, b = mine["adapters"]["lab-a"]["requests"], mine["adapters"]["lab-b"]["requests"]
    assert a + b == mine["requests"] and 0.4 * 400 < a < 0.6 * 400 and 0.15 * 400 < b < 0.35 * 400
    assert mine["hits"] == mine["requests"] - mine["loads"]
    # each replica loads each adapter at most once (it keeps what it loaded)
    assert 2 <= mine["loads"] <= 4 and mine["evictions"] == 0
    assert mine["load_s"] == {"nvidia_h100_sxm": "0.2 s: the fleet file (adapters.load_s)"}


def test_affinity_keeps_an_adapter_where_it_is_loaded_and_loads_cost_time() -> None:
    fleet = _fleet({"shares": {"lab-a": 0.5, "lab-b": 0.5}, "load_s": 2.0})
    affinity = _run(fleet, "prefix-affinity")
    spread = _run(fleet, "round-robin")
    loads_affinity = affinity.summary["adapters"]["llama-3.1-8b"]["loads"]
    loads_spread = spread.summary["adapters"]["llama-3.1-8b"]["loads"]
    assert loads_affinity == 2 and loads_spread == 4  # one replica per adapter vs every one
    # the first request of each adapter waited for its load: TTFT over the load time
    assert np.sort(affinity.ttft_s)[-2:].min() >= 2.0
    waited = affinity.summary["adapters"]["llama-3.1-8b"]["load_wait_s"]
    assert waited >= 2 * 2.0
    free = _run(_fleet({"shares": {"lab-a": 0.5, "lab-b": 0.5}, "load_s": 0.0}))
    assert free.summary["adapters"]["llama-3.1-8b"]["load_wait_s"] == 0.0
    assert free.summary["ttft_s"]["p99"] < affinity.summary["ttft_s"]["p99"]


def test_a_replica_that_keeps_one_adapter_reloads_and_lora_slows_the_steps() -> None:
    mix = {"shares": {"lab-a": 0.5, "lab-b": 0.5}, "load_s": 0.01, "max_loaded": 1}
    one = _run(_fleet(mix, replicas=1), "round-robin")
    adapters = one.summary["adapters"]["llama-3.1-8b"]
    assert adapters["evictions"] > 0 and adapters["loads"] > 2
    base = _run(_fleet(None, replicas=1), "round-robin")
    plain = _run(_fleet({"shares": {"lab-a": 0.5}, "load_s": 0.0}, replicas=1), "round-robin")
    assert "adapters" not in base.summary
    assert plain.summary["tpot_s"]["p50"] > base.summary["tpot_s"]["p50"]  # the LoRA term


def test_the_load_time_is_the_measured_one_where_there_is_one() -> None:
    mix = AdapterMix(shares=(("a", 0.5),))
    seconds, source = adapter_load_s(mix, "cpu")
    assert 0 < seconds < 1 and "measured on this machine" in source
    seconds, source = adapter_load_s(mix, "furiosa_rngd")
    assert seconds == 0.0 and "no measured adapter load time for furiosa_rngd" in source
    with pytest.raises(InvalidConfigError):
        fleet_spec_from_mapping(_fleet({"shares": {"a": 0.7, "b": 0.6}}))
    with pytest.raises(InvalidConfigError):
        fleet_spec_from_mapping(_fleet({"shares": {"a": 0.5}, "ranks": 8}))
    wrong = _fleet({"shares": {"a": 0.5}})
    wrong["adapters"] = {"no-such-service": wrong["adapters"]["llama-3.1-8b"]}
    with pytest.raises(InvalidConfigError):
        fleet_spec_from_mapping(wrong)


def test_simulate_reports_adapter_loads(tmp_path: Path) -> None:
    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump(_fleet({"shares": {"lab-a": 0.3}, "load_s": 0.5})))
    out = tmp_path / "s.json"
    args = ["simulate", "--trace", "synthetic:20", "-n", "200", "--fleet", str(path)]
    result = CliRunner().invoke(app, [*args, "--policy", "prefix-affinity", "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "adapters of llama-3.1-8b" in result.output
    summary = json.loads(out.read_text())["adapters"]["llama-3.1-8b"]
    assert summary["loads"] == 1 and summary["requests"] == summary["hits"] + 1


def test_a_replica_scaled_to_zero_comes_back_without_its_adapter() -> None:
    from npucenter.workload.trace import Trace

    fleet = _fleet({"shares": {"lab-a": 1.0}, "load_s": 1.0}, replicas=1)
    fleet["services"][0] |= {
        "min_replicas": 0,
        "max_replicas": 1,
        "autoscale": {"idle_to_zero_s": 30, "scale_down_delay_s": 0},
    }
    arrivals = np.concatenate([np.linspace(0.0, 5.0, 20), np.linspace(300.0, 305.0, 20)])
    trace = Trace(
        name="two-bursts",
        arrival_s=arrivals,
        prompt_tokens=np.full(40, 128),
        output_tokens=np.full(40, 8),
    )
    spec = fleet_spec_from_mapping(fleet)
    scaled = Center(spec, default_catalog(), autoscale=True).run(trace).summary
    fixed = Center(spec, default_catalog(), autoscale=False).run(trace).summary
    assert scaled["autoscaling"]["llama-3.1-8b"]["scale_downs"] >= 1
    assert scaled["adapters"]["llama-3.1-8b"]["loads"] == 2  # once per engine start
    assert fixed["adapters"]["llama-3.1-8b"]["loads"] == 1
