"""`npucenter plan --spec SPEC.yaml [--json out.json] [--report out.html]`: the capacity planner."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import typer
import yaml
from rich.markup import escape
from rich.table import Table

from npucenter.catalog import Catalog
from npucenter.cli._common import console, err_console, handle_errors
from npucenter.errors import InvalidConfigError, NotFoundError
from npucenter.files.catalog import load_catalog
from npucenter.fleet.placement import place_fleet
from npucenter.fleet.spec import fleet_spec_from_mapping
from npucenter.plan.fleet_file import overrides_catalog, plan_fleet_mapping
from npucenter.plan.planner import (
    BASELINES,
    PlanOutcome,
    PlanResult,
    Verifier,
    plan_capacity,
    spec_catalog,
)
from npucenter.plan.profile import CachedProfile, ProfileSource, TrafficStats
from npucenter.plan.report import render_html, result_to_dict
from npucenter.plan.sources import PROFILE_SOURCES, VERIFIERS
from npucenter.plan.spec import PlanSpec, parse_plan_spec
from npucenter.plan.traffic import resolve_traffic

app = typer.Typer(
    help="Find the cheapest NPU:GPU fleet that meets every SLO under a power cap.",
    invoke_without_command=True,
)


@app.callback()
@handle_errors
def plan(
    spec_path: Path = typer.Option(..., "--spec", help="Plan spec (YAML), e.g. examples/plans/"),
    json_path: str | None = typer.Option(
        None, "--json", help="Write the JSON result here ('-' for stdout)."
    ),
    report_path: Path | None = typer.Option(
        None, "--report", help="Write a self-contained HTML report here."
    ),
    profile: str = typer.Option(
        "sim",
        "--profile",
        help=f"Replica capacity source: {', '.join(PROFILE_SOURCES.names())}.",
    ),
    verify: bool = typer.Option(
        True, "--verify/--no-verify", help="Simulate each plan on the full traffic."
    ),
    verifier_name: str = typer.Option(
        "center",
        "--verifier",
        help=f"Plan verifier: {', '.join(VERIFIERS.names())} (center: the simulator's "
        "whole-center model).",
    ),
    objective: str | None = typer.Option(
        None, "--objective", help="Override the spec: cost, power or weighted."
    ),
    catalog: list[Path] | None = typer.Option(None, "--catalog", help="User catalog file."),
    emit_fleet: Path | None = typer.Option(
        None,
        "--emit-fleet",
        help="Write the chosen plan as a fleet file (servers, replicas, TP, precision, SLOs) "
        "that `npucenter simulate --fleet` and `npucenter up --fleet` read.",
    ),
) -> None:
    """Plan the fleet, compare it with all-GPU, all-NPU and the 80/20 rule, and report."""
    started = time.perf_counter()
    spec = _read_spec(spec_path)
    if objective is not None:
        spec = replace(spec, objective=objective)  # type: ignore[arg-type]
    PROFILE_SOURCES.get(profile)  # unknown names fail here, listing the valid ones
    VERIFIERS.get(verifier_name)
    cat = load_catalog(catalog or [])
    traffic = resolve_traffic(spec)
    source, verifier, label, check_label = _sources(
        spec, cat, traffic, profile, verifier_name if verify else None
    )
    with err_console.status("planning…") as status:
        result = plan_capacity(
            spec,
            catalog=cat,
            traffic=traffic,
            profile=source,
            verifier=verifier,
            profile_source=label,
            verifier_source=check_label,
            progress=lambda msg: status.update(escape(msg)),
        )
    elapsed = time.perf_counter() - started
    doc = result_to_dict(result)
    doc["wall_s"] = elapsed
    if json_path == "-":
        typer.echo(json.dumps(doc, indent=2))
    else:
        if json_path:
            Path(json_path).write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
        _print(result, elapsed)
    if report_path is not None:
        report_path.write_text(render_html(result), encoding="utf-8")
        if json_path != "-":
            console.print(f"report written to {escape(str(report_path))}")
    if emit_fleet is not None:
        written = write_fleet_file(result, emit_fleet, catalog or [])
        if json_path != "-":
            console.print(f"fleet written to {', '.join(escape(str(p)) for p in written)}")


def write_fleet_file(result: PlanResult, path: Path, catalog: Sequence[Path]) -> list[Path]:
    """Write the plan's fleet file (and, for spec overrides, a user catalog beside it).

    The fleet is parsed and placed by the simulator before anything is written, so a file that
    is written also simulates. Returns the paths written.
    """
    files = [str(Path(c).resolve()) for c in catalog]
    extra = overrides_catalog(result.spec)
    side = path.with_name(f"{path.stem}.catalog.yaml")
    if extra is not None:
        files.append(side.name)  # relative to the fleet file
    doc = plan_fleet_mapping(result, catalog_files=files)
    place_fleet(fleet_spec_from_mapping(doc))  # raises with the pending reasons if it cannot run
    header = (
        f"# Fleet of capacity plan {result.spec.name!r}, written by `npucenter plan --emit-fleet`."
        "\n# Replay it: npucenter simulate --fleet THIS_FILE --trace ...; run it: npucenter up "
        "--fleet THIS_FILE\n"
    )
    written = []
    if extra is not None:
        side.write_text(yaml.safe_dump(extra, sort_keys=False), encoding="utf-8")
        written.append(side)
    path.write_text(header + yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return [path, *written]


def _read_spec(path: Path) -> PlanSpec:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise NotFoundError("plan spec file", str(path)) from None
    except OSError as exc:
        raise InvalidConfigError("--spec", str(path), exc.strerror or str(exc)) from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InvalidConfigError("--spec", str(path), f"not valid YAML: {exc}") from exc
    return parse_plan_spec(data)


def _sources(
    spec: PlanSpec,
    cat: Catalog,
    traffic: Mapping[str, TrafficStats],
    profile: str,
    verifier_name: str | None,
) -> tuple[ProfileSource, Verifier | None, str, str]:
    """The profile source and verifier from their registries, with their report labels."""
    plan_cat = spec_catalog(spec, cat)
    source = PROFILE_SOURCES.get(profile)(plan_cat, spec, traffic)
    label = _describe(source, profile)
    if verifier_name is None:
        return CachedProfile(source), None, label, "none"
    verifier = VERIFIERS.get(verifier_name)(plan_cat, spec, traffic)
    return CachedProfile(source), verifier, label, _describe(verifier, verifier_name)


def _describe(part: object, name: str) -> str:
    describe = getattr(part, "describe", None)
    return str(describe()) if callable(describe) else name


def _print(result: PlanResult, elapsed_s: float) -> None:
    services = [s.name for s in result.spec.services]
    table = Table(title=f"capacity plan {result.spec.name!r} (objective: {result.spec.objective})")
    for col in ("fleet", "servers", "NPU", "kW", "USD/h", "USD/Mtok", "J/tok", "verified"):
        table.add_column(col, justify="left" if col in ("fleet", "servers") else "right")
    table.add_column("SLO met (" + " / ".join(services) + ")", justify="right")
    rows: list[tuple[str, PlanOutcome]] = [("plan", result.plan)] + [
        (n, result.baselines[n]) for n in BASELINES if n in result.baselines
    ]
    for name, out in rows:
        alloc = out.allocation
        if alloc is None:
            table.add_row(name, "[red]infeasible[/]", *[""] * 7)
            continue
        ver = out.verification
        attained = " / ".join(
            _fmt(ver.slo_attainment.get(s) if ver else None, ".1%") for s in services
        )
        table.add_row(
            name + (f" (via {out.found_by})" if out.found_by else ""),
            escape(", ".join(f"{n}x {_short(d)}" for d, n in alloc.servers.items() if n)),
            f"{alloc.npu_share:.0%}",
            f"{alloc.power_w / 1e3:.1f}",
            f"{alloc.cost_usd_per_hour:.2f}",
            _fmt(out.cost_per_million_output_tokens, ".3f"),
            _fmt(out.energy_j_per_output_token, ".2f"),
            "[green]yes[/]" if out.verified else "[red]no[/]",
            attained,
        )
    console.print(table)
    for line in result.comparison:
        console.print(f"- {escape(line)}")
    console.print("[bold]replicas (plan)[/]")
    if result.plan.allocation is not None:
        for label, count in sorted(result.plan.allocation.replicas.items()):
            console.print(f"  {count:4d} x {escape(label)}")
    console.print("[bold]sensitivity (MILP, verified headroom)[/]")
    for case in result.sensitivity:
        a = case.allocation
        text = (
            f"{a.cost_usd_per_hour:.2f} USD/h, {a.power_w / 1e3:.1f} kW, NPU {a.npu_share:.0%}"
            if a
            else "infeasible"
        )
        console.print(f"  {escape(case.name)}: {escape(text)}")
    front = "; ".join(
        f"{a.power_w / 1e3:.1f} kW -> {a.cost_usd_per_hour:.2f} USD/h" for a in result.pareto
    )
    console.print(f"[bold]Pareto front[/] ({len(result.pareto)} points): {escape(front)}")
    console.print("[bold]assumptions[/]")
    for line in result.assumptions:
        console.print(f"  - {escape(line)}")
    console.print(f"profile source: {escape(result.profile_source)}; planned in {elapsed_s:.1f} s")


def _short(device_id: str) -> str:
    """``furiosa_rngd`` -> ``rngd``, ``nvidia_h100_sxm`` -> ``h100_sxm`` (table width)."""
    return device_id.split("_", 1)[1] if "_" in device_id else device_id


def _fmt(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)
