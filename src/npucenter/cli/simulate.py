"""`npucenter simulate`: run the digital twin on a trace and a fleet file.

The edge: reads the fleet YAML, user catalog files and request logs, measures wall time, draws a
progress bar, prints the summary and writes JSON/CSV/HTML. The simulation itself is ``npucenter.sim``.
"""

from __future__ import annotations

import csv
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import typer
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from npucenter.cli._common import console, err_console, handle_errors, print_json
from npucenter.errors import InvalidConfigError, NotFoundError
from npucenter.files.catalog import load_catalog
from npucenter.files.fleet import load_fleet_spec
from npucenter.fleet.spec import FleetSpec
from npucenter.policy.routing import ROUTING_POLICIES
from npucenter.sim.center import Center, build_center, distserve_goodput
from npucenter.sim.report import render_html_report
from npucenter.sim.results import SimResult
from npucenter.workload import (
    AZURE_TRACES,
    EmpiricalLengths,
    PoissonArrivals,
    Trace,
    parse_request_log,
    read_azure_trace,
    synthetic_trace,
)

__all__ = ["app", "load_trace"]

app = typer.Typer(help="Simulate the center (digital twin) on a trace.")


def load_trace(spec: str, *, num_requests: int | None, seed: int) -> Trace:
    """``conv``/``code`` (Azure), ``synthetic:RATE`` (Poisson, Azure-conv lengths) or a file."""
    if spec.lower().removeprefix("azure-") in AZURE_TRACES:
        return read_azure_trace(spec)
    if spec.lower().startswith("synthetic"):
        _, _, rate = spec.partition(":")
        try:
            rate_rps = float(rate or 10.0)
        except ValueError as exc:
            raise InvalidConfigError(
                "trace", spec, "use synthetic:RATE, e.g. synthetic:50"
            ) from exc
        conv = read_azure_trace("conv")
        return synthetic_trace(
            num_requests=num_requests or 10_000,
            arrivals=PoissonArrivals(rate_rps=rate_rps),
            prompt=EmpiricalLengths.from_array(conv.prompt_tokens),
            output=EmpiricalLengths.from_array(conv.output_tokens),
            rng=np.random.default_rng(seed),
            name=f"synthetic-poisson-{rate_rps:g}rps",
        )
    if spec.lower().startswith("mlperf-"):  # MLPerf scenario presets (workload/mlperf.py)
        from npucenter.workload.mlperf import scenario_trace_from_spec

        return scenario_trace_from_spec(
            spec,
            lengths=read_azure_trace("conv"),
            num_requests=num_requests or 10_000,
            rng=np.random.default_rng(seed),
        )
    path = Path(spec)
    if not path.is_file():
        raise NotFoundError(
            "trace", spec, valid=[*AZURE_TRACES, "synthetic:RATE", "mlperf-server:QPS", "<file>"]
        )
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        return parse_request_log(text, fmt="jsonl", name=path.stem)
    if text.startswith("TIMESTAMP,ContextTokens,GeneratedTokens"):
        from npucenter.workload import parse_azure_csv

        return parse_azure_csv(text, name=path.stem)
    return parse_request_log(text, fmt="csv", name=path.stem)


@app.callback(invoke_without_command=True)
@handle_errors
def simulate(
    trace: str = typer.Option(
        "conv",
        "--trace",
        "-t",
        help="conv | code | synthetic:RATE | mlperf-offline | mlperf-server:QPS | "
        "mlperf-interactive:QPS | file",
    ),
    fleet: Path = typer.Option(..., "--fleet", "-f", help="Fleet YAML (see docs/simulator.md)."),
    policy: str = typer.Option(
        "least-outstanding-tokens",
        "--policy",
        "-p",
        help=f"Routing policy: {', '.join(ROUTING_POLICIES.names())}.",
    ),
    rate_scale: float = typer.Option(1.0, "--rate-scale", help="Replay k times faster."),
    num_requests: int | None = typer.Option(None, "--num-requests", "-n", help="First N only."),
    seed: int = typer.Option(0, "--seed", help="Seed for synthetic traces and service split."),
    catalog: list[Path] | None = typer.Option(None, "--catalog", help="User catalog file."),
    json_out: Path | None = typer.Option(None, "--json", help="Write the summary JSON here."),
    records_out: Path | None = typer.Option(None, "--records", help="Per-request CSV here."),
    plot_out: Path | None = typer.Option(None, "--plot", help="Write an HTML report here."),
    goodput_search: bool = typer.Option(
        False, "--distserve-goodput", help="Also find the max rate with >= 90% SLO attainment."
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or table."),
    print_summary_json: bool = typer.Option(False, "--print-json", help="Summary JSON on stdout."),
    compare: str | None = typer.Option(
        None,
        "--compare",
        help="Comma-separated policies to run side by side (replaces --policy; JSON maps "
        "policy -> summary).",
    ),
    autoscaling: bool = typer.Option(
        False,
        "--autoscaling",
        help="Compare the fleet fixed (every placed replica all along) and autoscaled (its "
        "services' min_replicas/max_replicas/autoscale:): card-hours, energy, SLO attainment.",
    ),
) -> None:
    """Simulate FLEET serving TRACE with a routing policy; print latency, goodput and energy."""
    spec = load_fleet_spec(fleet)
    cat = load_catalog([*map(Path, spec.catalog_files), *(catalog or [])])  # --catalog wins
    center = build_center(spec, cat, policy=policy)
    tr = load_trace(trace, num_requests=num_requests, seed=seed)
    if num_requests is not None and not trace.lower().startswith("synthetic"):
        tr = tr.head(num_requests)
    if rate_scale != 1.0:
        tr = tr.scale_rate(rate_scale)
    if len(spec.services) > 1 and tr.service_names == ("default",):
        shares = {s.name: s.traffic_share for s in spec.services}
        tr = tr.split(shares, np.random.default_rng(seed))
    if not len(tr):
        raise InvalidConfigError("trace", trace, "has no requests")
    if compare:
        _compare(spec, cat, tr, [p.strip() for p in compare.split(",") if p.strip()], json_out)
        return
    if autoscaling:
        _compare_autoscaling(spec, cat, tr, policy, json_out)
        return
    show = not (quiet or print_summary_json)
    started = time.perf_counter()
    if show:
        with Progress(
            TextColumn("simulating"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total} requests"),
            TimeElapsedColumn(),
            console=err_console,
            transient=True,
        ) as bar:
            task = bar.add_task("sim", total=len(tr))
            result = center.run(tr, progress=lambda done, _n: bar.update(task, completed=done))
    else:
        result = center.run(tr)
    wall_s = time.perf_counter() - started
    summary = result.summary
    summary["wall_s"] = wall_s
    summary["events_per_s"] = summary["num_events"] / wall_s if wall_s > 0 else None
    summary["speedup_vs_real_time"] = summary["simulated_s"] / wall_s if wall_s > 0 else None
    if goodput_search:
        summary["distserve_goodput_rps"] = distserve_goodput(center, tr)
    if json_out is not None:
        json_out.write_text(json.dumps(_jsonable(summary), indent=2) + "\n", encoding="utf-8")
    if records_out is not None:
        _write_records(records_out, result)
    if plot_out is not None:
        plot_out.write_text(render_html_report(result), encoding="utf-8")
    if print_summary_json:
        print_json(_jsonable(summary))
    elif not quiet:
        _print_table(result)


def _compare(
    spec: FleetSpec, cat: Any, tr: Trace, policies: list[str], json_out: Path | None
) -> None:
    """Run the same trace under several policies and print one row each."""
    if not policies:
        raise InvalidConfigError("compare", "", "name at least one policy")
    centers = [build_center(spec, cat, policy=p) for p in policies]  # unknown names fail first
    table = Table(title=f"{spec.name} · {tr.name} · {len(tr)} requests")
    table.add_column("policy", no_wrap=True)
    for col in ("TTFT s p50/p99", "TPOT ms p50/p99", "goodput", "SLO met", "J/token", "busy N/G"):
        table.add_column(col, justify="right")
    table.add_column("wall s", justify="right")
    docs: dict[str, Any] = {}
    for policy, center in zip(policies, centers, strict=True):
        started = time.perf_counter()
        s = center.run(tr).summary
        s["wall_s"] = time.perf_counter() - started
        docs[policy] = s
        util = s["utilisation"]
        table.add_row(
            policy,
            f"{s['ttft_s']['p50']:.3f} / {s['ttft_s']['p99']:.3f}",
            f"{s['tpot_s']['p50'] * 1e3:.1f} / {s['tpot_s']['p99'] * 1e3:.1f}",
            f"{s['goodput_rps']:.3f}",
            f"{s['slo_attainment']:.2%}",
            f"{s['energy_j_per_output_token']:.3f}",
            f"{util.get('npu', 0.0):.0%} / {util.get('gpu', 0.0):.0%}",
            f"{s['wall_s']:.2f}",
        )
    if json_out is not None:
        json_out.write_text(json.dumps(_jsonable(docs), indent=2) + "\n", encoding="utf-8")
    console.print(table)


def _compare_autoscaling(
    spec: FleetSpec, cat: Any, tr: Trace, policy: str, json_out: Path | None
) -> None:
    """The same trace on the fleet fixed and autoscaled; one row each."""
    if not any(d.autoscale is not None for d in spec.deployments):
        raise InvalidConfigError(
            "fleet",
            spec.name,
            "no service autoscales",
            hint="give a service min_replicas/max_replicas (docs/simulator.md)",
        )
    table = Table(title=f"{spec.name} · {tr.name} · {len(tr)} requests · {policy}")
    table.add_column("fleet", no_wrap=True)
    for col in ("card-hours", "energy kWh", "SLO met", "TTFT s p50/p99", "ups/downs", "wall s"):
        table.add_column(col, justify="right")
    docs: dict[str, Any] = {}
    for name, auto in (("fixed", False), ("autoscaled", True)):
        started = time.perf_counter()
        s = Center(spec, cat, policy=policy, autoscale=auto).run(tr).summary
        s["wall_s"] = time.perf_counter() - started
        docs[name] = s
        scaled = s.get("autoscaling", {})
        ups = sum(v["scale_ups"] for v in scaled.values())
        downs = sum(v["scale_downs"] for v in scaled.values())
        table.add_row(
            name,
            f"{s['held']['card_hours']:.2f}",
            f"{s['held']['energy_j'] / 3.6e6:.3f}",
            f"{s['slo_attainment']:.2%}",
            f"{s['ttft_s']['p50']:.3f} / {s['ttft_s']['p99']:.3f}",
            f"{ups} / {downs}" if auto else "-",
            f"{s['wall_s']:.2f}",
        )
    if json_out is not None:
        json_out.write_text(json.dumps(_jsonable(docs), indent=2) + "\n", encoding="utf-8")
    console.print(table)
    console.print(
        "card-hours and energy: the cards the replicas held (a scaled-down replica's cards are "
        "released: 0 W); cold starts per engine: docs/simulator.md",
        highlight=False,
    )


def _print_table(result: SimResult) -> None:
    s = result.summary
    table = Table(title=f"{s['fleet']} · {s['policy']} · {s['trace']}", show_header=False)
    table.add_column("metric")
    table.add_column("value", justify="right")

    def pct(d: dict[str, float]) -> str:
        return " / ".join(
            "n/a" if math.isnan(d[k]) else f"{d[k]:.3f}" for k in ("p50", "p90", "p99")
        )

    table.add_row(
        "requests (completed / rejected)", f"{s['requests']} ({s['completed']} / {s['rejected']})"
    )
    table.add_row("TTFT p50/p90/p99 (s)", pct(s["ttft_s"]))
    table.add_row("TPOT p50/p90/p99 (s)", pct(s["tpot_s"]))
    table.add_row("end-to-end p50/p90/p99 (s)", pct(s["e2e_s"]))
    table.add_row(
        "throughput (req/s, out tok/s)",
        f"{s['throughput']['requests_per_s']:.2f}, {s['throughput']['output_tokens_per_s']:.0f}",
    )
    table.add_row("goodput (req/s meeting SLO)", f"{s['goodput_rps']:.3f}")
    table.add_row("SLO attainment", f"{s['slo_attainment']:.2%}")
    if "distserve_goodput_rps" in s:
        table.add_row("DistServe goodput (90 %)", f"{s['distserve_goodput_rps']:.2f} req/s")
    table.add_row("energy per output token (J)", f"{s['energy_j_per_output_token']:.3f}")
    table.add_row("mean fleet power (W)", f"{s['mean_power_w']:.0f}")
    table.add_row("busy fraction", ", ".join(f"{k} {v:.1%}" for k, v in s["utilisation"].items()))
    table.add_row("preemptions", str(s["preemptions"]))
    placement = s.get("placement") or {}
    if any(len(per) > 1 for per in placement.values()):  # a service on several device types
        table.add_row(
            "replicas by device type",
            "; ".join(
                f"{name}: " + ", ".join(f"{dev} {n}" for dev, n in per.items())
                for name, per in placement.items()
            ),
        )
    jobs = s.get("jobs")
    if jobs:
        wait = jobs["mean_wait_s"]
        table.add_row(
            "jobs (finished / all, mean wait)",
            f"{jobs['finished']} / {jobs['num_jobs']}, "
            + (f"{wait:.1f} s" if wait is not None else "-"),
        )
        table.add_row(
            "cards allocated (replicas + jobs)",
            ", ".join(
                f"{dev} {a['replica_fraction']:.0%}+{a['job_fraction']:.0%}"
                for dev, a in jobs["card_allocation"].items()
            ),
        )
        table.add_row(
            "preempted (jobs, replicas)", f"{jobs['preemptions']}, {jobs['replica_preemptions']}"
        )
        waiting = [(f"job {j['name']}", j) for j in jobs["jobs"] if j["finish_s"] is None]
        waiting += [
            (f"replica {o['replica_id']}", o) for o in jobs["replica_outages"] if o["up_s"] is None
        ]
        for who, w in waiting:  # why each still waits at the end (admission's reason)
            table.add_row(
                f"waiting: {who}",
                escape(
                    f"{w['pending_reason'] or 'no reason recorded'}"
                    + (f" ({w['pending_message']})" if w.get("pending_message") else "")
                ),
            )
    for name, a in s.get("adapters", {}).items():  # LoRA adapters its requests named
        table.add_row(
            f"adapters of {name} (requests, loads, hit rate)",
            f"{a['requests']}, {a['loads']} (waited {a['load_wait_s']:.1f} s), "
            + (f"{a['hit_rate']:.1%}" if a["hit_rate"] is not None else "-"),
        )
    table.add_row(
        "simulated / wall (s)",
        f"{s['simulated_s']:.0f} / {s['wall_s']:.2f} ({s['speedup_vs_real_time']:.0f}x real time)",
    )
    console.print(table)


def _write_records(path: Path, result: SimResult) -> None:
    records = result.records()
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(records[0]) if records else ["index"])
        writer.writeheader()
        writer.writerows(records)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, float):
        return None if math.isnan(obj) or math.isinf(obj) else obj
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return _jsonable(obj.item())
    return obj
