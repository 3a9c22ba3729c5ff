"""Scenario rows are predicted by running the twin on the scenario."""

from __future__ import annotations

import dataclasses

import pytest

from npucenter.catalog.catalog import Measurement, default_catalog
from npucenter.errors import InvalidConfigError
from npucenter.perf import Efficiency, validate
from npucenter.plan.fidelity import predict_scenario_row

_ROW = Measurement(
    device_id="nvidia_h100_sxm",
    num_devices=2,
    model_name="Llama-3.1-8B-Instruct",
    precision="FP8",
    engine="test",
    scenario="mlperf-offline",
    input_tokens=256,
    output_tokens=64,
    batch=None,
    metric="output_tokens_per_s",
    value=1000.0,
    unit="tokens/s",
    source_url="",
    notes="",
)
_EFF = Efficiency()


def _predict(**changes: object) -> float:
    row = dataclasses.replace(_ROW, **changes)  # type: ignore[arg-type]
    return predict_scenario_row(default_catalog(), row, _EFF, num_requests=300)[0]


def test_offline_throughput_grows_with_the_cards() -> None:
    assert _predict(num_devices=4) > 1.3 * _predict(num_devices=2)


def test_server_latency_percentiles_are_ordered_and_grow_with_load() -> None:
    light = {"scenario": "mlperf-server", "target_qps": 2.0, "unit": "ms"}
    mean = _predict(metric="ttft_mean_ms", **light)
    p99 = _predict(metric="ttft_p99_ms", **light)
    assert 0 < mean <= p99
    heavy = _predict(metric="tpot_mean_ms", **{**light, "target_qps": 200.0})
    assert heavy > _predict(metric="tpot_mean_ms", **light)


def test_a_scenario_row_without_lengths_says_why() -> None:
    with pytest.raises(InvalidConfigError) as other:
        _predict(input_tokens=None)
    assert "no MLPerf data set preset for Llama-3.1-8B-Instruct" in other.value.reason
    with pytest.raises(InvalidConfigError) as orca:
        _predict(input_tokens=None, model_name="Llama-2-70B", num_devices=8)
    reason = orca.value.reason
    assert orca.value.field == "input_tokens"
    assert "mean prompt length of open-orca" in reason and "not published" in reason
    assert "294.45 output tokens per sample" in reason and "twin-fidelity.md" in reason


def test_validate_predicts_scenario_rows_only_with_the_twin() -> None:
    (without,) = validate([_ROW]).rows
    assert without.predicted is None and "twin" in without.reason
    (with_twin,) = validate([_ROW], scenario_predictor=predict_scenario_row).rows
    assert with_twin.predicted is not None and with_twin.setting.startswith("twin")
