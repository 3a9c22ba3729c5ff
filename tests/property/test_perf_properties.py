"""Hypothesis invariants of the performance model."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given
from hypothesis import strategies as st

from npucenter.catalog import Precision, default_catalog
from npucenter.errors import InvalidConfigError, ModelDoesNotFitError
from npucenter.perf import Efficiency, PerfModel

CAT = default_catalog()
MODELS = [m.model_id for m in CAT.models]
DEVICES = [
    "furiosa_rngd",
    "nvidia_h100_sxm",
    "nvidia_h200_sxm",
    "nvidia_l40s",
    "nvidia_a100_80gb_sxm",
]
EFF = Efficiency()

counts = st.integers(min_value=0, max_value=2048)


def _model(model_id: str, device_id: str, tp: int, device=None) -> PerfModel | None:
    dev = device or CAT.device(device_id)
    prec = Precision.FP8 if Precision.FP8 in dev.precisions else Precision.BF16
    try:
        return PerfModel(CAT.model(model_id), dev, prec, tp, EFF)
    except (ModelDoesNotFitError, InvalidConfigError):  # does not fit, or TP ∤ heads
        return None


@given(
    st.sampled_from(MODELS),
    st.sampled_from(DEVICES),
    st.sampled_from([1, 2, 4, 8]),
    counts,
    counts,
    st.integers(1, 64),
    st.integers(1, 8000),
)
def test_more_batch_never_lowers_step_time(
    model_id, device_id, tp, prefill, decode, extra, ctx
) -> None:
    pm = _model(model_id, device_id, tp)
    if pm is None:
        return
    pairs = PerfModel.attn_pairs(float(prefill), 0.0)
    base = pm.step_time_s(float(prefill), pairs, float(decode), float(decode * ctx))
    more_decode = pm.step_time_s(
        float(prefill), pairs, float(decode + extra), float((decode + extra) * ctx)
    )
    p2 = float(prefill + extra)
    more_prefill = pm.step_time_s(
        p2, PerfModel.attn_pairs(p2, 0.0), float(decode), float(decode * ctx)
    )
    assert more_decode >= base
    assert more_prefill >= base
    assert base > 0


@given(
    st.sampled_from(MODELS),
    st.sampled_from(DEVICES),
    st.floats(min_value=1.01, max_value=10.0),
    st.integers(1, 512),
    st.integers(1, 8000),
)
def test_more_memory_bandwidth_never_slows_decode(model_id, device_id, factor, batch, ctx) -> None:
    dev = CAT.device(device_id)
    faster = replace(dev, memory_bandwidth_gbps=dev.memory_bandwidth_gbps * factor)
    slow = _model(model_id, device_id, 1)
    fast = _model(model_id, device_id, 1, faster)
    if slow is None or fast is None:
        return
    # equal when compute-bound; allow float rounding only
    assert fast.tpot_s(batch, ctx) <= slow.tpot_s(batch, ctx) * (1 + 1e-12)


@given(st.sampled_from(MODELS), st.sampled_from(DEVICES), st.sampled_from([1, 2, 4, 8]))
def test_kv_capacity_is_never_negative_and_max_batch_consistent(model_id, device_id, tp) -> None:
    pm = _model(model_id, device_id, tp)
    if pm is None:
        return
    assert pm.kv_capacity_tokens >= 0
    for ctx in (1, 128, 4096):
        b = pm.max_batch(ctx)
        assert b >= 0
        assert b * ctx <= pm.kv_capacity_tokens < (b + 1) * ctx


@given(
    st.sampled_from(["llama-3.1-8b", "qwen2.5-7b", "exaone-3.5-7.8b"]),
    st.sampled_from(DEVICES),
    st.integers(1, 4096),
    st.integers(1, 1024),
    st.integers(1, 64),
)
def test_prediction_units_are_consistent(model_id, device_id, inp, out, batch) -> None:
    pm = _model(model_id, device_id, 1)
    if pm is None or pm.max_batch(inp + out) < batch:
        return
    pred = pm.predict(inp, out, batch)
    assert pred.e2e_s >= pred.ttft_s > 0
    assert abs(pred.tokens_per_j * pred.energy_j_per_output_token - 1.0) < 1e-9
    assert pm.idle_power_w <= pred.power_w <= pm.max_power_w + 1e-9
    assert pred.memory_gb <= CAT.device(device_id).memory_gb
