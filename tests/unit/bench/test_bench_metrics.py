"""Summary metrics: distributions, goodput with failures as misses, token counts from usage."""

from __future__ import annotations

import numpy as np
import pytest

from npucenter.bench.metrics import SLO, distribution, peak_concurrency, summarize, vllm_fields
from npucenter.bench.record import RequestRecord
from npucenter.errors import InvalidConfigError


def _ok(i, start, ttft, e2e, out=10, prompt=100, sched=None):
    return RequestRecord(
        index=i,
        scheduled_s=start if sched is None else sched,
        start_s=start,
        lag_s=start - (start if sched is None else sched),
        ttft_s=ttft,
        e2e_s=e2e,
        itl_s=tuple([(e2e - ttft) / max(1, out - 1)] * (out - 1)),
        target_input_tokens=100,
        target_output_tokens=10,
        prompt_tokens=prompt,
        output_tokens=out,
        usage_reported=True,
        ok=True,
    )


def _failed(i, start, kind="http_500"):
    return RequestRecord(index=i, scheduled_s=start, start_s=start, e2e_s=0.01, error=kind)


def test_distribution_matches_numpy_percentiles():
    rng = np.random.default_rng(0)
    values = rng.exponential(size=1000)
    dist = distribution(values)
    assert dist["p50"] == pytest.approx(np.percentile(values, 50))
    assert dist["p99"] == pytest.approx(np.percentile(values, 99))
    assert dist["mean"] == pytest.approx(values.mean())
    assert dist["count"] == 1000


def test_distribution_of_nothing_is_none():
    dist = distribution([])
    assert dist["p50"] is None and dist["count"] == 0


def test_failed_requests_count_as_slo_misses():
    recs = [_ok(i, i * 0.1, 0.05, 0.5) for i in range(8)]
    recs += [_failed(8, 0.8), _failed(9, 0.9, "timeout")]
    s = summarize(recs, slo=SLO(ttft_s=1.0))
    assert s["completed"] == 8 and s["errors"] == 2
    assert s["good_requests"] == 8
    assert s["slo_attainment_fraction"] == pytest.approx(0.8)
    assert s["errors_by_kind"] == {"http_500": 1, "timeout": 1}


def test_slo_limits_filter_slow_requests():
    recs = [_ok(0, 0.0, 0.1, 1.0), _ok(1, 0.1, 0.6, 1.0), _ok(2, 0.2, 0.1, 5.0)]
    s = summarize(recs, slo=SLO(ttft_s=0.5, e2e_s=2.0))
    assert s["good_requests"] == 1
    # tpot of record 2 = (5.0 - 0.1) / 9
    s2 = summarize(recs, slo=SLO(tpot_s=0.2))
    assert s2["good_requests"] == 2


def test_token_throughput_uses_usage_not_chunks():
    rec = _ok(0, 0.0, 0.1, 1.0, out=40)
    rec.num_chunks = 10  # four tokens per chunk
    s = summarize([rec, _ok(1, 0.0, 0.1, 1.0, out=40)])
    assert s["total_output_tokens"] == 80
    assert s["output_tokens_per_s"] == pytest.approx(80 / 1.0)


def test_rate_accuracy_compares_achieved_with_scheduled():
    # scheduled every 0.1 s but sent 10 % slower
    recs = [_ok(i, i * 0.11, 0.01, 0.05, sched=i * 0.1) for i in range(11)]
    s = summarize(recs, target_rate_rps=10.0)
    assert s["scheduled_rate_rps"] == pytest.approx(10.0)
    assert s["achieved_rate_rps"] == pytest.approx(10 / 1.1)
    assert s["rate_error_fraction"] == pytest.approx(1 / 1.1 - 1)
    assert s["lag_s"]["max"] == pytest.approx(0.1)


def test_peak_concurrency_counts_overlaps():
    recs = [
        _ok(0, 0.0, 0.1, 1.0),
        _ok(1, 0.5, 0.1, 1.0),
        _ok(2, 0.9, 0.1, 0.05),
        _ok(3, 2.0, 0.1, 1),
    ]
    assert peak_concurrency(recs) == 3


def test_input_token_error_reported():
    recs = [_ok(0, 0.0, 0.1, 1.0, prompt=110), _ok(1, 0.0, 0.1, 1.0, prompt=100)]
    assert summarize(recs)["input_token_error_fraction"] == pytest.approx(0.05)


def test_vllm_field_names_in_milliseconds():
    s = summarize([_ok(i, i * 0.1, 0.2, 1.0) for i in range(5)])
    v = vllm_fields(s, {"rate_rps": 10})
    assert v["mean_ttft_ms"] == pytest.approx(200.0)
    assert v["median_e2el_ms"] == pytest.approx(1000.0)
    assert v["completed"] == 5
    assert v["request_rate"] == 10
    assert {"p99_tpot_ms", "p99_itl_ms", "request_throughput", "output_throughput"} <= set(v)


def test_slo_rejects_non_positive_limits():
    with pytest.raises(InvalidConfigError):
        SLO(ttft_s=0)


def test_record_round_trips_through_dict():
    rec = _ok(3, 1.0, 0.1, 0.9)
    back = RequestRecord.from_dict(rec.to_dict())
    assert back.index == 3 and back.tpot_s == pytest.approx(rec.tpot_s)
    assert len(back.itl_s) == len(rec.itl_s)
