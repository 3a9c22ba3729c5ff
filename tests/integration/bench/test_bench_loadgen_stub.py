"""The load generator against the loopback stub: timings, token counts, errors, reproducibility."""

from __future__ import annotations

import socket

import pytest

from npucenter.bench.client import Target, preflight
from npucenter.bench.loadgen import make_client, run_load
from npucenter.bench.power import make_power_source
from npucenter.bench.scenario import Scenario
from npucenter.bench.stub import running_stub, stub_script
from npucenter.errors import (
    AuthenticationError,
    NotFoundError,
    NotSupportedError,
    PermissionDeniedError,
    UpstreamError,
)


async def _run(url, scenario, **target_kw):
    target = Target(base_url=url, model=target_kw.pop("model", "stub-model"), **target_kw)
    async with make_client(None, 30) as client:
        info = await preflight(client, target)
        return info, await run_load(
            client, target, scenario, info=info, power=make_power_source("auto", target.root_url)
        )


async def test_poisson_run_measures_ttft_tokens_and_energy(stub_url):
    sc = Scenario(
        arrival="poisson", rate_rps=100, max_requests=60, input_tokens=64, output_tokens=9
    )
    info, out = await _run(stub_url, sc)
    s = out.summary
    assert s["completed"] == 60 and s["errors"] == 0
    # the stub waits 20 ms before its first token and 2 ms between chunks of 2 tokens
    assert s["ttft_s"]["min"] >= 0.02
    assert s["e2e_s"]["min"] >= 0.02 + 4 * 0.002
    # tokens from usage: 9 per request even though only 5 chunks arrive
    assert s["total_output_tokens"] == 60 * 9
    assert all(r.num_chunks == 5 for r in out.records)
    # calibration learnt the stub's 7-token template overhead: prompts hit 64 exactly
    assert info.calibration.overhead_tokens == pytest.approx(7)
    assert s["input_token_error_fraction"] == 0
    assert all(r.prompt_tokens == 64 for r in out.records)
    # without per-chunk usage, ITL is per chunk (as vllm bench serve does)
    assert all(len(r.itl_s) == 4 for r in out.records)
    assert s["energy_j"] is not None and s["output_tokens_per_j"] > 0


async def test_continuous_usage_splits_chunk_gaps_per_token(stub_url):
    sc = Scenario(arrival="constant", rate_rps=50, max_requests=4, output_tokens=9)
    _, out = await _run(stub_url, sc, continuous_usage=True)
    # 5 chunks carrying 2+2+2+2+1 tokens: every token after the first chunk gets one ITL
    assert all(len(r.itl_s) == 7 for r in out.records)


async def test_reasoning_tokens_counted_and_start_ttft():
    with running_stub(stub_script(reasoning_tokens=3)) as url:
        sc = Scenario(arrival="constant", rate_rps=50, max_requests=5, output_tokens=6)
        _, out = await _run(url, sc)
    assert out.summary["total_reasoning_tokens"] == 15
    assert out.summary["total_output_tokens"] == 30
    assert all(r.ttft_s is not None for r in out.records)


async def test_closed_loop_concurrency_never_exceeds_workers():
    with running_stub(stub_script(ttft_s=0.01)) as url:
        sc = Scenario(arrival="concurrency", concurrency=3, max_requests=30, output_tokens=4)
        _, out = await _run(url, sc)
    assert out.summary["completed"] == 30
    assert out.summary["max_concurrent_requests"] <= 3


async def test_duration_bound_and_max_concurrency_cap():
    with running_stub(stub_script(ttft_s=0.05)) as url:
        sc = Scenario(
            arrival="constant", rate_rps=200, duration_s=0.5, max_concurrency=4, output_tokens=2
        )
        _, out = await _run(url, sc)
    assert out.summary["requests"] == 100
    assert out.summary["max_concurrent_requests"] <= 4
    # the cap delays sends: lag shows it
    assert out.summary["lag_s"]["max"] > 0.1


async def test_same_scenario_twice_gives_same_throughput(stub_url):
    sc = Scenario(arrival="poisson", rate_rps=150, max_requests=150, output_tokens=8, seed=7)
    _, a = await _run(stub_url, sc)
    _, b = await _run(stub_url, sc)
    ta, tb = a.summary["output_tokens_per_s"], b.summary["output_tokens_per_s"]
    assert abs(ta - tb) / ta < 0.05


async def test_unreachable_endpoint_is_an_upstream_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sc = Scenario(arrival="constant", rate_rps=1, max_requests=1)
    with pytest.raises(UpstreamError):
        await _run(f"http://127.0.0.1:{port}", sc)


async def test_auth_failure_and_success_with_key():
    with running_stub(stub_script(api_key="sekrit", forbidden_key="read-only")) as url:
        sc = Scenario(arrival="constant", rate_rps=20, max_requests=2)
        with pytest.raises(AuthenticationError):
            await _run(url, sc)
        with pytest.raises(AuthenticationError):
            await _run(url, sc, api_key="wrong")
        with pytest.raises(PermissionDeniedError):
            await _run(url, sc, api_key="read-only")
        _, out = await _run(url, sc, api_key="sekrit")
        assert out.summary["completed"] == 2


async def test_unknown_model_lists_valid_names(stub_url):
    sc = Scenario(arrival="constant", rate_rps=1, max_requests=1)
    with pytest.raises(NotFoundError) as info:
        await _run(stub_url, sc, model="llama-9000")
    assert "stub-model" in info.value.valid


async def test_non_streaming_server_is_not_supported():
    with running_stub(stub_script(streaming=False)) as url:
        with pytest.raises(NotSupportedError) as info:
            await _run(url, Scenario(arrival="constant", rate_rps=1, max_requests=1))
    assert info.value.feature == "streaming"


async def test_request_errors_are_recorded_by_kind(stub_url):
    # a stub that drops the model after preflight: send to a model it does not serve
    target = Target(base_url=stub_url, model="ghost")
    sc = Scenario(arrival="constant", rate_rps=100, max_requests=5)
    async with make_client(None, 10) as client:
        out = await run_load(client, target, sc)
    assert out.summary["errors"] == 5
    assert out.summary["errors_by_kind"] == {"http_404": 5}
    assert out.summary["goodput_rps"] == 0


async def test_strict_server_gets_requests_without_vllm_extensions():
    with running_stub(stub_script(strict_fields=True)) as url:
        sc = Scenario(arrival="constant", rate_rps=50, max_requests=5, output_tokens=4)
        info, out = await _run(url, sc)
    assert not info.ignore_eos and info.include_usage
    assert any("ignore_eos" in n for n in info.notes)
    assert out.summary["completed"] == 5 and out.summary["total_output_tokens"] == 20
