"""Fleet-file services that accept several device types (``fallback_devices:``): parsing,
errors that name the field, and the twin placing each replica on the first type with quota and
room through the live center's admission policy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from npucenter.cli.main import app
from npucenter.errors import CapacityUnavailableError, InvalidConfigError
from npucenter.fleet import fleet_from_spec
from npucenter.fleet.placement import fleet_admission, place_fleet
from npucenter.fleet.spec import fleet_spec_from_mapping
from npucenter.policy.admission import PendingReason

ROOT = Path(__file__).resolve().parents[3]
SERVERS = [
    {"device": "rngd", "count": 1, "cards_per_server": 8},
    {"device": "atom", "count": 1, "cards_per_server": 4},
    {"device": "h100", "count": 1, "cards_per_server": 8},
]
FULL_RNGD = {"service": "code", "model": "llama-3.1-8b", "device": "rngd", "replicas_per_server": 8}


def _chat(**more: Any) -> dict[str, Any]:
    return {
        "service": "chat",
        "model": "llama-3.1-8b",
        "device": "rngd",
        "fallback_devices": ["atom", "h100"],
        "replicas": 6,
        **more,
    }


def _fleet(*services: dict[str, Any], **extra: Any) -> Any:
    return fleet_spec_from_mapping({"servers": SERVERS, "services": list(services), **extra})


def test_a_service_lists_device_types_in_order_and_a_single_device_still_works() -> None:
    spec = _fleet(FULL_RNGD, _chat())
    code, chat = spec.deployments
    assert code.devices == ("rngd",) and code.fallback_devices == ()
    assert chat.devices == ("rngd", "atom", "h100")
    (group,) = [s for s in fleet_from_spec(spec).services if s.service == "chat"]
    assert group.device_ids == ("rngd", "atom", "h100")
    assert group.deployment_name == "chat-rngd"  # named after its first type, as before


def test_with_rngd_full_the_twin_places_replicas_on_atom_then_h100_in_order() -> None:
    spec = _fleet(FULL_RNGD, _chat())
    placement = place_fleet(spec)
    chat = [r for r in placement.replicas if r.deployment_index == 1]
    by_workload = sorted(chat, key=lambda r: r.workload_id)  # the file's (submission) order
    # the 4 ATOM cards first, then H100 for the rest: RNGD has no room
    assert [r.device_type for r in by_workload] == ["atom"] * 4 + ["h100"] * 2
    assert placement.unused_cards == {"rngd": 0, "atom": 0, "h100": 6}
    assert placement.devices_by_service(spec) == {
        "code": {"rngd": 8},
        "chat": {"rngd": 0, "atom": 4, "h100": 2},
    }
    # the same decision as the policy object the live center runs, on the same snapshot
    setup = fleet_admission(spec)
    (pending,) = {w.fallback_device_types for w in setup.pending}
    assert pending == ("atom", "h100")


def test_room_on_the_first_type_keeps_replicas_there() -> None:
    spec = _fleet({**FULL_RNGD, "replicas_per_server": 5}, _chat())
    got = place_fleet(spec).devices_by_service(spec)["chat"]
    assert got == {"rngd": 3, "atom": 3, "h100": 0}


def test_a_type_without_quota_is_skipped_first_with_quota_and_room() -> None:
    # chat's tenant has quota on RNGD and H100 only: ATOM has room but no quota for it
    tenants = {"acme": {"nominal_cards": {"rngd": 8, "h100": 8}}}
    spec = _fleet(FULL_RNGD, _chat(tenant="acme"), tenants=tenants)
    assert place_fleet(spec).devices_by_service(spec)["chat"] == {"rngd": 0, "atom": 0, "h100": 6}


def test_replicas_that_fit_no_listed_type_fail_with_the_policys_reasons() -> None:
    tenants = {"acme": {"nominal_cards": {"rngd": 8, "atom": 4}}}  # no H100 quota
    spec = _fleet(FULL_RNGD, _chat(tenant="acme"), tenants=tenants)
    with pytest.raises(CapacityUnavailableError) as info:
        place_fleet(spec)
    assert len(info.value.attempts) == 2
    assert {a["reason"] for a in info.value.attempts} <= {r.value for r in PendingReason}


@pytest.mark.parametrize(
    ("entry", "field"),
    [
        (_chat(fallback_devices=["tpu"]), "services.fallback_devices"),  # no such server group
        (_chat(fallback_devices=["atom", "atom"]), "services.fallback_devices"),
        (_chat(fallback_devices=["atom", "H100", "h100"]), "services.fallback_devices"),
        (_chat(fallback_devices=["rngd", "h100"]), "services.fallback_devices"),  # its device
        (_chat(fallback_devices=[]), "services.fallback_devices"),
        (_chat(fallback_devices="atom"), "services.fallback_devices"),
        (_chat(fallback_devices=["atom", 3]), "services.fallback_devices"),
        (_chat(device=["rngd", "atom"]), "services.device"),
        (
            {**_chat(), "replicas": None, "replicas_per_server": 1},  # pinned: not fungible
            "services.fallback_devices",
        ),
        (_chat(tp=8), "services.fallback_devices"),  # an ATOM server has 4 cards
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_bad_device_lists_name_the_field(entry: dict[str, Any], field: str) -> None:
    entry = {k: v for k, v in entry.items() if v is not None}
    with pytest.raises(InvalidConfigError) as info:
        _fleet(entry)
    assert info.value.field == field


def test_more_replicas_than_all_listed_types_hold_is_refused_when_parsed() -> None:
    with pytest.raises(InvalidConfigError) as info:
        _fleet(FULL_RNGD, _chat(replicas=13))  # 4 ATOM + 8 H100 cards left
    assert info.value.field == "services"


@pytest.mark.parametrize(
    ("fallbacks", "field"),
    [
        ([], "jobs.fallback_devices"),
        ("rngd", "jobs.fallback_devices"),
        (["tpu"], "jobs.fallback_devices"),
    ],
)
def test_bad_job_device_lists_name_the_field(fallbacks: Any, field: str) -> None:
    job = {"name": "eval", "tenant": "kaist", "device": "h100", "duration_s": 60}
    with pytest.raises(InvalidConfigError) as info:
        _fleet(FULL_RNGD, jobs=[{**job, "fallback_devices": fallbacks}])
    assert info.value.field == field


def test_the_cli_exits_non_zero_with_one_line_naming_the_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        yaml.safe_dump({"servers": SERVERS, "services": [_chat(fallback_devices=["atom", "atom"])]})
    )
    result = CliRunner().invoke(app, ["simulate", "--fleet", str(bad), "-n", "10"])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "services.fallback_devices" in lines[0] and "atom" in lines[0]


def test_the_example_fleet_places_chat_on_rngd_then_l40s_then_h100() -> None:
    spec = fleet_spec_from_mapping(
        yaml.safe_load((ROOT / "examples/fleets/fungible.yaml").read_text())
    )
    got = place_fleet(spec).devices_by_service(spec)
    assert got == {"code": {"rngd": 6}, "chat": {"rngd": 2, "l40s": 8, "h100": 2}}
