"""Every metric is scored against the same metric; validation files are scored without refitting."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from npucenter.catalog.catalog import (
    MEASUREMENT_COLUMNS,
    Measurement,
    default_catalog,
    parse_measurements,
)
from npucenter.catalog.precision import Precision
from npucenter.cli.main import app
from npucenter.errors import InvalidConfigError
from npucenter.perf import Efficiency, PerfModel, validate
from npucenter.perf.calibration import engine_precision, predict_measurement

_ROW = Measurement(
    device_id="nvidia_h100_sxm",
    num_devices=1,
    model_name="Llama-3.1-8B-Instruct",
    precision="FP8",
    engine="test",
    scenario="serving",
    input_tokens=1024,
    output_tokens=256,
    batch=16,
    metric="tpot_mean_ms",
    value=20.0,
    unit="ms",
    source_url="",
    notes="",
)


def _pm(eff: Efficiency) -> PerfModel:
    cat = default_catalog()
    return PerfModel(cat.model(_ROW.model_name), cat.device(_ROW.device_id), Precision.FP8, 1, eff)


@pytest.mark.parametrize(
    ("metric", "unit", "expected"),
    [
        ("tpot_mean_ms", "ms", lambda p: p.tpot_s * 1e3),
        ("tpot_p99_ms", "ms", lambda p: p.tpot_s * 1e3),
        ("ttft_mean_ms", "ms", lambda p: p.ttft_s * 1e3),
        ("output_tokens_per_s", "tokens/s", lambda p: p.output_tokens_per_s),
    ],
)
def test_each_metric_is_predicted_as_itself(metric: str, unit: str, expected: object) -> None:
    eff = Efficiency()
    row = dataclasses.replace(_ROW, metric=metric, unit=unit)
    value, _ = predict_measurement(default_catalog(), row, eff)
    pred = _pm(eff).predict(1024, 256, 16)
    assert callable(expected)
    assert value == pytest.approx(expected(pred))


def test_a_tpot_row_is_not_scored_as_throughput() -> None:
    eff = Efficiency()
    tpot, _ = predict_measurement(default_catalog(), _ROW, eff)
    rate, _ = predict_measurement(
        default_catalog(),
        dataclasses.replace(_ROW, metric="output_tokens_per_s", unit="tokens/s"),
        eff,
    )
    assert tpot < 1000 < rate


def test_a_unit_that_does_not_match_its_metric_is_refused_with_a_reason() -> None:
    report = validate([dataclasses.replace(_ROW, unit="s")])
    (row,) = report.rows
    assert row.predicted is None
    assert "unit" in row.reason


def test_an_unknown_metric_is_refused_with_a_reason() -> None:
    (row,) = validate([dataclasses.replace(_ROW, metric="joules", unit="J")]).rows
    assert row.predicted is None and "joules" in row.reason


def test_a_blank_precision_is_predicted_at_the_engines_precision_and_says_so() -> None:
    cat = default_catalog()
    (row,) = validate([dataclasses.replace(_ROW, precision="")]).rows
    assert row.predicted is not None
    assert engine_precision(cat, _ROW.device_id).value in row.note
    (stated,) = validate([_ROW]).rows
    assert stated.note == ""


def test_validation_does_not_refit_and_reports_per_metric() -> None:
    rows = [_ROW, dataclasses.replace(_ROW, metric="output_tokens_per_s", unit="tokens/s")]
    report = validate(rows)
    doc = report.to_dict()
    assert set(doc["per_metric"]) == {"tpot_mean_ms", "output_tokens_per_s"}  # type: ignore[arg-type]
    assert all(r.loo_predicted is None for r in report.rows)


def test_parse_measurements_names_a_missing_column() -> None:
    header = ",".join(c for c in MEASUREMENT_COLUMNS if c != "unit")
    with pytest.raises(InvalidConfigError) as err:
        parse_measurements(header + "\n")
    assert err.value.value == "unit"


def test_cli_validate_json_scores_a_file(tmp_path: Path) -> None:
    values = {
        **{c: "" for c in MEASUREMENT_COLUMNS},
        "device_id": "nvidia_h100_sxm",
        "num_devices": "1",
        "model": "Llama-3.1-8B-Instruct",
        "scenario": "serving",
        "input_tokens": "1024",
        "output_tokens": "256",
        "batch_or_concurrency": "16",
        "metric": "tpot_mean_ms",
        "value": "20",
        "unit": "ms",
    }
    bad = {**values, "device_id": "no_such_card"}
    lines = [",".join(MEASUREMENT_COLUMNS)] + [
        ",".join(v[c] for c in MEASUREMENT_COLUMNS) for v in (values, bad)
    ]
    path = tmp_path / "m.csv"
    path.write_text("\n".join(lines) + "\n")
    result = CliRunner().invoke(app, ["perf", "validate", "--measurements", str(path), "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    ok, missing = doc["per_row"]
    assert ok["pct_error"] is not None and "precision not stated" in ok["note"]
    assert missing["pct_error"] is None and missing["reason"]


def test_shipped_scenario_rows_are_reported_with_a_reason_not_fitted() -> None:
    from npucenter.perf import calibrate

    report = calibrate(leave_one_out=False)
    scenario_rows = [r for r in report.rows if r.scenario.startswith("mlperf-")]
    assert scenario_rows, "the MLPerf v4.0 rows ship in measurements.csv"
    assert all(r.predicted is None and "lengths" in r.reason for r in scenario_rows)
    metrics = {r.metric for r in scenario_rows}
    assert {"ttft_p99_ms", "tpot_mean_ms", "output_tokens_per_s"} <= metrics


def test_with_the_twin_each_unscored_scenario_row_names_its_missing_statistic() -> None:
    from npucenter.perf import calibrate
    from npucenter.plan.fidelity import predict_scenario_row

    report = calibrate(leave_one_out=False, scenario_predictor=predict_scenario_row)
    scenario_rows = [r for r in report.rows if r.scenario.startswith("mlperf-")]
    assert scenario_rows and all(r.predicted is None for r in scenario_rows)
    assert all("mean prompt length of open-orca" in r.reason for r in scenario_rows)
    per_metric = report.to_dict()["per_metric"]
    assert isinstance(per_metric, dict)
    tpot = per_metric["tpot_mean_ms"]  # listed although no row of it could be scored
    assert tpot["rows"] == 0 and tpot["rows_total"] == 2 and tpot["median_abs_pct_error"] is None


def test_a_published_trtllm_setup_the_reserve_refuses_is_predicted_with_the_engines_memory() -> (
    None
):
    from npucenter.errors import ModelDoesNotFitError

    cat = default_catalog()
    row = dataclasses.replace(
        _ROW,
        model_name="Llama-3.1-70B",
        engine="TensorRT-LLM 0.15.0",
        metric="output_tokens_per_s",
        unit="tokens/s",
        batch=4,
    )
    with pytest.raises(ModelDoesNotFitError):  # 90 % of an 80 GB card cannot hold 70B FP8 + KV
        PerfModel(cat.model("llama-3.1-70b"), cat.device(row.device_id), Precision.FP8, 1)
    value, setting = predict_measurement(cat, row, Efficiency())
    assert value > 0 and "free_gpu_memory_fraction" in setting
    vllm = dataclasses.replace(row, engine="vLLM 0.6")
    (refused,) = validate([vllm]).rows
    assert refused.predicted is None and "does not fit" in refused.reason


def test_cli_calibrate_names_the_metrics_it_could_not_score() -> None:
    result = CliRunner().invoke(app, ["perf", "calibrate", "--no-loo"])
    assert result.exit_code == 0, result.output
    assert "tpot_mean_ms: 0 of 2 rows scored" in result.output
    assert "nan" not in result.output
