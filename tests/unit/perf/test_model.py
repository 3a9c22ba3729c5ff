"""Performance model: memory accounting, fit errors, step time and predictions."""

from __future__ import annotations

import numpy as np
import pytest

from npucenter.catalog import Precision, default_catalog
from npucenter.errors import ModelDoesNotFitError, NotSupportedError
from npucenter.perf import Efficiency, PerfModel, build_perf_model, calibrate
from npucenter.perf.compare import best_batch_under_tpot, compare_devices

EFF = Efficiency(compute_fraction=0.5, memory_fraction=0.7, step_overhead_s=0.002)


def _pm(model: str = "llama-3.1-8b", device: str = "h100", prec: str = "bf16", tp: int = 1):
    cat = default_catalog()
    return PerfModel(cat.model(model), cat.device(device), Precision.parse(prec), tp, EFF)


def test_kv_bytes_per_token_follows_gqa_shape() -> None:
    # 2 (K,V) × 32 layers × 8 KV heads × 128 head_dim × 2 bytes
    assert _pm().kv_bytes_per_token == 2 * 32 * 8 * 128 * 2
    assert _pm(prec="fp8").kv_bytes_per_token == 2 * 32 * 8 * 128 * 1


def test_weights_and_kv_capacity_fill_usable_memory() -> None:
    pm = _pm()
    used = pm.weight_memory_gb + pm.kv_capacity_tokens * pm.kv_bytes_per_token / 1e9
    assert used == pytest.approx(80 * 0.9, rel=1e-3)
    assert pm.weight_memory_gb == pytest.approx(16.06, rel=0.01)


def test_model_that_does_not_fit_names_the_smallest_tp() -> None:
    with pytest.raises(ModelDoesNotFitError) as err:
        build_perf_model(model="llama-3.1-70b", device="h100", precision="fp8", tp=1)
    assert err.value.min_tp == 2
    assert err.value.required_gb > err.value.available_gb
    pm = build_perf_model(model="llama-3.1-70b", device="h100", precision="fp8", tp=2)
    assert pm.kv_capacity_tokens > 0


def test_unsupported_precision_is_refused() -> None:
    with pytest.raises(NotSupportedError):
        build_perf_model(model="llama-3.1-8b", device="a100", precision="fp8")


def test_vectorised_and_scalar_step_times_agree() -> None:
    pm = _pm()
    rng = np.random.default_rng(0)
    p = rng.integers(0, 4096, 200).astype(float)
    pairs = p * rng.integers(0, 2000, 200) + p * (p + 1) / 2
    d = rng.integers(0, 256, 200).astype(float)
    c = d * rng.integers(1, 4000, 200)
    vec = pm.step_time_s(p, pairs, d, c)
    scalar = [
        pm.step_time_s(float(a), float(b), float(x), float(y)) for a, b, x, y in zip(p, pairs, d, c)
    ]
    np.testing.assert_allclose(vec, scalar, rtol=1e-12)


def test_decode_is_memory_bound_and_prefill_compute_bound_on_h100() -> None:
    pm = _pm()
    weights_read_s = pm.weight_memory_gb * 1e9 / (3350e9 * 0.7)
    # batch-1 decode ≈ reading the weights once + overhead
    assert pm.tpot_s(1, 512) == pytest.approx(weights_read_s + 0.002, rel=0.05)
    # a long prompt costs ~2·params FLOPs per token at the compute roofline
    flops = 2 * 8.03e9 * 8192
    assert pm.ttft_s(8192) > flops / (989.5e12 * 0.5)


def test_tensor_parallel_adds_communication_but_cuts_per_card_time() -> None:
    one = _pm("llama-3.1-8b", "h100", "bf16", 1)
    two = _pm("llama-3.1-8b", "h100", "bf16", 2)
    assert two.tpot_s(64, 1024) < one.tpot_s(64, 1024)
    assert two.tpot_s(64, 1024) > one.tpot_s(64, 1024) / 2


def test_prediction_units_are_consistent() -> None:
    pred = _pm().predict(1024, 256, 32)
    assert pred.e2e_s == pytest.approx(pred.ttft_s + 255 * pred.tpot_s)
    assert pred.tokens_per_j * pred.energy_j_per_output_token == pytest.approx(1.0)
    assert 0.2 * 700 <= pred.power_w <= 700
    assert pred.output_tokens_per_s > 32 / pred.e2e_s * 256 * 0.5


def test_best_batch_under_tpot_respects_the_limit_and_is_maximal() -> None:
    pm = _pm()
    pred = best_batch_under_tpot(pm, 1024, 256, 0.030, max_num_seqs=4096)
    assert pred is not None and pred.tpot_s <= 0.030
    at_kv_limit = pred.batch == pm.max_batch(1024 + 256)
    assert at_kv_limit or pm.tpot_s(pred.batch + 1, 1024 + 128) > 0.030
    tight = best_batch_under_tpot(pm, 1024, 256, 0.010, max_num_seqs=4096)
    assert tight is not None and tight.batch < pred.batch
    assert pm.tpot_s(tight.batch + 1, 1024 + 128) > 0.010


def test_compare_lists_every_device_with_a_result_or_a_reason() -> None:
    rows = compare_devices(
        default_catalog(),
        model="llama-3.1-8b",
        input_tokens=512,
        output_tokens=128,
        tpot_limit_s=0.1,
    )
    assert len(rows) == len(default_catalog().devices)
    by_id = {r.device_id: r for r in rows}
    assert by_id["furiosa_rngd"].prediction is not None
    assert (
        by_id["rebellions_atom"].prediction is None and "tdp_w" in by_id["rebellions_atom"].reason
    )


def test_calibration_meets_its_error_targets() -> None:
    report = calibrate()
    summary = report.summary()
    assert summary["rows"] >= 25
    assert summary["median_abs_pct_error"] <= 15.0
    assert summary["loo_median_abs_pct_error"] <= 25.0
    unpredictable = [r for r in report.rows if r.predicted is None]
    assert all(r.reason for r in unpredictable)
    # the leave-one-out fit really leaves rows out: it differs from the in-sample prediction
    assert any(
        r.loo_predicted is not None and abs(r.loo_predicted - r.predicted) > 1e-6 * r.published
        for r in report.rows
        if r.predicted is not None
    )


def test_throughput_latency_curve_trades_latency_for_throughput() -> None:
    from npucenter.perf.compare import throughput_latency_curve

    pm = _pm()
    points = throughput_latency_curve(pm, 1024, 256, max_num_seqs=512)
    batches = [p.batch for p in points]
    assert batches[0] == 1 and batches == sorted(batches)
    assert batches[-1] == min(pm.max_batch(1280), 512)
    tpots = [p.tpot_s for p in points]
    rates = [p.output_tokens_per_s for p in points]
    assert tpots == sorted(tpots)
    assert rates == sorted(rates)
