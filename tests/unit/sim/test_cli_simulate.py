"""`npucenter simulate`: JSON summary keys, HTML report, typed errors as exit codes."""

from __future__ import annotations

import json
from pathlib import Path

from summary_contract import assert_summary_contract
from typer.testing import CliRunner

from npucenter.cli.main import app

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "fleets" / "gwangju-80-20.yaml"


def test_simulate_writes_summary_and_report(tmp_path):
    out, page, recs = tmp_path / "s.json", tmp_path / "r.html", tmp_path / "r.csv"
    result = CliRunner().invoke(
        app,
        [
            "simulate",
            "--trace",
            "conv",
            "--fleet",
            str(EXAMPLE),
            "--policy",
            "npu-first",
            "--num-requests",
            "400",
            "--rate-scale",
            "2",
            "--json",
            str(out),
            "--plot",
            str(page),
            "--records",
            str(recs),
            "--quiet",
        ],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(out.read_text())
    assert_summary_contract(summary)
    assert summary["requests"] == 400 and summary["wall_s"] > 0
    assert "<svg" in page.read_text()
    assert len(recs.read_text().splitlines()) == 401


def test_bad_inputs_exit_with_typed_codes(tmp_path):
    runner = CliRunner()
    missing = runner.invoke(app, ["simulate", "--fleet", str(tmp_path / "none.yaml")])
    assert missing.exit_code == 3
    bad = tmp_path / "bad.yaml"
    bad.write_text("servers: [{device: rngd}]\nservices: []\n")
    assert runner.invoke(app, ["simulate", "--fleet", str(bad)]).exit_code == 2
    policy = runner.invoke(app, ["simulate", "--fleet", str(EXAMPLE), "--policy", "nope"])
    assert policy.exit_code == 3
    trace = runner.invoke(app, ["simulate", "--fleet", str(EXAMPLE), "--trace", "nope.csv"])
    assert trace.exit_code == 3


def test_every_example_fleet_builds_or_asks_for_missing_figures(tmp_path):
    import yaml

    from npucenter.catalog import default_catalog
    from npucenter.errors import MissingFigureError
    from npucenter.fleet.spec import fleet_spec_from_mapping
    from npucenter.sim.center import build_center

    fleets = sorted(EXAMPLE.parent.glob("*.yaml"))
    built = 0
    for path in fleets:
        data = yaml.safe_load(path.read_text())
        if "servers" not in data:
            continue  # a user catalog file, not a fleet
        spec = fleet_spec_from_mapping(data)
        if any(p.device == "atom" for p in spec.servers):
            with __import__("pytest").raises(MissingFigureError) as err:
                build_center(spec, default_catalog())
            assert set(err.value.missing_fields) == {"memory_bandwidth_gbps", "tdp_w"}
            continue
        build_center(spec, default_catalog())
        built += 1
    assert built >= 3
    # the ATOM fleet runs once a user catalog supplies the two figures (test values only)
    override = tmp_path / "atom.yaml"
    override.write_text(
        "devices:\n  - {id: rebellions_atom, memory_bandwidth_gbps: 100, tdp_w: 100, source: test}\n"
    )
    result = CliRunner().invoke(
        app,
        [
            "simulate",
            "--fleet",
            str(EXAMPLE.parent / "gwangju-atom.yaml"),
            "--catalog",
            str(override),
            "--num-requests",
            "200",
            "--print-json",
        ],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["completed"] == 200
    assert any("rebellions_atom" in a for a in summary["assumptions"])


def test_compare_runs_each_policy_on_the_same_trace(tmp_path):
    out = tmp_path / "cmp.json"
    result = CliRunner().invoke(
        app,
        [
            "simulate",
            "--fleet",
            str(EXAMPLE),
            "--num-requests",
            "300",
            "--compare",
            "npu-first,round-robin",
            "--json",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    docs = json.loads(out.read_text())
    assert list(docs) == ["npu-first", "round-robin"]
    assert docs["npu-first"]["requests"] == docs["round-robin"]["requests"] == 300
    bad = CliRunner().invoke(
        app, ["simulate", "--fleet", str(EXAMPLE), "--compare", "npu-first,nope"]
    )
    assert bad.exit_code == 3


def test_a_fleet_that_does_not_fit_exits_6_and_jobs_reach_the_json(tmp_path):
    runner = CliRunner()
    tight = tmp_path / "tight.yaml"
    tight.write_text(
        "servers: [{device: rngd, count: 2, cards_per_server: 6}]\n"
        "services: [{model: llama-3.1-8b, device: rngd, tp: 4, replicas: 3}]\n"
    )
    result = runner.invoke(app, ["simulate", "--fleet", str(tight), "-t", "synthetic:1", "-q"])
    assert result.exit_code == 6
    assert "capacity_unavailable" in result.output
    jobs = tmp_path / "jobs.yaml"
    jobs.write_text(
        "servers: [{device: h100, count: 1, cards_per_server: 8}]\n"
        "services: [{model: llama-3.1-8b, device: h100, replicas: 4}]\n"
        "jobs: [{name: lora, tenant: lab, device: h100, cards: 4, arrival_s: 5, duration_s: 60}]\n"
    )
    out = tmp_path / "s.json"
    args = ["simulate", "--fleet", str(jobs), "-t", "synthetic:2", "-n", "100", "-q"]
    result = runner.invoke(app, [*args, "--json", str(out)])
    assert result.exit_code == 0, result.output
    summary = json.loads(out.read_text())
    assert summary["jobs"]["finished"] == 1
    assert summary["jobs"]["jobs"][0]["start_s"] == 5.0
