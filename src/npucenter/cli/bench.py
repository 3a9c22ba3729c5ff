"""``npucenter bench run|suite|report``: the proving ground from the command line."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.live import Live
from rich.table import Table

from npucenter.cli._common import console, err_console, handle_errors, print_json
from npucenter.errors import InvalidConfigError

if TYPE_CHECKING:
    from npucenter.bench.client import Target
    from npucenter.bench.execute import TargetMeta

__all__ = ["app"]

app = typer.Typer(
    help="Proving ground: benchmark any OpenAI-compatible endpoint; compare chips side by side.",
    no_args_is_help=True,
)

_SCENARIOS = (
    "poisson",
    "constant",
    "gamma",
    "concurrency",
    "trace",
    "rate-sweep",
    "concurrency-sweep",
    "mlperf-offline",  # the MLPerf presets of npucenter.workload.mlperf (same names as simulate)
    "mlperf-server",
    "mlperf-interactive",
)


def _floats(text: str | None, what: str) -> list[float]:
    if not text:
        return []
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise InvalidConfigError(what, text, "must be comma-separated numbers") from None


def _target(
    endpoint: str,
    model: str,
    *,
    api_key: str | None,
    api: str,
    timeout_s: float,
    transport: str,
    device: str | None,
    catalog_model: str | None,
    tp: int | None,
    max_num_seqs: int | None,
    engine_time_scale: float | None,
    price: float | None,
    label: str | None,
) -> tuple[Target, TargetMeta]:
    """The endpoint to load and what is known about the hardware behind it (run and suite)."""
    from npucenter.bench.client import Target
    from npucenter.bench.execute import TargetMeta

    target = Target(
        base_url=endpoint,
        model=model,
        api_key=api_key,
        api=api,
        timeout_s=timeout_s,
        transport=transport,
    )
    meta = TargetMeta(
        device=device,
        catalog_model=catalog_model,
        tp=tp,
        max_num_seqs=max_num_seqs,
        time_scale=engine_time_scale,
        price_usd_per_hour=price,
        label=label,
    )
    return target, meta


@contextlib.contextmanager
def _live(progress: Any, enabled: bool) -> Iterator[None]:
    if not enabled:
        yield
        return

    def render() -> Table:
        t = Table.grid(padding=(0, 2))
        step = f"step {progress.step + 1}/{progress.num_steps}  " if progress.num_steps > 1 else ""
        elapsed = progress.elapsed_s()
        tok_s = progress.output_tokens / elapsed if elapsed > 0 else 0.0
        t.add_row(
            f"[bold]{progress.label}[/]",
            f"{step}{elapsed:6.1f} s",
            f"sent {progress.sent}/{progress.planned or '?'}",
            f"[green]ok {progress.completed}[/]",
            f"[red]failed {progress.failed}[/]",
            f"in flight {progress.in_flight}",
            f"{tok_s:8.1f} tok/s",
        )
        return t

    with Live(get_renderable=render, console=err_console, refresh_per_second=4, transient=True):
        yield


_SUBMIT_HELP = "Attach the result to a job in the center (NPUCENTER_URL, NPUCENTER_API_KEY)."
_JOB_HELP = "The job --submit attaches to (inside a job the center runs: NPUCENTER_JOB_ID)."


def _check_submit(submit: bool, job_id: int | None) -> None:
    """Refuse a --submit that could not be sent before the benchmark runs, not after."""
    from npucenter.settings import ENV_API_KEY, ENV_URL, Settings

    if not submit:
        return
    if job_id is None:
        raise InvalidConfigError(
            "--job", None, "--submit needs the job the result belongs to", hint="pass --job ID"
        )
    settings = Settings.from_env()
    if not settings.url_given or not settings.api_key:
        raise InvalidConfigError(
            ENV_URL, settings.url if settings.url_given else None,
            "--submit needs the center's URL and a key",
            hint=f"set {ENV_URL} and {ENV_API_KEY} (a key of the job's tenant)",
        )  # fmt: skip


def _submit_result(doc: dict[str, Any], job_id: int | None) -> None:
    """PUT the result to ``/api/jobs/{job_id}/result`` of the center named by the environment."""
    import json

    from npucenter.bench.result import _default
    from npucenter.cli.client import Client
    from npucenter.settings import Settings

    settings = Settings.from_env()
    # NaN/Infinity are not JSON: they go up as null
    body = json.loads(json.dumps(doc, default=_default), parse_constant=lambda _: None)
    with Client.from_settings(settings) as api:
        api.put(f"/api/jobs/{job_id}/result", body)
    err_console.print(f"result attached to job {job_id} at {settings.url}")


def _write_json(doc: dict[str, Any], path: str | None) -> None:
    if path is None:
        return
    if path == "-":
        print_json(doc)
        return
    from npucenter.bench.result import save_result

    out = save_result(doc, path)
    err_console.print(f"wrote {out}")


def _summary_table(doc: dict[str, Any], title: str) -> Table:
    s = doc["summary"]
    t = Table(title=title, show_header=True)
    t.add_column("metric")
    t.add_column("value", justify="right")

    def ms(dist: dict[str, Any], key: str) -> str:
        v = dist.get(key)
        return "-" if v is None else f"{v * 1000:.1f}"

    rows = [
        ("requests / completed / errors", f"{s['requests']} / {s['completed']} / {s['errors']}"),
        ("errors by kind", ", ".join(f"{k}={v}" for k, v in s["errors_by_kind"].items()) or "-"),
        ("duration (s)", f"{s['duration_s']:.2f}"),
        ("achieved send rate (req/s)", _fmt(s.get("achieved_rate_rps"))),
        ("rate error vs schedule", _pct(s.get("rate_error_fraction"))),
        ("scheduling lag p99 (ms)", ms(s["lag_s"], "p99")),
        ("request throughput (req/s)", _fmt(s["request_throughput_rps"])),
        ("output tokens/s", _fmt(s["output_tokens_per_s"])),
        ("goodput (req/s)", _fmt(s["goodput_rps"])),
        ("SLO attainment", _pct(s.get("slo_attainment_fraction"), signed=False)),
    ]
    for name in ("ttft_s", "tpot_s", "itl_s", "e2e_s"):
        d = s[name]
        rows.append(
            (
                f"{name[:-2].upper()} mean/p50/p90/p99 (ms)",
                f"{ms(d, 'mean')}/{ms(d, 'p50')}/{ms(d, 'p90')}/{ms(d, 'p99')}",
            )
        )
    if s.get("output_tokens_per_j"):
        rows.append(
            ("energy (J) / mean power (W)", f"{s['energy_j']:.0f} / {s['mean_power_w']:.0f}")
        )
        rows.append(("output tokens per J", f"{s['output_tokens_per_j']:.3f}"))
    sat = doc.get("saturation")
    if sat:
        rows.append(("saturation (req/s)", _fmt(sat["saturation_rps"])))
        rows.append(("max sustained rate (req/s)", _fmt(sat.get("max_sustained_rate_rps"))))
    for k, v in rows:
        t.add_row(k, v)
    return t


def _fmt(v: Any) -> str:
    return "-" if v is None else f"{v:,.2f}"


def _pct(v: Any, signed: bool = True) -> str:
    if v is None:
        return "-"
    return f"{v * 100:+.2f} %" if signed else f"{v * 100:.1f} %"


@app.command("run")
@handle_errors
def run_cmd(
    endpoint: str = typer.Option(..., "--endpoint", help="Base URL, e.g. http://127.0.0.1:8000"),
    model: str = typer.Option(..., "--model", help="Model name the endpoint serves."),
    scenario: str = typer.Option("poisson", "--scenario", help=f"One of: {', '.join(_SCENARIOS)}."),
    rate: float | None = typer.Option(None, "--rate", help="Requests per second (open loop)."),
    burstiness: float = typer.Option(1.0, "--burstiness", help="Gamma shape (<1 burstier)."),
    concurrency: int | None = typer.Option(None, "--concurrency", help="Closed-loop users."),
    max_concurrency: int | None = typer.Option(None, "--max-concurrency"),
    rates: str | None = typer.Option(None, "--rates", help="rate-sweep rates, e.g. 1,2,4,8."),
    levels: str | None = typer.Option(None, "--levels", help="concurrency-sweep levels: 1,4,16."),
    step_duration: float = typer.Option(10.0, "--step-duration", help="Seconds per sweep step."),
    input_tokens: int = typer.Option(128, "--input-tokens"),
    output_tokens: int = typer.Option(128, "--output-tokens"),
    spread: float = typer.Option(0.0, "--length-spread", help="Uniform +- fraction of lengths."),
    max_requests: int | None = typer.Option(None, "--max-requests"),
    duration: float | None = typer.Option(None, "--duration", help="Seconds (bound)."),
    trace: str | None = typer.Option(None, "--trace", help="azure-code, azure-conv or a file."),
    trace_time_scale: float = typer.Option(1.0, "--trace-speedup", help="Replay N x faster."),
    api: str = typer.Option("chat", "--api", help="chat or completions."),
    api_key: str | None = typer.Option(
        None, "--api-key", envvar="NPUCENTER_API_KEY", help="Bearer key (or NPUCENTER_API_KEY)."
    ),
    slo_ttft_ms: float | None = typer.Option(None, "--slo-ttft-ms"),
    slo_tpot_ms: float | None = typer.Option(None, "--slo-tpot-ms"),
    slo_e2e_ms: float | None = typer.Option(None, "--slo-e2e-ms"),
    power: str = typer.Option(
        "auto", "--power", help="auto | none | prometheus[=URL] | constant=WATTS."
    ),
    device: str | None = typer.Option(None, "--device", help="Catalog device behind the endpoint."),
    catalog_model: str | None = typer.Option(None, "--catalog-model"),
    tp: int | None = typer.Option(None, "--tp"),
    max_num_seqs: int | None = typer.Option(None, "--max-num-seqs"),
    engine_time_scale: float | None = typer.Option(
        None, "--engine-time-scale", help="Virtual engine's --time-scale (for the twin)."
    ),
    price: float | None = typer.Option(None, "--price-usd-per-hour"),
    label: str | None = typer.Option(None, "--label"),
    seed: int = typer.Option(0, "--seed"),
    timeout: float = typer.Option(300.0, "--timeout", help="Per-request timeout (s)."),
    transport: str = typer.Option("fast", "--transport", help="fast (lean http://) or httpx."),
    json_out: str | None = typer.Option(None, "--json", help="Write the result here (- = stdout)."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
    submit: bool = typer.Option(False, "--submit", help=_SUBMIT_HELP),
    job_id: int | None = typer.Option(None, "--job", envvar="NPUCENTER_JOB_ID", help=_JOB_HELP),
) -> None:
    """Benchmark one scenario (or a sweep) against an endpoint.

    Example: ``npucenter bench run --endpoint http://127.0.0.1:8000 --model llama-3.1-8b
    --scenario poisson --rate 10 --max-requests 500 --json out.json``
    """
    _check_submit(submit, job_id)
    from npucenter.bench.execute import benchmark_run, benchmark_sweep
    from npucenter.bench.loadgen import RunProgress
    from npucenter.bench.runner import run_async
    from npucenter.bench.scenario import Scenario
    from npucenter.bench.suite import load_trace_rows

    if scenario not in _SCENARIOS:
        raise InvalidConfigError("scenario", scenario, f"must be one of {', '.join(_SCENARIOS)}")
    target, meta = _target(
        endpoint,
        model,
        api_key=api_key,
        api=api,
        timeout_s=timeout,
        transport=transport,
        device=device,
        catalog_model=catalog_model,
        tp=tp,
        max_num_seqs=max_num_seqs,
        engine_time_scale=engine_time_scale,
        price=price,
        label=label,
    )
    arrival = {"rate-sweep": "poisson", "concurrency-sweep": "concurrency"}.get(scenario, scenario)
    if scenario.startswith("mlperf-"):  # Offline: every query at once; Server: Poisson at --rate
        from npucenter.workload.mlperf import mlperf_scenario

        preset = mlperf_scenario(scenario)
        arrival = "poisson" if preset.needs_qps else "concurrency"
        if not preset.needs_qps:
            concurrency = concurrency or max_requests
            if concurrency is None:
                raise InvalidConfigError("max-requests", None, f"{scenario} needs --max-requests N")
        if math.isfinite(preset.slo.ttft_s):
            slo_ttft_ms = slo_ttft_ms or preset.slo.ttft_s * 1000
            slo_tpot_ms = slo_tpot_ms or preset.slo.tpot_s * 1000
    rows = load_trace_rows(trace) if arrival == "trace" and trace else ()
    if arrival == "trace" and not trace:
        raise InvalidConfigError("trace", None, "give --trace azure-code|azure-conv|FILE")
    sweep_bound = scenario.endswith("sweep")
    sc = Scenario(
        name=scenario,
        arrival=arrival,
        # a rate sweep chooses its own rates; the base scenario only needs a placeholder
        rate_rps=(rate or 1.0) if arrival in ("poisson", "constant", "gamma") else None,
        burstiness=burstiness,
        concurrency=concurrency or (1 if arrival == "concurrency" else None),
        max_concurrency=max_concurrency,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        length_spread_fraction=spread,
        max_requests=None if sweep_bound else max_requests,
        duration_s=step_duration if sweep_bound else duration,
        trace=trace,
        trace_rows=rows,
        time_scale=trace_time_scale,
        slo_ttft_s=slo_ttft_ms / 1000 if slo_ttft_ms else None,
        slo_tpot_s=slo_tpot_ms / 1000 if slo_tpot_ms else None,
        slo_e2e_s=slo_e2e_ms / 1000 if slo_e2e_ms else None,
        seed=seed,
        api=api,
    )
    if arrival in ("poisson", "constant", "gamma") and rate is None and not sweep_bound:
        raise InvalidConfigError("rate", None, f"--scenario {scenario} needs --rate REQ_PER_S")
    prog = RunProgress(label=scenario)
    with _live(prog, progress and json_out != "-"):
        if sweep_bound:
            concurrency_sweep = scenario == "concurrency-sweep"
            doc = run_async(
                benchmark_sweep(
                    target,
                    sc,
                    kind="concurrency" if concurrency_sweep else "rate",
                    rates_rps=None if concurrency_sweep else (_floats(rates, "rates") or None),
                    concurrency_levels=(
                        [int(x) for x in _floats(levels or "1,2,4,8,16,32", "levels")]
                        if concurrency_sweep
                        else ()
                    ),
                    step_duration_s=step_duration,
                    meta=meta,
                    power=power,
                    progress=prog,
                )
            )
        else:
            doc = run_async(benchmark_run(target, sc, meta=meta, power=power, progress=prog))
    if json_out != "-":
        console.print(_summary_table(doc, f"{scenario} against {target.root_url} ({model})"))
    _write_json(doc, json_out)
    if submit:
        _submit_result(doc, job_id)


@app.command("suite")
@handle_errors
def suite_cmd(
    name: str = typer.Argument("proving-ground", help="Suite name (proving-ground)."),
    endpoint: str = typer.Option(..., "--endpoint"),
    model: str = typer.Option(..., "--model"),
    api_key: str | None = typer.Option(None, "--api-key", envvar="NPUCENTER_API_KEY"),
    api: str = typer.Option("chat", "--api"),
    quick: bool = typer.Option(False, "--quick", help="Durations / 6 (smoke run, ~2-3 min)."),
    duration_scale: float = typer.Option(1.0, "--duration-scale", help="Multiply durations."),
    only: str | None = typer.Option(None, "--only", help="Comma-separated entry names."),
    slo: str = typer.Option("mlperf-llama-3.1-8b", "--slo", help="SLO preset for goodput."),
    trace_time_scale: float = typer.Option(1.0, "--trace-speedup"),
    power: str = typer.Option("auto", "--power"),
    device: str | None = typer.Option(None, "--device"),
    catalog_model: str | None = typer.Option(None, "--catalog-model"),
    tp: int | None = typer.Option(None, "--tp"),
    max_num_seqs: int | None = typer.Option(None, "--max-num-seqs"),
    engine_time_scale: float | None = typer.Option(None, "--engine-time-scale"),
    price: float | None = typer.Option(None, "--price-usd-per-hour"),
    label: str | None = typer.Option(None, "--label"),
    timeout: float = typer.Option(300.0, "--timeout"),
    transport: str = typer.Option("fast", "--transport", help="fast (lean http://) or httpx."),
    json_out: str | None = typer.Option(None, "--json"),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
    submit: bool = typer.Option(False, "--submit", help=_SUBMIT_HELP),
    job_id: int | None = typer.Option(None, "--job", envvar="NPUCENTER_JOB_ID", help=_JOB_HELP),
) -> None:
    """Run the standard, versioned suite against an endpoint (see docs/proving-ground.md)."""
    _check_submit(submit, job_id)
    from npucenter.bench.loadgen import RunProgress
    from npucenter.bench.runner import run_async
    from npucenter.bench.suite import SuiteOptions, run_suite

    target, meta = _target(
        endpoint,
        model,
        api_key=api_key,
        api=api,
        timeout_s=timeout,
        transport=transport,
        device=device,
        catalog_model=catalog_model,
        tp=tp,
        max_num_seqs=max_num_seqs,
        engine_time_scale=engine_time_scale,
        price=price,
        label=label,
    )
    opts = SuiteOptions(
        quick=quick,
        duration_scale=duration_scale,
        slo_preset=slo,
        trace_time_scale=trace_time_scale,
        only=tuple(x.strip() for x in (only or "").split(",") if x.strip()),
    )
    prog = RunProgress(label=name)

    def on_entry(entry: str) -> None:
        prog.label = entry
        prog.step, prog.num_steps = 0, 1

    with _live(prog, progress and json_out != "-"):
        doc = run_async(
            run_suite(
                name, target, opts=opts, meta=meta, power=power, progress=prog, on_entry=on_entry
            )
        )
    if json_out != "-":
        t = Table(title=f"suite {name} v{doc['suite']['version']} against {target.root_url}")
        for col in ("entry", "completed", "errors", "out tok/s", "goodput", "p99 TTFT ms", "tok/J"):
            t.add_column(col, justify="right")
        for entry, h in doc["headline"].items():
            t.add_row(
                entry + (f" [{h['mlperf']}]" if "mlperf" in h else ""),
                str(h["completed"]),
                str(h["errors"]),
                _fmt(h["output_tokens_per_s"]),
                _fmt(h["goodput_rps"]),
                "-" if h["p99_ttft_s"] is None else f"{h['p99_ttft_s'] * 1000:.0f}",
                _fmt(h["output_tokens_per_j"]),
            )
        console.print(t)
    _write_json(doc, json_out)
    if submit:
        _submit_result(doc, job_id)


@app.command("report")
@handle_errors
def report_cmd(
    files: list[Path] = typer.Argument(..., help="Result files (run, sweep or suite JSON)."),
    html: Path | None = typer.Option(None, "--html", help="Write a self-contained HTML report."),
    md: Path | None = typer.Option(None, "--md", help="Write a Markdown summary."),
    price: list[str] = typer.Option(
        [], "--price", help="LABEL=USD_PER_HOUR for cost per million tokens (repeatable)."
    ),
    twin: bool = typer.Option(True, "--twin/--no-twin", help="Compare with the twin's prediction."),
) -> None:
    """Compare results side by side (HTML with inline SVG charts, and/or Markdown)."""
    from npucenter.bench.report import build_report, render_html, render_markdown
    from npucenter.bench.result import load_result

    prices: dict[str, float] = {}
    for item in price:
        key, sep, value = item.rpartition("=")
        try:
            prices[key if sep else "*"] = float(value)
        except ValueError:
            raise InvalidConfigError(
                "price", item, "use LABEL=USD_PER_HOUR, e.g. rngd=2.5"
            ) from None
    docs = [load_result(f) for f in files]
    report = build_report(docs, names=[f.name for f in files], prices=prices, twin=twin)
    if html is not None:
        html.parent.mkdir(parents=True, exist_ok=True)
        html.write_text(render_html(report), encoding="utf-8")
        err_console.print(f"wrote {html}")
    text = render_markdown(report)
    if md is not None:
        md.parent.mkdir(parents=True, exist_ok=True)
        md.write_text(text, encoding="utf-8")
        err_console.print(f"wrote {md}")
    if html is None and md is None:
        console.print(text, markup=False, highlight=False)
