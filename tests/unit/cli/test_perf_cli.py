"""The perf and catalog commands: JSON contracts and exit codes."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from npucenter.cli.main import app

runner = CliRunner()


def test_predict_json_has_the_documented_keys() -> None:
    result = runner.invoke(
        app,
        [
            "perf",
            "predict",
            "--model",
            "llama-3.1-8b",
            "--device",
            "rngd",
            "--tp",
            "1",
            "--input",
            "1024",
            "--output",
            "256",
            "--batch",
            "32",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    for key in ("ttft_s", "tpot_s", "output_tokens_per_s", "tokens_per_j", "memory_gb", "power_w"):
        assert doc[key] > 0
    assert doc["batch"] == 32


def test_predict_batch_max_fills_kv_up_to_the_engine_cap() -> None:
    result = runner.invoke(
        app,
        [
            "perf",
            "predict",
            "-m",
            "llama-3.1-70b",
            "-d",
            "h100",
            "--tp",
            "2",
            "--input",
            "4096",
            "--output",
            "1024",
            "--batch",
            "max",
            "--max-num-seqs",
            "100000",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["batch"] == doc["max_batch"] > 1


def test_errors_exit_with_their_code_and_one_line() -> None:
    cases = [
        (["perf", "predict", "-m", "llama-3.1-70b", "-d", "h100", "--tp", "1"], 6),
        (["perf", "predict", "-m", "llama-3.1-8b", "-d", "atom"], 2),
        (["perf", "predict", "-m", "nope", "-d", "h100"], 3),
        (["perf", "predict", "-m", "llama-3.1-8b", "-d", "a100", "--precision", "fp8"], 8),
        (["perf", "predict", "-m", "llama-3.1-8b", "-d", "h100", "--batch", "lots"], 2),
    ]
    for args, code in cases:
        result = runner.invoke(app, args)
        assert result.exit_code == code, (args, result.output)
        assert "error[" in result.output


def test_compare_json_sorts_and_explains_missing_devices() -> None:
    result = runner.invoke(
        app, ["perf", "compare", "-m", "llama-3.1-8b", "--sort", "tokens_per_j", "--json"]
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    ranked = [d for d in doc["devices"] if d["tokens_per_j"] is not None]
    assert [d["tokens_per_j"] for d in ranked] == sorted(
        (d["tokens_per_j"] for d in ranked), reverse=True
    )
    atom = next(d for d in doc["devices"] if d["device_id"] == "rebellions_atom")
    assert atom["reason"]


def test_calibrate_json_contract() -> None:
    result = runner.invoke(app, ["perf", "calibrate", "--json", "--no-loo"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["rows"] >= 25 and len(doc["per_row"]) == doc["rows_total"]
    assert doc["median_abs_pct_error"] <= 15


def test_catalog_listings() -> None:
    devices = json.loads(runner.invoke(app, ["catalog", "devices", "--json"]).stdout)
    assert any(d["device_id"] == "furiosa_rngd" and d["source_url"] for d in devices)
    models = json.loads(runner.invoke(app, ["catalog", "models", "--json"]).stdout)
    assert any(m["model_id"] == "exaone-3.5-32b" for m in models)


def test_curve_json_points_grow_in_batch() -> None:
    result = runner.invoke(
        app,
        [
            "perf",
            "curve",
            "-m",
            "llama-3.1-8b",
            "-d",
            "rngd",
            "--input",
            "512",
            "--output",
            "128",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    batches = [p["batch"] for p in doc["points"]]
    assert batches[0] == 1 and len(batches) >= 5 and batches == sorted(batches)
