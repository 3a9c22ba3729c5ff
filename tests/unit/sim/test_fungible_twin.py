"""The twin runs a fungible fleet-file service (``fallback_devices:``): each replica serves at the
speed of the type admission put it on, and the report says where each landed; waiting jobs say
why in the twin's output."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from npucenter.catalog import default_catalog
from npucenter.cli.main import app
from npucenter.errors import NpuCenterError
from npucenter.files.catalog import load_catalog
from npucenter.fleet.spec import fleet_spec_from_mapping
from npucenter.sim.center import build_center
from npucenter.workload import FixedLength, PoissonArrivals, synthetic_trace

# test values for ATOM's two unsourced figures (never a device figure: this test's only)
ATOM_TEST_FIGURES = (
    "devices:\n  - {id: rebellions_atom, memory_bandwidth_gbps: 100, tdp_w: 100, source: test}\n"
)
FLEET: dict[str, Any] = {
    "name": "fungible-test",
    "servers": [
        {"device": "rngd", "count": 1, "cards_per_server": 8},
        {"device": "atom", "count": 1, "cards_per_server": 4},
        {"device": "h100", "count": 1, "cards_per_server": 8},
    ],
    "services": [
        {"service": "code", "model": "llama-3.1-8b", "device": "rngd", "replicas_per_server": 8},
        {
            "service": "chat",
            "model": "llama-3.1-8b",
            "device": "rngd",
            "precision": "int8",
            "fallback_devices": ["atom", "h100"],
            "replicas": 6,
        },
    ],
    "traffic": {"code": 0.5, "chat": 0.5},
}


def _catalog(tmp_path: Path) -> Any:
    path = tmp_path / "atom.yaml"
    path.write_text(ATOM_TEST_FIGURES)
    return load_catalog([path], include_user_dir=False)


def _trace(n: int = 300) -> Any:
    return synthetic_trace(
        num_requests=n,
        arrivals=PoissonArrivals(rate_rps=20.0),
        prompt=FixedLength(tokens=200),
        output=FixedLength(tokens=20),
        rng=np.random.default_rng(0),
    ).split({"code": 0.5, "chat": 0.5}, np.random.default_rng(1))


def test_replicas_serve_on_the_type_they_landed_on_and_the_summary_says_which(
    tmp_path: Path,
) -> None:
    spec = fleet_spec_from_mapping(FLEET)
    center = build_center(spec, _catalog(tmp_path))
    result = center.run(_trace())
    s = result.summary
    assert s["placement"] == {"code": {"rngd": 8}, "chat": {"rngd": 0, "atom": 4, "h100": 2}}
    devices = {r["replica_id"]: r["device_id"] for r in s["per_replica"]}
    assert sorted(devices.values()).count("rebellions_atom") == 4
    assert sorted(devices.values()).count("nvidia_h100_sxm") == 2
    for rid, _dep, pm in center._layout:  # each replica's perf model is its device's, at int8
        assert pm.device.device_id == devices[rid]
        if not rid.startswith("rngd"):  # a fallback: the precision of the first type
            assert pm.precision.value == "int8"
    assert s["completed"] == 300


def test_a_fallback_type_the_model_cannot_run_on_fails_when_built() -> None:
    # the shipped catalog has no ATOM bandwidth or TDP: as the live center refuses the list
    with pytest.raises(NpuCenterError):
        build_center(fleet_spec_from_mapping(FLEET), load_catalog(include_user_dir=False))


def test_the_cli_table_says_where_replicas_landed(tmp_path: Path) -> None:
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(yaml.safe_dump({**FLEET, "catalog": ["atom.yaml"]}))
    (tmp_path / "atom.yaml").write_text(ATOM_TEST_FIGURES)
    out, page = tmp_path / "s.json", tmp_path / "r.html"
    args = ["simulate", "--fleet", str(fleet), "--trace", "synthetic:5", "-n", "100"]
    result = CliRunner().invoke(app, [*args, "--json", str(out), "--plot", str(page)])
    assert result.exit_code == 0, result.output
    assert "replicas by device type" in result.output
    assert "chat: rngd 0, atom 4, h100 2" in " ".join(result.output.split())
    assert json.loads(out.read_text())["placement"]["chat"] == {"rngd": 0, "atom": 4, "h100": 2}
    assert "code: rngd 8; chat: rngd 0, atom 4, h100 2" in page.read_text()  # the HTML report


def test_every_waiting_job_says_why_in_the_twins_table_and_json(tmp_path: Path) -> None:
    fleet = tmp_path / "fleet.yaml"
    doc = {
        "servers": [{"device": "h100", "count": 1, "cards_per_server": 8}],
        "services": [{"model": "llama-3.1-8b", "device": "h100", "replicas": 1}],
        "tenants": {
            "kaist": {"nominal_cards": {"h100": 4}},
            "lab": {"nominal_cards": {"h100": 2}, "stop_policy": "hold"},
        },
        "jobs": [
            {"name": "big", "tenant": "kaist", "device": "h100", "cards": 6, "duration_s": 60},
            {"name": "held", "tenant": "lab", "device": "h100", "cards": 1, "duration_s": 60},
            {"name": "fits", "tenant": "kaist", "device": "h100", "cards": 2, "duration_s": 60},
        ],
    }
    fleet.write_text(yaml.safe_dump(doc))
    out = tmp_path / "s.json"
    args = ["simulate", "--fleet", str(fleet), "--trace", "synthetic:5", "-n", "50"]
    result = CliRunner().invoke(app, [*args, "--json", str(out)])
    assert result.exit_code == 0, result.output
    jobs = json.loads(out.read_text())["jobs"]["jobs"]
    waiting = {j["name"]: j for j in jobs if j["finish_s"] is None}
    assert set(waiting) == {"big", "held"}
    assert all(j["pending_reason"] and j["pending_message"] for j in waiting.values())
    text = " ".join(result.output.split())
    for name, j in waiting.items():
        assert f"waiting: job {name}" in text
        assert j["pending_reason"] in text
    assert "waiting: job fits" not in text


def _two_types() -> Any:
    return fleet_spec_from_mapping(
        {
            "name": "fungible-readmit",
            "servers": [
                {"device": "h100", "count": 1, "cards_per_server": 4},
                {"device": "rngd", "count": 1, "cards_per_server": 4},
            ],
            "services": [
                {
                    "service": "chat",
                    "model": "llama-3.1-8b",
                    "device": "h100",
                    "fallback_devices": ["rngd"],
                    "replicas": 8,
                }
            ],
        }
    )


def _readmitted_on(device_type: str) -> tuple[Any, Any]:
    """A center whose replica h100-0-r0 is preempted at 5 s and admitted again at 10 s on
    ``device_type`` (the timeline admission would give; injected to fix the type)."""
    from npucenter.sim.jobs import JobTimeline, ReplicaOutage

    center = build_center(_two_types(), default_catalog())
    outage = ReplicaOutage(replica_id="h100-0-r0", down_s=5.0, up_s=10.0, device_type=device_type)
    center.jobs = JobTimeline(jobs=(), outages=(outage,), end_s=10.0, holds=())
    trace = synthetic_trace(
        num_requests=600,
        arrivals=PoissonArrivals(rate_rps=20.0),
        prompt=FixedLength(tokens=500),
        output=FixedLength(tokens=100),
        rng=np.random.default_rng(0),
    )
    return center, center.run(trace)


def test_a_fungible_replica_admitted_again_serves_at_the_speed_of_its_new_type() -> None:
    _, same = _readmitted_on("h100")
    _, moved = _readmitted_on("rngd")
    devices = {r["replica_id"]: r["device_id"] for r in moved.summary["per_replica"]}
    assert devices["h100-0-r0"] == "furiosa_rngd"  # where it runs after its re-admission
    kept = {r["replica_id"]: r["device_id"] for r in same.summary["per_replica"]}
    assert kept["h100-0-r0"] == "nvidia_h100_sxm"
    assert moved.summary["completed"] == same.summary["completed"]  # the outage lost the same
    # its requests after the re-admission ran at another speed: a different busy time there
    busy = {r["replica_id"]: r["busy_fraction"] for r in moved.summary["per_replica"]}
    busy_same = {r["replica_id"]: r["busy_fraction"] for r in same.summary["per_replica"]}
    assert busy["h100-0-r0"] != busy_same["h100-0-r0"]
    # before the outage both runs are the same run: the first requests finish alike
    first = slice(0, 50)
    assert np.array_equal(moved.finish_s[first], same.finish_s[first])


def test_a_replica_admitted_again_says_on_which_type() -> None:
    from npucenter.fleet.placement import place_fleet
    from npucenter.sim.jobs import simulate_jobs

    spec = fleet_spec_from_mapping(
        {
            "servers": [{"device": "h100", "count": 1, "cards_per_server": 8}],
            "services": [
                {"model": "llama-3.1-8b", "device": "h100", "replicas": 8, "tenant": "acme"}
            ],
            "jobs": [
                {
                    "name": "lora",
                    "tenant": "kaist",
                    "device": "h100",
                    "cards": 4,
                    "arrival_s": 100.0,
                    "duration_s": 50.0,
                }
            ],
            "tenants": {
                "acme": {"cohort": "c", "priority": "production", "nominal_cards": {"h100": 4}},
                "kaist": {"cohort": "c", "priority": "research", "nominal_cards": {"h100": 4}},
            },
        }
    )
    outages = simulate_jobs(spec, place_fleet(spec)).outages
    assert len(outages) == 4
    assert {(o.up_s, o.device_type) for o in outages} == {(150.0, "h100")}
    summary = simulate_jobs(spec, place_fleet(spec)).summary(spec, horizon_s=0.0)
    assert {o["device_type"] for o in summary["replica_outages"]} == {"h100"}
