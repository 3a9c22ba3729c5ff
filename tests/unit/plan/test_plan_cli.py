"""`npucenter plan`: the JSON contract, the HTML report and exit codes on bad input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from plan_factories import chat_spec
from typer.testing import CliRunner

from npucenter.cli.main import app

runner = CliRunner()

SPEC = chat_spec(
    "cli",
    cap_w=200_000,
    rngd_cost=10.0,
    h100_cost=40.0,
    traffic={"rate_rps": 40, "mean_input_tokens": 300, "mean_output_tokens": 60},
    slo={"preset": "mlperf-llama-3.1-8b"},
    gpu_jobs=[{"name": "ft", "gpu_hours_per_day": 24}],
    verification={"max_requests": 800, "max_rounds": 3},
)


def _write(tmp_path: Path, data: dict[str, Any]) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def test_json_contract_and_report(tmp_path: Path) -> None:
    spec = _write(tmp_path, SPEC)
    out, html = tmp_path / "out.json", tmp_path / "out.html"
    result = runner.invoke(
        app, ["plan", "--spec", str(spec), "--json", str(out), "--report", str(html)]
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(out.read_text())
    fields = ("servers", "npu_share", "cost_per_hour", "power_w", "verified", "slo_attainment")
    for key in fields:
        assert key in doc
    assert set(doc["baselines"]) == {"all-gpu", "all-npu", "80-20"}
    for base in doc["baselines"].values():
        for key in fields:
            assert key in base
    assert isinstance(doc["verified"], bool)
    assert set(doc["slo_attainment"]) == {"chat"}
    assert doc["servers"]["nvidia_h100_sxm"] >= 1  # the fine-tuning GPU demand
    assert any("USD/kWh" in a for a in doc["assumptions"])
    page = html.read_text()
    assert page.startswith("<!doctype html>") and "<script src" not in page
    assert "assumed" in result.output or "assumption" in result.output


def test_json_to_stdout_with_the_analytic_profile(tmp_path: Path) -> None:
    spec = _write(tmp_path, SPEC)
    result = runner.invoke(
        app, ["plan", "--spec", str(spec), "--json", "-", "--profile", "analytic", "--no-verify"]
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["verified"] is False
    assert doc["slo_attainment"] == {"chat": None}
    assert doc["profile_source"].startswith("analytic")


def test_bad_spec_exits_2_with_the_field(tmp_path: Path) -> None:
    data = json.loads(json.dumps(SPEC))
    data["services"][0]["slo"]["tpot_ms"] = 5
    result = runner.invoke(app, ["plan", "--spec", str(_write(tmp_path, data))])
    assert result.exit_code == 2
    assert "tpot_ms" in result.output


def test_missing_spec_file_exits_3(tmp_path: Path) -> None:
    result = runner.invoke(app, ["plan", "--spec", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 3


def test_unknown_profile_is_rejected_listing_the_valid_names(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["plan", "--spec", str(_write(tmp_path, SPEC)), "--profile", "magic"]
    )
    assert result.exit_code == 3  # not_found, from the registry
    assert "analytic" in result.output and "sim" in result.output


def test_every_registered_part_satisfies_its_protocol() -> None:
    from npucenter.catalog import default_catalog
    from npucenter.plan.profile import ProfileSource
    from npucenter.plan.sources import PROFILE_SOURCES, VERIFIERS
    from npucenter.plan.spec import parse_plan_spec
    from npucenter.plan.traffic import resolve_traffic

    spec = parse_plan_spec(SPEC)
    traffic = resolve_traffic(spec)
    for _, factory in PROFILE_SOURCES.items():
        assert isinstance(factory(default_catalog(), spec, traffic), ProfileSource)
    for _, make in VERIFIERS.items():
        assert callable(getattr(make(default_catalog(), spec, traffic), "verify", None))


def test_atom_without_figures_names_them(tmp_path: Path) -> None:
    data = json.loads(json.dumps(SPEC))
    data["devices"].append(
        {"device": "atom", "server_cost_usd_per_hour": 5.0, "cards_per_server": 8}
    )
    result = runner.invoke(app, ["plan", "--spec", str(_write(tmp_path, data)), "--no-verify"])
    assert result.exit_code == 2
    assert "tdp_w" in result.output


def test_shipped_examples_parse() -> None:
    from npucenter.plan.spec import parse_plan_spec

    root = Path(__file__).resolve().parents[3] / "examples" / "plans"
    files = sorted(root.glob("*.yaml"))
    assert files
    for path in files:
        spec = parse_plan_spec(yaml.safe_load(path.read_text()))
        assert spec.services and spec.devices


def test_emit_fleet_writes_a_fleet_that_parses_and_simulates(tmp_path: Path) -> None:
    from npucenter.fleet.spec import fleet_spec_from_mapping

    spec, fleet = _write(tmp_path, SPEC), tmp_path / "fleet.yaml"
    doc_path = tmp_path / "plan.json"
    result = runner.invoke(
        app, ["plan", "--spec", str(spec), "--json", str(doc_path), "--emit-fleet", str(fleet)]
    )
    assert result.exit_code == 0, result.output
    plan = json.loads(doc_path.read_text())
    data = yaml.safe_load(fleet.read_text())
    parsed = fleet_spec_from_mapping(data)
    assert {p.device: p.num_servers for p in parsed.servers} == {
        d: n for d, n in plan["servers"].items() if n
    }
    assert [s.name for s in parsed.services] == ["chat"]
    assert not (tmp_path / "fleet.catalog.yaml").exists()  # the spec overrides nothing
    out = tmp_path / "sim.json"
    args = ["simulate", "--fleet", str(fleet), "--trace", "synthetic:5", "-n", "300", "-q"]
    sim = runner.invoke(app, [*args, "--json", str(out)])
    assert sim.exit_code == 0, sim.output
    summary = json.loads(out.read_text())
    assert summary["completed"] + summary["rejected"] == 300 == summary["requests"]


def test_emit_fleet_writes_spec_overrides_as_a_catalog_beside_it(tmp_path: Path) -> None:
    data = json.loads(json.dumps(SPEC))
    data["devices"][0]["overrides"] = {"tdp_w": 180.0}
    data["devices"][0]["override_source"] = "assumption: the product page's 180 W"
    fleet = tmp_path / "fleet.yaml"
    result = runner.invoke(
        app, ["plan", "--spec", str(_write(tmp_path, data)), "--emit-fleet", str(fleet)]
    )
    assert result.exit_code == 0, result.output
    assert yaml.safe_load(fleet.read_text())["catalog"] == ["fleet.catalog.yaml"]
    side = yaml.safe_load((tmp_path / "fleet.catalog.yaml").read_text())
    assert side["devices"][0]["tdp_w"] == 180.0
    sim = runner.invoke(
        app, ["simulate", "--fleet", str(fleet), "--trace", "synthetic:2", "-n", "50", "-q"]
    )
    assert sim.exit_code == 0, sim.output
