"""The dashboard's time series: quantiles from histogram buckets, windows between samples."""

from __future__ import annotations

import math

import pytest

from npucenter.clock import FakeClock
from npucenter.gateway import Gateway, StaticKeyResolver
from npucenter.metering import UsageRecord, UsageTotals
from npucenter.web.series import (
    HistogramState,
    LiveSeries,
    Sample,
    curve_of,
    histogram_quantile,
    sample_gateway,
)

INF = math.inf


def _hist(counts: tuple[float, ...], total_s: float = 0.0) -> HistogramState:
    return HistogramState((0.1, 0.2, 0.4, INF), counts, total_s)


def test_quantile_interpolates_inside_the_bucket_like_promql() -> None:
    h = _hist((0, 10, 20, 20))  # 10 observations in (0.1, 0.2], 10 in (0.2, 0.4]
    assert histogram_quantile(0.5, h) == pytest.approx(0.2)
    assert histogram_quantile(0.25, h) == pytest.approx(0.15)
    assert histogram_quantile(0.75, h) == pytest.approx(0.3)
    assert histogram_quantile(0.5, _hist((0, 0, 0, 0))) is None


def test_quantile_in_the_inf_bucket_is_the_last_finite_bound() -> None:
    assert histogram_quantile(0.99, _hist((0, 0, 1, 10))) == 0.4


def test_minus_gives_the_observations_since_and_survives_a_reset() -> None:
    later, earlier = _hist((1, 4, 6, 6), 1.0), _hist((1, 2, 2, 2), 0.3)
    delta = later.minus(earlier)
    assert delta.counts == (0, 2, 4, 4) and delta.total_s == pytest.approx(0.7)
    assert earlier.minus(later) == earlier  # counters went back: count from zero
    assert later.minus(HistogramState()) == later  # no buckets yet


def test_window_and_curve_are_rates_between_samples() -> None:
    series = LiveSeries(period_s=1.0, keep_s=60.0)
    for t, n, tok in [(0.0, 0, 0), (1.0, 2, 20), (2.0, 2, 20), (3.0, 8, 80)]:
        series.add(Sample(wall_s=100.0 + t, num_requests=n, output_tokens=tok))
    series.add(Sample(wall_s=103.2, num_requests=99))  # too soon after the last one: dropped
    assert len(series.samples()) == 4
    window = series.window(60.0)
    assert window is not None
    assert window.requests_per_s == pytest.approx(8 / 3)
    assert window.output_tokens_per_s == pytest.approx(80 / 3)
    last = series.window(1.0)
    assert last is not None and last.num_requests == 6
    curve = series.curve(lambda w: w.requests_per_s, trailing_s=1.0)
    assert [x for x, _ in curve] == [101.0, 102.0, 103.0]
    assert [y for _, y in curve] == pytest.approx([2.0, 0.0, 6.0])
    assert LiveSeries().window(60.0) is None


def test_the_ring_forgets_old_samples() -> None:
    series = LiveSeries(period_s=1.0, keep_s=10.0)
    for t in range(100):
        series.add(Sample(wall_s=float(t)))
    samples = series.samples()
    assert len(samples) <= 12 and samples[-1].wall_s == 99.0


def test_sample_gateway_reads_usage_and_latency_histograms() -> None:
    gw = Gateway(keys=StaticKeyResolver({}), clock=FakeClock())
    row = UsageRecord(
        request_id="r", tenant="t", key_id="k", service="m", endpoint="/v1/x", output_tokens=7
    )
    gw.usage_totals[("t", "m")] = UsageTotals().plus(row)
    gw.metrics.ttft.labels("m").observe(0.02)
    gw.metrics.ttft.labels("m2").observe(0.3)
    gw.metrics.tpot.labels("m").observe(0.01)
    s = sample_gateway(gw, wall_s=5.0)
    assert (s.wall_s, s.num_requests, s.output_tokens) == (5.0, 1, 7)
    assert s.ttft.count == 2 and s.ttft.total_s == pytest.approx(0.32)
    assert s.ttft.bounds[-1] == INF and list(s.ttft.bounds) == sorted(s.ttft.bounds)
    assert s.tpot.count == 1
    q = histogram_quantile(0.5, s.ttft)
    assert q is not None and 0.01 <= q <= 0.025  # the 0.02 observation's bucket


def test_curve_thins_to_max_points_and_keeps_the_latest() -> None:
    samples = [Sample(wall_s=float(t), num_requests=t * t) for t in range(601)]
    full = curve_of(samples, lambda w: w.requests_per_s, trailing_s=5.0)
    thin = curve_of(samples, lambda w: w.requests_per_s, trailing_s=5.0, max_points=150)
    assert len(full) == 600 and 100 <= len(thin) <= 150
    assert thin[-1] == full[-1] and set(thin) <= set(full)  # same values, fewer of them
    assert full[-1][1] == pytest.approx((600**2 - 595**2) / 5)  # a 5-second trailing window
