"""Workload: trace readers, transformations, synthetic arrivals, SLO presets and goodput."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from npucenter import workload as wl
from npucenter.errors import InvalidConfigError, NotFoundError
from npucenter.workload import (
    SLO_PRESETS,
    DiurnalArrivals,
    EmpiricalLengths,
    FixedLength,
    GammaArrivals,
    LogNormalLengths,
    PoissonArrivals,
    Slo,
    UniformLengths,
    distserve_goodput_rps,
    goodput_rps,
    latency_summary,
    meets_slo,
    merge_traces,
    parse_azure_csv,
    parse_request_log,
    read_azure_trace,
    slo_attainment,
    slo_from_spec,
    synthetic_trace,
)


def test_all_exports_exist():
    for name in wl.__all__:
        assert hasattr(wl, name)


def test_packaged_azure_traces_have_the_published_sizes():
    conv = read_azure_trace("conv")
    code = read_azure_trace("azure-code")
    assert len(conv) == 19_366 and len(code) == 8_819
    assert conv.arrival_s[0] == 0.0 and 3400 < conv.duration_s < 3600  # one hour
    assert "CC BY 4.0" in conv.source and "Splitwise" in conv.source
    assert np.all(np.diff(conv.arrival_s) >= 0)
    with pytest.raises(NotFoundError):
        read_azure_trace("nope")


def test_parse_azure_csv_sorts_and_rebases():
    text = (
        "TIMESTAMP,ContextTokens,GeneratedTokens\n"
        "2023-11-16 23:59:59.5000000,10,2\n"
        "2023-11-16 23:59:58.0000000,20,3\n"
        "2023-11-17 00:00:01.0000000,30,0\n"
    )
    tr = parse_azure_csv(text)
    assert tr.arrival_s.tolist() == pytest.approx([0.0, 1.5, 3.0])
    assert tr.prompt_tokens.tolist() == [20, 10, 30]
    assert tr.output_tokens.tolist() == [3, 2, 1]  # zero outputs become one token
    with pytest.raises(InvalidConfigError):
        parse_azure_csv("a,b,c\n1,2,3\n")


def test_parse_request_logs_csv_and_jsonl():
    csv_text = "timestamp,input_tokens,output_tokens,tenant\n5.0,100,10,uni\n2.0,50,5,corp\n"
    tr = parse_request_log(csv_text, fmt="csv")
    assert tr.arrival_s.tolist() == [0.0, 3.0]
    assert tr.tenant_names[tr.tenant_index[0]] == "corp"
    lines = "\n".join(
        json.dumps({"arrival_s": t, "prompt_tokens": 10, "output_tokens": 4, "service": s})
        for t, s in [(0.0, "chat"), (1.0, "code"), (2.0, "chat")]
    )
    tr2 = parse_request_log(lines, fmt="jsonl")
    assert tr2.service_names == ("chat", "code") and tr2.service_index.tolist() == [0, 1, 0]
    with pytest.raises(InvalidConfigError) as err:
        parse_request_log("when,a,b\n1,2,3\n")
    assert err.value.field == "request log columns"
    with pytest.raises(InvalidConfigError):
        parse_request_log("{not json}\n", fmt="jsonl")


def test_rate_scaling_split_and_merge():
    conv = read_azure_trace("conv").head(2000)
    fast = conv.scale_rate(4.0)
    assert fast.duration_s == pytest.approx(conv.duration_s / 4)
    assert fast.mean_rate_rps == pytest.approx(conv.mean_rate_rps * 4)
    split = conv.split({"chat": 3, "search": 1}, np.random.default_rng(0))
    chat, search = split.for_service("chat"), split.for_service("search")
    assert len(chat) + len(search) == len(conv)
    assert len(chat) / len(conv) == pytest.approx(0.75, abs=0.03)
    merged = merge_traces([chat, search])
    assert np.array_equal(merged.arrival_s, conv.arrival_s)
    assert sorted(merged.service_names) == ["chat", "search"]
    with pytest.raises(InvalidConfigError):
        conv.scale_rate(0)
    with pytest.raises(InvalidConfigError):
        conv.split({"a": -1.0}, np.random.default_rng(0))


def test_trace_is_immutable_and_validated():
    tr = synthetic_trace(
        num_requests=10,
        arrivals=PoissonArrivals(rate_rps=1),
        prompt=FixedLength(tokens=5),
        output=FixedLength(tokens=5),
        rng=np.random.default_rng(0),
    )
    with pytest.raises(ValueError):
        tr.arrival_s[0] = 5.0
    with pytest.raises(InvalidConfigError):
        wl.Trace(name="x", arrival_s=[1.0, 0.5], prompt_tokens=[1, 1], output_tokens=[1, 1])
    with pytest.raises(InvalidConfigError):
        wl.Trace(name="x", arrival_s=[0.0], prompt_tokens=[0], output_tokens=[1])


@pytest.mark.parametrize(
    "arrivals",
    [
        PoissonArrivals(rate_rps=20.0),
        GammaArrivals(rate_rps=20.0, cv=3.0),
        DiurnalArrivals(mean_rate_rps=20.0, period_s=100.0),
    ],
)
def test_synthetic_arrival_rates(arrivals):
    tr = synthetic_trace(
        num_requests=50_000,
        arrivals=arrivals,
        prompt=FixedLength(tokens=5),
        output=FixedLength(tokens=5),
        rng=np.random.default_rng(1),
    )
    assert tr.mean_rate_rps == pytest.approx(20.0, rel=0.05)


def test_gamma_arrivals_are_bursty_and_diurnal_follows_its_sine():
    rng = np.random.default_rng(2)
    gaps = np.diff(GammaArrivals(rate_rps=10.0, cv=3.0).sample(50_000, rng))
    assert gaps.std() / gaps.mean() == pytest.approx(3.0, rel=0.1)
    d = DiurnalArrivals(mean_rate_rps=50.0, amplitude_fraction=0.8, period_s=1000.0)
    t = d.sample(100_000, rng)
    counts, _ = np.histogram(t % 1000.0, bins=4, range=(0, 1000))
    # rate = m(1 - a cos(2 pi t / P)): the middle half-period holds (1 + 2a/pi) / (1 - 2a/pi)
    # times as many arrivals as the outer one
    expected = (1 + 1.6 / math.pi) / (1 - 1.6 / math.pi)
    assert (counts[1] + counts[2]) / (counts[0] + counts[3]) == pytest.approx(expected, rel=0.05)


def test_length_distributions():
    rng = np.random.default_rng(3)
    assert UniformLengths(low=3, high=5).sample(1000, rng).min() >= 3
    ln = LogNormalLengths(mean_tokens=500, sigma=0.5).sample(100_000, rng)
    assert ln.mean() == pytest.approx(500, rel=0.03)
    emp = EmpiricalLengths.from_array([7, 9]).sample(100, rng)
    assert set(emp.tolist()) <= {7, 9}
    with pytest.raises(InvalidConfigError):
        UniformLengths(low=5, high=3)


def test_mlperf_presets_match_loadgen_config():
    assert (SLO_PRESETS["mlperf-llama-2-70b"].ttft_s, SLO_PRESETS["mlperf-llama-2-70b"].tpot_s) == (
        2.0,
        0.2,
    )
    assert (
        SLO_PRESETS["mlperf-llama-3.1-8b"].ttft_s,
        SLO_PRESETS["mlperf-llama-3.1-8b"].tpot_s,
    ) == (2.0, 0.1)
    assert all("mlperf.conf" in s.source for k, s in SLO_PRESETS.items() if k.startswith("mlperf"))
    assert slo_from_spec({"ttft_s": 1, "tpot_s": 0.05}).ttft_s == 1.0
    with pytest.raises(NotFoundError):
        slo_from_spec("nope")
    with pytest.raises(InvalidConfigError):
        Slo(name="x", ttft_s=0, tpot_s=1)


def test_goodput_counts_misses_and_one_token_outputs():
    slo = Slo(name="t", ttft_s=1.0, tpot_s=0.1)
    ttft = np.array([0.5, 2.0, 0.5, 0.5, np.nan])
    tpot = np.array([0.05, 0.05, 0.5, np.nan, np.nan])
    done = np.array([True, True, True, True, False])
    met = meets_slo(ttft, tpot, done, slo)
    assert met.tolist() == [True, False, False, True, False]
    assert slo_attainment(met) == 0.4
    assert goodput_rps(met, 10.0) == 0.2
    s = latency_summary([1.0, 2.0, np.nan])
    assert s["p50"] == 1.5 and not math.isnan(s["p99"])


def test_distserve_goodput_finds_the_knee():
    # attainment falls linearly from 1 at 0 req/s to 0 at 100 req/s -> 90 % at 10 req/s
    calls = []

    def attainment(rate):
        calls.append(rate)
        return max(0.0, 1 - rate / 100)

    best = distserve_goodput_rps(attainment, low_rps=1, high_rps=80, rel_tol=0.01)
    assert best == pytest.approx(10.0, rel=0.02) and best <= 10.0
    assert distserve_goodput_rps(attainment, low_rps=50, high_rps=80) == 0.0
    assert len(calls) < 30
