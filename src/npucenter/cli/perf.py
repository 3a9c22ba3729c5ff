"""`npucenter perf predict|compare|calibrate`: the performance model from the command line."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from npucenter.catalog.catalog import parse_measurements
from npucenter.cli._common import console, handle_errors, print_json
from npucenter.files.catalog import load_catalog
from npucenter.perf import CalibrationReport, build_perf_model, calibrate, validate
from npucenter.perf.compare import (
    DEFAULT_MAX_NUM_SEQS,
    ComparisonRow,
    compare_devices,
    resolve_batch,
    throughput_latency_curve,
)

app = typer.Typer(help="Predict, compare and calibrate LLM serving performance per device.")

# Options shared by the commands (one definition each).
ModelOpt = typer.Option(..., "--model", "-m", help="Model id, e.g. llama-3.1-8b.")
DeviceOpt = typer.Option(..., "--device", "-d", help="Device id or alias, e.g. rngd, h100.")
TpOpt = typer.Option(1, "--tp", help="Tensor-parallel degree (cards per replica).")
InputOpt = typer.Option(1024, "--input", help="Prompt tokens per request.")
OutputOpt = typer.Option(256, "--output", help="Output tokens per request.")
PrecisionOpt = typer.Option(None, "--precision", help="bf16|fp16|fp8|int8|int4.")
MaxSeqsOpt = typer.Option(
    DEFAULT_MAX_NUM_SEQS, "--max-num-seqs", help="Engine batch cap (vLLM's --max-num-seqs)."
)
CatalogOpt = typer.Option(None, "--catalog", help="User catalog file.")
JsonOpt = typer.Option(False, "--json", help="Print one JSON document.")

_SORT_KEYS = {
    "tokens_per_s": lambda r: -(r.prediction.output_tokens_per_s if r.prediction else -1),
    "tokens_per_s_per_card": lambda r: -(r.tokens_per_s_per_card or -1),
    "tokens_per_j": lambda r: -(r.prediction.tokens_per_j if r.prediction else -1),
    "ttft": lambda r: r.prediction.ttft_s if r.prediction else float("inf"),
    "tpot": lambda r: r.prediction.tpot_s if r.prediction else float("inf"),
    "device": lambda r: r.device_id,
}


@app.command("predict")
@handle_errors
def predict(
    model: str = ModelOpt,
    device: str = DeviceOpt,
    tp: int = TpOpt,
    input_tokens: int = InputOpt,
    output_tokens: int = OutputOpt,
    batch: str = typer.Option("1", "--batch", help="Concurrent requests, or 'max' (fits KV)."),
    precision: str | None = PrecisionOpt,
    max_num_seqs: int = MaxSeqsOpt,
    catalog: list[Path] | None = CatalogOpt,
    json_out: bool = JsonOpt,
) -> None:
    """Predict TTFT, TPOT, throughput, energy and memory for one configuration."""
    cat = load_catalog(catalog or [])
    pm = build_perf_model(cat, model=model, device=device, precision=precision, tp=tp)
    b = resolve_batch(
        pm, input_tokens, output_tokens, batch if batch == "max" else _int(batch), max_num_seqs
    )
    pred = pm.predict(input_tokens, output_tokens, b)
    doc = {
        "model": pm.model.model_id,
        "device": pm.device.device_id,
        "precision": pm.precision.value,
        "tp": pm.tp,
        **asdict(pred),
        "assumptions": list(pred.assumptions),
        "weight_memory_gb": pm.weight_memory_gb,
        "kv_bytes_per_token": pm.kv_bytes_per_token,
        "max_batch": pm.max_batch(input_tokens + output_tokens),
    }
    if json_out:
        print_json(doc)
        return
    table = Table(
        title=f"{pm.model.model_id} on {pm.tp}× {pm.device.device_id} ({pm.precision.value}), "
        f"{input_tokens} in / {output_tokens} out, batch {b}"
    )
    table.add_column("metric")
    table.add_column("value", justify="right")
    rows = [
        ("TTFT", f"{pred.ttft_s * 1e3:.1f} ms"),
        ("TPOT", f"{pred.tpot_s * 1e3:.2f} ms"),
        ("end-to-end", f"{pred.e2e_s:.2f} s"),
        ("output tokens/s (batch)", f"{pred.output_tokens_per_s:,.0f}"),
        ("tokens per joule", f"{pred.tokens_per_j:.2f}"),
        ("power (replica)", f"{pred.power_w:.0f} W"),
        ("memory per card", f"{pred.memory_gb:.1f} GB of {pm.device.memory_gb:g} GB"),
        ("KV capacity", f"{pm.kv_capacity_tokens:,} tokens (max batch {doc['max_batch']})"),
    ]
    for name, value in rows:
        table.add_row(name, value)
    console.print(table)
    for line in pred.assumptions:
        console.print(f"[dim]assumption: {line}[/]")


@app.command("curve")
@handle_errors
def curve(
    model: str = ModelOpt,
    device: str = DeviceOpt,
    tp: int = TpOpt,
    input_tokens: int = InputOpt,
    output_tokens: int = OutputOpt,
    precision: str | None = PrecisionOpt,
    max_num_seqs: int = MaxSeqsOpt,
    catalog: list[Path] | None = CatalogOpt,
    json_out: bool = JsonOpt,
) -> None:
    """The throughput–latency curve: batch 1, 2, 4, … up to the largest batch that fits."""
    cat = load_catalog(catalog or [])
    pm = build_perf_model(cat, model=model, device=device, precision=precision, tp=tp)
    points = throughput_latency_curve(pm, input_tokens, output_tokens, max_num_seqs)
    if json_out:
        print_json(
            {
                "model": pm.model.model_id,
                "device": pm.device.device_id,
                "precision": pm.precision.value,
                "tp": pm.tp,
                "points": [
                    {k: v for k, v in asdict(p).items() if k != "assumptions"} for p in points
                ],
                "assumptions": list(pm.assumptions()),
            }
        )
        return
    table = Table(
        title=f"{pm.model.model_id} on {pm.tp}× {pm.device.device_id} ({pm.precision.value}), "
        f"{input_tokens} in / {output_tokens} out"
    )
    for col in ("batch", "TTFT ms", "TPOT ms", "tok/s", "tok/J", "W", "GB/card"):
        table.add_column(col, justify="right")
    for p in points:
        table.add_row(
            str(p.batch),
            f"{p.ttft_s * 1e3:.1f}",
            f"{p.tpot_s * 1e3:.2f}",
            f"{p.output_tokens_per_s:,.0f}",
            f"{p.tokens_per_j:.2f}",
            f"{p.power_w:.0f}",
            f"{p.memory_gb:.1f}",
        )
    console.print(table)


@app.command("compare")
@handle_errors
def compare(
    model: str = typer.Option("llama-3.1-8b", "--model", "-m", help="Model id."),
    input_tokens: int = InputOpt,
    output_tokens: int = OutputOpt,
    tpot_limit_ms: float = typer.Option(100.0, "--tpot-limit-ms", help="TPOT limit per device."),
    precision: str | None = typer.Option(None, "--precision", help="Force one precision."),
    sort: str = typer.Option(
        "tokens_per_s_per_card", "--sort", help=f"One of: {', '.join(_SORT_KEYS)}."
    ),
    max_num_seqs: int = MaxSeqsOpt,
    catalog: list[Path] | None = CatalogOpt,
    json_out: bool = JsonOpt,
) -> None:
    """Every device side by side at its best batch under a TPOT limit."""
    if sort not in _SORT_KEYS:
        from npucenter.errors import InvalidConfigError

        raise InvalidConfigError("--sort", sort, f"choose one of {', '.join(_SORT_KEYS)}")
    cat = load_catalog(catalog or [])
    rows = compare_devices(
        cat,
        model=model,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        tpot_limit_s=tpot_limit_ms / 1e3,
        precision=precision,
        max_num_seqs=max_num_seqs,
    )
    rows.sort(key=_SORT_KEYS[sort])
    if json_out:
        print_json(
            {
                "model": cat.model(model).model_id,
                "input_tokens": input_tokens,
                "output_tokens": output_tokens,
                "tpot_limit_s": tpot_limit_ms / 1e3,
                "devices": [_row_doc(r) for r in rows],
            }
        )
        return
    _print_comparison(rows, cat.model(model).model_id, input_tokens, output_tokens, tpot_limit_ms)


@app.command("calibrate")
@handle_errors
def calibrate_cmd(
    json_out: bool = JsonOpt,
    loo: bool = typer.Option(True, "--loo/--no-loo", help="Also compute leave-one-out errors."),
) -> None:
    """Fit efficiency factors to published measurements; show predicted vs published per row."""
    from npucenter.plan.fidelity import predict_scenario_row

    report = calibrate(leave_one_out=loo, scenario_predictor=predict_scenario_row)
    if json_out:
        print_json(report.to_dict())
        return
    _print_report(report, "Calibration: predicted vs published")


@app.command("validate")
@handle_errors
def validate_cmd(
    measurements: Path = typer.Option(
        ..., "--measurements", help="CSV in measurements.csv's format (independent rows)."
    ),
    catalog: list[Path] | None = CatalogOpt,
    json_out: bool = JsonOpt,
) -> None:
    """Score the fitted model against a measurements file without refitting."""
    from npucenter.errors import InvalidConfigError

    try:
        text = measurements.read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidConfigError(
            "--measurements", str(measurements), exc.strerror or "unreadable"
        ) from exc
    rows = parse_measurements(text, name=str(measurements))
    from npucenter.plan.fidelity import predict_scenario_row

    report = validate(rows, load_catalog(catalog or []), scenario_predictor=predict_scenario_row)
    if json_out:
        print_json(report.to_dict())
        return
    _print_report(report, f"Validation on {measurements.name}: predicted vs published")


def _print_report(report: CalibrationReport, title: str) -> None:
    table = Table(title=title)
    for col in (
        "#",
        "device",
        "model",
        "scenario",
        "metric",
        "published",
        "predicted",
        "err %",
        "LOO err %",
        "setting",
    ):
        table.add_column(
            col,
            justify="right"
            if col in ("#", "published", "predicted", "err %", "LOO err %")
            else "left",
        )
    for r in report.rows:
        if r.predicted is None:
            table.add_row(
                str(r.index),
                r.device_id,
                r.model,
                r.scenario,
                r.metric,
                f"{r.published:g}",
                "—",
                "—",
                "—",
                r.reason,
            )
            continue
        table.add_row(
            str(r.index),
            r.device_id,
            r.model,
            r.scenario,
            r.metric,
            f"{r.published:g}",
            f"{r.predicted:.4g}",
            f"{r.pct_error:+.1f}",
            f"{r.loo_pct_error:+.1f}" if r.loo_pct_error is not None else "—",
            r.setting,
        )
    console.print(table)
    s = report.summary()
    console.print(
        f"rows predicted: {s['rows']} of {s['rows_total']} · median |error| "
        f"{s['median_abs_pct_error']:.1f} % · max {s['max_abs_pct_error']:.1f} %" + _loo_text(s)
    )
    for metric, m in report.per_metric().items():
        if not m["rows"]:
            console.print(
                f"  {metric}: 0 of {m['rows_total']} rows scored (--json: each row's reason)"
            )
            continue
        console.print(
            f"  {metric}: {m['rows']} rows · median |error| {m['median_abs_pct_error']:.1f} %"
            + _loo_text(m)
        )
    for r in report.rows:
        if r.note:
            console.print(f"[dim]row {r.index}: {escape(r.note)}[/]", soft_wrap=True)


def _loo_text(summary: dict[str, float | int]) -> str:
    loo = summary["loo_median_abs_pct_error"]
    return "" if loo != loo else f" · leave-one-out median {loo:.1f} %"  # NaN: not computed


def _int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        from npucenter.errors import InvalidConfigError

        raise InvalidConfigError("--batch", text, "use a positive integer or 'max'")
    return value


def _row_doc(r: ComparisonRow) -> dict[str, object]:
    p = r.prediction
    return {
        "device_id": r.device_id,
        "kind": r.kind,
        "tp": r.tp,
        "precision": r.precision,
        "batch": p.batch if p else None,
        "ttft_s": p.ttft_s if p else None,
        "tpot_s": p.tpot_s if p else None,
        "output_tokens_per_s": p.output_tokens_per_s if p else None,
        "tokens_per_s_per_card": r.tokens_per_s_per_card,
        "tokens_per_j": p.tokens_per_j if p else None,
        "memory_gb": p.memory_gb if p else None,
        "power_w": p.power_w if p else None,
        "reason": r.reason,
    }


def _print_comparison(
    rows: list[ComparisonRow], model: str, inp: int, out: int, tpot_limit_ms: float
) -> None:
    table = Table(
        title=f"{model}: {inp} in / {out} out, best batch with TPOT ≤ {tpot_limit_ms:g} ms"
    )
    for col in (
        "device",
        "kind",
        "TP",
        "prec",
        "batch",
        "TTFT ms",
        "TPOT ms",
        "tok/s",
        "tok/s/card",
        "tok/J",
        "W",
    ):
        table.add_column(col, justify="left" if col in ("device", "kind", "prec") else "right")
    missing = [r for r in rows if r.prediction is None]
    for r in rows:
        p = r.prediction
        if p is None:
            continue
        table.add_row(
            r.device_id.split("_", 1)[-1],
            r.kind,
            str(r.tp),
            r.precision or "",
            str(p.batch),
            f"{p.ttft_s * 1e3:.0f}",
            f"{p.tpot_s * 1e3:.1f}",
            f"{p.output_tokens_per_s:,.0f}",
            f"{r.tokens_per_s_per_card:,.0f}",
            f"{p.tokens_per_j:.2f}",
            f"{p.power_w:.0f}",
        )
    console.print(table)
    for r in missing:
        console.print(f"[yellow]{r.device_id}[/]: {escape(r.reason)}", soft_wrap=True)
