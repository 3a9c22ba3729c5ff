"""Saturation from sweep steps, and invariants of the SSE parser, plans and distributions."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from npucenter.bench.loadgen import RunOutcome
from npucenter.bench.metrics import distribution, summarize
from npucenter.bench.record import RequestRecord
from npucenter.bench.scenario import Scenario, build_plan
from npucenter.bench.sweep import backlog_grows, saturation_of
from npucenter.wire.sse import SSEParser


def _recs(ttfts, gap=0.01, e2e=0.1):
    return [
        RequestRecord(
            index=i,
            scheduled_s=i * gap,
            start_s=i * gap,
            ttft_s=t,
            e2e_s=e2e + t,
            output_tokens=10,
            ok=True,
        )
        for i, t in enumerate(ttfts)
    ]


def _step(offered, steady, ttfts, dropped=0):
    recs = _recs(ttfts)
    summary = summarize(recs)
    summary.update(
        steady_request_throughput_rps=steady, scheduled_rate_rps=offered, dropped=dropped
    )
    return RunOutcome(records=recs, summary=summary, extra={"offered_rate_rps": offered})


def test_backlog_detection():
    assert not backlog_grows(_recs([0.05] * 30))
    assert backlog_grows(_recs([0.05] * 10 + [0.2] * 10 + [0.5] * 10))


def test_saturation_is_the_highest_steady_throughput_and_sustained_rate_is_judged():
    steps = [
        _step(10.0, 9.9, [0.05] * 30),
        _step(20.0, 19.5, [0.05] * 30),
        _step(30.0, 24.0, [0.05] * 10 + [0.5] * 10 + [1.0] * 10),
        _step(40.0, 25.0, [0.05] * 10 + [1.0] * 10 + [2.0] * 10),
    ]
    sat = saturation_of(steps)
    assert sat["saturation_rps"] == 25.0 and sat["saturation_step"] == 3
    assert sat["max_sustained_rate_rps"] == 20.0


def test_dropped_requests_disqualify_a_step():
    sat = saturation_of([_step(10.0, 10.0, [0.05] * 30, dropped=1)])
    assert sat["max_sustained_rate_rps"] is None


@given(
    st.lists(
        st.binary(min_size=0, max_size=40).filter(lambda b: b"\n" not in b and b"\r" not in b),
        max_size=8,
    ),
    st.data(),
)
def test_sse_parser_is_split_invariant(payloads, data):
    stream = b"".join(b"data: " + p + b"\n\n" for p in payloads)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=6)))
    parser = SSEParser()
    out = []
    prev = 0
    for c in [*cuts, len(stream)]:
        out += list(parser.feed(stream[prev:c]))
        prev = c
    assert out == [p.lstrip() for p in payloads]


@given(st.floats(0.5, 500), st.integers(1, 300), st.integers(0, 10_000))
def test_open_loop_plans_are_sorted_and_bounded(rate, n, seed):
    for arrival in ("constant", "poisson", "gamma"):
        plan = build_plan(
            Scenario(arrival=arrival, rate_rps=rate, max_requests=n, seed=seed, burstiness=0.5)
        )
        times = [p.scheduled_s for p in plan]
        assert len(plan) == n and times == sorted(times) and times[0] == 0.0
        assert [p.index for p in plan] == list(range(n))


@given(st.lists(st.floats(0, 1e4, allow_nan=False), min_size=1, max_size=200))
def test_distribution_is_ordered(values):
    d = distribution(values)
    assert d["min"] <= d["p50"] <= d["p90"] <= d["p95"] <= d["p99"] <= d["max"]
    assert d["min"] <= d["mean"] <= d["max"] or abs(d["mean"] - d["min"]) < 1e-9
