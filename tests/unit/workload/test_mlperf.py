"""MLPerf scenario presets: arrival processes and limits."""

from __future__ import annotations

import numpy as np
import pytest

from npucenter.errors import InvalidConfigError, NotFoundError
from npucenter.workload.mlperf import MLPERF_SCENARIOS, mlperf_scenario, scenario_trace
from npucenter.workload.synthetic import FixedLength

_LEN = FixedLength(tokens=16)


def test_names_resolve_with_or_without_the_prefix() -> None:
    assert mlperf_scenario("Server") is MLPERF_SCENARIOS["mlperf-server"]
    assert mlperf_scenario("mlperf-offline").arrival == "offline"
    with pytest.raises(NotFoundError):
        mlperf_scenario("singlestream")


def test_interactive_limits_are_tighter_than_server() -> None:
    server, inter = mlperf_scenario("server").slo, mlperf_scenario("interactive").slo
    assert inter.ttft_s < server.ttft_s and inter.tpot_s < server.tpot_s
    assert all(s.source for s in MLPERF_SCENARIOS.values())


def test_offline_sends_every_query_at_once() -> None:
    tr = scenario_trace(
        mlperf_scenario("offline"),
        num_requests=50,
        prompt=_LEN,
        output=_LEN,
        rng=np.random.default_rng(0),
    )
    assert len(tr) == 50 and float(tr.arrival_s.max()) == 0.0


def test_server_is_poisson_at_the_target_qps_and_needs_one() -> None:
    sc = mlperf_scenario("server")
    tr = scenario_trace(
        sc, num_requests=4000, prompt=_LEN, output=_LEN, rng=np.random.default_rng(1), target_qps=8
    )
    rate = (len(tr) - 1) / float(tr.arrival_s[-1])
    assert rate == pytest.approx(8.0, rel=0.08)
    with pytest.raises(InvalidConfigError):
        scenario_trace(sc, num_requests=5, prompt=_LEN, output=_LEN, rng=np.random.default_rng(0))


def test_a_spec_names_the_scenario_and_its_qps_and_resamples_the_lengths() -> None:
    from npucenter.workload.mlperf import scenario_trace_from_spec
    from npucenter.workload.trace import Trace

    lengths = Trace(
        name="src",
        arrival_s=np.zeros(3),
        prompt_tokens=np.array([10, 20, 30]),
        output_tokens=np.array([5, 6, 7]),
    )
    rng = np.random.default_rng(0)
    server = scenario_trace_from_spec("mlperf-server:5", lengths=lengths, num_requests=500, rng=rng)
    assert float(server.arrival_s[-1]) > 0 and set(server.prompt_tokens.tolist()) <= {10, 20, 30}
    offline = scenario_trace_from_spec("mlperf-offline", lengths=lengths, num_requests=9, rng=rng)
    assert float(offline.arrival_s.max()) == 0.0
    with pytest.raises(InvalidConfigError):
        scenario_trace_from_spec("mlperf-server:fast", lengths=lengths, num_requests=9, rng=rng)


def test_dataset_stats_say_which_mean_length_is_unpublished() -> None:
    import dataclasses

    from npucenter.workload.mlperf import OPENORCA_LLAMA2_70B, mlperf_dataset

    assert mlperf_dataset("Llama-2-70B") is OPENORCA_LLAMA2_70B
    assert mlperf_dataset("no-such-model") is None
    why = OPENORCA_LLAMA2_70B.missing_lengths()
    assert "mean prompt length" in why and "output length" not in why
    assert OPENORCA_LLAMA2_70B.source in why
    both = dataclasses.replace(OPENORCA_LLAMA2_70B, mean_output_tokens=None)
    assert "mean prompt and output length" in both.missing_lengths()
    known = dataclasses.replace(OPENORCA_LLAMA2_70B, mean_input_tokens=500.0)
    assert known.missing_lengths() == ""
