"""Arrival plans: rates, burstiness, bounds and trace time-scaling."""

from __future__ import annotations

import itertools
import random
import statistics

import pytest

from npucenter.bench.scenario import Scenario, TraceRow, build_plan
from npucenter.errors import InvalidConfigError


def _gaps(plan):
    times = [p.scheduled_s for p in plan]
    return [b - a for a, b in itertools.pairwise(times)]


def test_constant_rate_spaces_requests_evenly():
    plan = build_plan(Scenario(arrival="constant", rate_rps=50, max_requests=101))
    assert len(plan) == 101
    assert all(g == pytest.approx(0.02) for g in _gaps(plan))


def test_poisson_mean_rate_and_exponential_spread():
    plan = build_plan(Scenario(arrival="poisson", rate_rps=100, max_requests=20_000, seed=3))
    gaps = _gaps(plan)
    assert statistics.fmean(gaps) == pytest.approx(0.01, rel=0.03)
    # exponential gaps: coefficient of variation 1
    assert statistics.pstdev(gaps) / statistics.fmean(gaps) == pytest.approx(1.0, rel=0.05)


def test_gamma_burstiness_sets_coefficient_of_variation():
    sc = Scenario(arrival="gamma", rate_rps=100, burstiness=0.25, max_requests=20_000, seed=1)
    gaps = _gaps(build_plan(sc))
    assert statistics.fmean(gaps) == pytest.approx(0.01, rel=0.05)
    # gamma shape k has CV 1/sqrt(k) = 2
    assert statistics.pstdev(gaps) / statistics.fmean(gaps) == pytest.approx(2.0, rel=0.1)


def test_same_seed_same_plan_and_other_seed_differs():
    sc = Scenario(arrival="poisson", rate_rps=10, max_requests=50, length_spread_fraction=0.3)
    assert build_plan(sc) == build_plan(sc)
    assert build_plan(sc, random.Random(9)) != build_plan(sc)


def test_duration_bounds_open_loop_plan():
    plan = build_plan(Scenario(arrival="constant", rate_rps=10, duration_s=2.0))
    assert len(plan) == 20
    assert max(p.scheduled_s for p in plan) < 2.0


def test_duration_and_max_requests_whichever_first():
    plan = build_plan(Scenario(arrival="constant", rate_rps=10, duration_s=2.0, max_requests=5))
    assert len(plan) == 5


def test_length_spread_stays_within_bounds():
    sc = Scenario(
        arrival="poisson",
        rate_rps=5,
        max_requests=500,
        input_tokens=100,
        output_tokens=50,
        length_spread_fraction=0.2,
    )
    plan = build_plan(sc)
    assert all(80 <= p.input_tokens <= 120 for p in plan)
    assert all(40 <= p.output_tokens <= 60 for p in plan)
    assert len({p.input_tokens for p in plan}) > 10


def test_trace_replay_time_scale_divides_gaps_and_keeps_lengths():
    rows = tuple(
        TraceRow(arrival_s=100.0 + 2.0 * i, input_tokens=10 + i, output_tokens=5) for i in range(6)
    )
    plan = build_plan(Scenario(arrival="trace", trace_rows=rows, time_scale=4.0))
    assert [p.scheduled_s for p in plan] == pytest.approx([0.0, 0.5, 1.0, 1.5, 2.0, 2.5])
    assert [p.input_tokens for p in plan] == [10, 11, 12, 13, 14, 15]


def test_trace_replay_respects_duration_and_clip():
    rows = tuple(
        TraceRow(arrival_s=float(i), input_tokens=5000, output_tokens=5) for i in range(10)
    )
    sc = Scenario(arrival="trace", trace_rows=rows, duration_s=3.0, max_input_tokens=1000)
    plan = build_plan(sc)
    assert len(plan) == 3
    assert all(p.input_tokens == 1000 for p in plan)


def test_closed_loop_plan_has_no_schedule():
    plan = build_plan(Scenario(arrival="concurrency", concurrency=4, max_requests=10))
    assert len(plan) == 10
    assert all(p.scheduled_s == 0 for p in plan)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"arrival": "sometimes", "max_requests": 1}, "arrival"),
        ({"arrival": "poisson", "rate_rps": 0, "max_requests": 1}, "rate_rps"),
        ({"arrival": "poisson", "rate_rps": float("inf"), "max_requests": 1}, "rate_rps"),
        ({"arrival": "poisson", "rate_rps": 1}, "max_requests"),
        ({"arrival": "concurrency", "max_requests": 1}, "concurrency"),
        ({"arrival": "trace"}, "trace_rows"),
        ({"arrival": "gamma", "rate_rps": 1, "burstiness": 0, "max_requests": 1}, "burstiness"),
        ({"arrival": "constant", "rate_rps": 1, "max_requests": 1, "input_tokens": 0}, None),
    ],
)
def test_invalid_scenarios_raise_typed_error(kwargs, field):
    with pytest.raises(InvalidConfigError) as info:
        Scenario(**kwargs)
    if field:
        assert info.value.field == field
