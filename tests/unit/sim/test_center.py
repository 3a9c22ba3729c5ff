"""The whole center: fleets parse, every request ends exactly once, determinism, disaggregation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from summary_contract import assert_summary_contract

from npucenter.catalog import default_catalog
from npucenter.errors import InvalidConfigError, NotFoundError, UnknownPluginError
from npucenter.fleet.spec import fleet_spec_from_mapping
from npucenter.sim.center import build_center
from npucenter.sim.report import render_html_report
from npucenter.workload import FixedLength, PoissonArrivals, read_azure_trace, synthetic_trace

SMALL = {
    "name": "small",
    "servers": [
        {"device": "rngd", "count": 1, "cards_per_server": 8},
        {"device": "h100", "count": 1, "cards_per_server": 8},
    ],
    "services": [
        {"model": "llama-3.1-8b", "device": "rngd", "tp": 1, "replicas_per_server": 2},
        {"model": "llama-3.1-8b", "device": "h100", "tp": 1, "replicas_per_server": 1},
    ],
    "slo": "mlperf-llama-3.1-8b",
}


def _poisson_fixed(n: int, *, rate_rps: float, prompt: int, output: int, seed: int):
    """``n`` Poisson arrivals, every request ``prompt`` tokens in and ``output`` out."""
    return synthetic_trace(
        num_requests=n,
        arrivals=PoissonArrivals(rate_rps=rate_rps),
        prompt=FixedLength(tokens=prompt),
        output=FixedLength(tokens=output),
        rng=np.random.default_rng(seed),
    )


@pytest.fixture(scope="module")
def catalog():
    return default_catalog()


@pytest.fixture(scope="module")
def conv_head():
    return read_azure_trace("conv").head(1500)


@pytest.mark.parametrize(
    "policy", ["round-robin", "least-outstanding-tokens", "npu-first", "slo-aware"]
)
def test_every_request_completes_exactly_once(catalog, conv_head, policy):
    center = build_center(fleet_spec_from_mapping(SMALL), catalog, policy=policy)
    res = center.run(conv_head.scale_rate(3.0))
    assert res.summary["requests"] == len(conv_head)
    assert res.summary["completed"] + res.summary["rejected"] == len(conv_head)
    assert res.summary["rejected"] == 0
    assert np.all(np.isfinite(res.finish_s))
    assert np.all(res.first_token_s >= res.trace.arrival_s)
    assert np.all(res.finish_s >= res.first_token_s)
    assert np.all(res.replica_index >= 0)
    # the replicas emitted exactly the tokens the trace asked for: none lost, none twice
    assert res.summary["tokens_emitted"] == int(conv_head.output_tokens.sum())
    assert res.summary["output_tokens"] == int(conv_head.output_tokens.sum())
    assert_summary_contract(res.summary)


def test_runs_are_deterministic(catalog, conv_head):
    center = build_center(fleet_spec_from_mapping(SMALL), catalog, policy="npu-first")
    a = center.run(conv_head)
    b = center.run(conv_head)
    np.testing.assert_array_equal(a.finish_s, b.finish_s)
    np.testing.assert_array_equal(a.replica_index, b.replica_index)


def test_npu_first_keeps_gpu_idle_at_light_load_and_spills_when_overloaded(catalog):
    center = build_center(fleet_spec_from_mapping(SMALL), catalog, policy="npu-first")
    light = _poisson_fixed(300, rate_rps=1.0, prompt=500, output=50, seed=0)
    res = center.run(light)
    kinds = np.array(res.replica_kinds)[res.replica_index]
    assert (kinds == "gpu").sum() == 0
    heavy = _poisson_fixed(3000, rate_rps=200.0, prompt=4000, output=50, seed=0)
    res = center.run(heavy)
    kinds = np.array(res.replica_kinds)[res.replica_index]
    assert (kinds == "gpu").sum() > 0


def test_energy_accounts_for_idle_cards(catalog):
    spec = fleet_spec_from_mapping(SMALL)
    center = build_center(spec, catalog)
    assert center.unused_cards == {"rngd": 6, "h100": 7}
    trace = _poisson_fixed(50, rate_rps=0.1, prompt=100, output=10, seed=1)
    res = center.run(trace)
    s = res.summary
    # a nearly idle fleet draws about its idle power: 8 RNGD x 30 W + 8 H100 x 140 W
    assert s["mean_power_w"] == pytest.approx(8 * 30 + 8 * 140, rel=0.05)
    tl = s["timeline"]
    assert len(tl["t_s"]) == len(tl["fleet_power_w"])
    assert np.mean(tl["fleet_power_w"]) == pytest.approx(s["mean_power_w"], rel=0.05)


def test_disaggregated_prefill_on_gpu_decode_on_npu(catalog):
    spec = fleet_spec_from_mapping(
        {
            "servers": SMALL["servers"],
            "services": [
                {"service": "chat", "model": "llama-3.1-8b", "device": "h100", "role": "prefill"},
                {
                    "service": "chat",
                    "model": "llama-3.1-8b",
                    "device": "rngd",
                    "role": "decode",
                    "replicas_per_server": 2,
                },
            ],
            "network_gb_per_s": 1.0,
            "network_latency_s": 0.001,
        }
    )
    center = build_center(spec, catalog)
    # alone: no queueing
    trace = _poisson_fixed(20, rate_rps=0.05, prompt=2000, output=20, seed=2)
    res = center.run(trace)
    assert res.summary["completed"] == 20
    h100 = center._perf.get("llama-3.1-8b", "h100", None, 1)
    rngd = center._perf.get("llama-3.1-8b", "rngd", None, 1)
    assert np.allclose(res.ttft_s, h100.ttft_s(2000), rtol=1e-9)
    transfer = 0.001 + rngd.kv_bytes_per_token * 2000 / 1e9
    # decode side: one token from the transferred KV, then 18 decode steps on RNGD
    e2e_decode = res.finish_s - res.first_token_s - transfer
    assert np.all(e2e_decode > 18 * rngd.tpot_s(1, 2000) * 0.99)
    assert np.all(e2e_decode < 19 * rngd.tpot_s(1, 2020) * 1.01)


def test_one_service_mixes_colocated_and_disaggregated_replicas(catalog):
    latency_s = 0.5  # a slow hand-off, so disaggregated requests are told apart by their TPOT
    spec = fleet_spec_from_mapping(
        {
            "servers": SMALL["servers"],
            "services": [
                {"service": "chat", "model": "llama-3.1-8b", "device": "rngd", "role": "both"},
                {"service": "chat", "model": "llama-3.1-8b", "device": "h100", "role": "prefill"},
                {"service": "chat", "model": "llama-3.1-8b", "device": "rngd", "role": "decode"},
            ],
            "network_latency_s": latency_s,
        }
    )
    center = build_center(spec, catalog, policy="round-robin")
    trace = _poisson_fixed(40, rate_rps=0.2, prompt=500, output=20, seed=4)
    res = center.run(trace)
    assert res.summary["completed"] == len(trace)
    deps = center.fleet.deployments
    roles = {p.replica_id: deps[p.deployment_index].role for p in center.placement.replicas}
    entry = [roles[res.replica_ids[k]] for k in res.replica_index]
    assert set(entry) == {"both", "prefill"}  # round-robin over both kinds of entry replica
    split = np.array([role == "prefill" for role in entry])
    decode_s = res.finish_s - res.first_token_s
    assert np.all(decode_s[split] > latency_s)  # the KV hand-off lies between first and second
    assert np.all(decode_s[~split] < latency_s)


def test_too_long_requests_are_rejected_not_lost(catalog):
    center = build_center(fleet_spec_from_mapping(SMALL), catalog)
    # prompts longer than Llama-3.1's context
    trace = _poisson_fixed(5, rate_rps=1.0, prompt=200_000, output=10, seed=3)
    res = center.run(trace)
    assert res.summary["rejected"] == 5 and res.summary["completed"] == 0
    assert res.summary["slo_attainment"] == 0.0


def test_fleet_errors_are_typed(catalog):
    with pytest.raises(InvalidConfigError):
        fleet_spec_from_mapping({**SMALL, "bogus": 1})
    with pytest.raises(InvalidConfigError):
        fleet_spec_from_mapping(
            {
                **SMALL,
                "services": [
                    {"model": "llama-3.1-8b", "device": "rngd", "tp": 4, "replicas_per_server": 3}
                ],
            }
        )
    with pytest.raises(NotFoundError):
        fleet_spec_from_mapping({**SMALL, "slo": "no-such-preset"})
    with pytest.raises(UnknownPluginError):
        build_center(fleet_spec_from_mapping(SMALL), catalog, policy="nope")
    with pytest.raises(InvalidConfigError):
        fleet_spec_from_mapping(
            {**SMALL, "services": [{"model": "llama-3.1-8b", "device": "rngd", "role": "prefill"}]}
        )


def test_html_report_is_self_contained(catalog, conv_head):
    res = build_center(fleet_spec_from_mapping(SMALL), catalog).run(conv_head.head(300))
    page = render_html_report(res)
    assert page.startswith("<!doctype html>") and page.count("<svg") == 4
    assert "http://" not in page.replace("http://www.w3.org/2000/svg", "")
    assert "<script" not in page
    assert math.isfinite(res.summary["energy_j_per_output_token"])


def test_distserve_goodput_brackets_the_attainment_knee(catalog):
    from npucenter.sim.center import distserve_goodput

    center = build_center(
        fleet_spec_from_mapping(SMALL), catalog, policy="least-outstanding-tokens"
    )
    trace = read_azure_trace("conv").head(600)
    best = distserve_goodput(center, trace, rel_tol=0.1)
    assert best > 0
    at_best = center.run(trace.scale_rate(best / trace.mean_rate_rps)).summary["slo_attainment"]
    assert at_best >= 0.9


def test_public_names_match_all():
    import npucenter.sim as sim
    from npucenter.sim import analytic, center, fakes, replica, report, results

    for mod in (sim, analytic, center, fakes, replica, report, results):
        for name in mod.__all__:
            assert hasattr(mod, name), (mod.__name__, name)


def test_arrivals_read_block_by_block_give_the_same_run(catalog, conv_head, monkeypatch):
    from npucenter.sim import center as center_module

    center = build_center(fleet_spec_from_mapping(SMALL), catalog, policy="npu-first")
    whole = center.run(conv_head.scale_rate(3.0))
    monkeypatch.setattr(center_module, "_BLOCK", 7)  # many blocks, an arrival at each edge
    blocks = center.run(conv_head.scale_rate(3.0))
    assert np.array_equal(whole.replica_index, blocks.replica_index)
    assert np.array_equal(whole.finish_s, blocks.finish_s, equal_nan=True)
    assert np.array_equal(whole.first_token_s, blocks.first_token_s, equal_nan=True)
