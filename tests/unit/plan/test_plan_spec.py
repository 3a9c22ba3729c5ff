"""Parsing and validating plan specs."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from npucenter.errors import InvalidConfigError
from npucenter.plan.spec import parse_plan_spec

BASE: dict[str, Any] = {
    "name": "t",
    "power": {"cap_w": 100_000, "price_usd_per_kwh": 0.1, "price_source": "somewhere"},
    "devices": [
        {"device": "rngd", "server_cost_usd_per_hour": 5.0},
        {"device": "h100", "server_cost_usd_per_hour": 20.0, "owned_servers": 1},
    ],
    "services": [
        {
            "name": "chat",
            "model": "llama-3.1-8b",
            "traffic": {"rate_rps": 10, "mean_input_tokens": 500, "mean_output_tokens": 100},
            "slo": {"ttft_s": 1.0, "tpot_s": 0.1},
        }
    ],
}


def _spec(**changes: Any) -> dict[str, Any]:
    data = copy.deepcopy(BASE)
    data.update(changes)
    return data


def test_parses_defaults_and_inventory() -> None:
    spec = parse_plan_spec(_spec())
    assert spec.services[0].precisions == ("fp8",)
    assert spec.services[0].tp_options == (1,)
    assert spec.devices[1].min_servers == 1
    assert spec.objective == "cost"
    assert spec.headroom_for("chat") == spec.headroom_fraction


def test_unknown_key_is_rejected_with_its_path() -> None:
    data = _spec()
    data["services"][0]["slo"]["tpot_ms"] = 100
    with pytest.raises(InvalidConfigError) as info:
        parse_plan_spec(data)
    assert info.value.field == "services[chat].slo.tpot_ms"


def test_missing_required_field_names_it() -> None:
    data = _spec()
    del data["power"]["cap_w"]
    with pytest.raises(InvalidConfigError) as info:
        parse_plan_spec(data)
    assert info.value.field == "spec.power.cap_w"


def test_synthetic_traffic_needs_lengths() -> None:
    data = _spec()
    del data["services"][0]["traffic"]["mean_output_tokens"]
    with pytest.raises(InvalidConfigError) as info:
        parse_plan_spec(data)
    assert info.value.field == "traffic.mean_output_tokens"


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("power", "cap_w"), -1),
        (("power", "pue"), 0.9),
        (("objective",), "cheapest"),
        (("headroom_fraction",), -0.1),
    ],
)
def test_bad_values_raise(path: tuple[str, ...], value: Any) -> None:
    data = _spec()
    target = data
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(InvalidConfigError):
        parse_plan_spec(data)


def test_overrides_need_a_source() -> None:
    data = _spec()
    data["devices"].append(
        {"device": "atom", "server_cost_usd_per_hour": 3.0, "overrides": {"tdp_w": 100}}
    )
    with pytest.raises(InvalidConfigError) as info:
        parse_plan_spec(data)
    assert info.value.field == "device.override_source"


def test_overrides_are_listed_as_assumptions() -> None:
    data = _spec()
    data["devices"].append(
        {
            "device": "atom",
            "server_cost_usd_per_hour": 3.0,
            "cards_per_server": 8,
            "overrides": {"tdp_w": 100, "memory_bandwidth_gbps": 256},
            "override_source": "assumption: test figure",
        }
    )
    spec = parse_plan_spec(data)
    lines = spec.assumption_lines()
    assert any("atom" in line and "tdp_w=100" in line for line in lines)
    assert any("0.1 USD/kWh" in line and "somewhere" in line for line in lines)


def test_disaggregation_devices_must_be_in_the_spec() -> None:
    data = _spec(disaggregation=[{"prefill": "l40s", "decode": "rngd"}])
    with pytest.raises(InvalidConfigError) as info:
        parse_plan_spec(data)
    assert info.value.field == "disaggregation.device"


def test_duplicate_service_names_are_rejected() -> None:
    data = _spec()
    data["services"].append(copy.deepcopy(data["services"][0]))
    with pytest.raises(InvalidConfigError) as info:
        parse_plan_spec(data)
    assert info.value.field == "services"


def test_precision_accepts_a_list() -> None:
    data = _spec()
    data["services"][0]["precision"] = ["fp8", "int8"]
    data["services"][0]["tp"] = [1, 2]
    spec = parse_plan_spec(data)
    assert spec.services[0].precisions == ("fp8", "int8")
    assert spec.services[0].tp_options == (1, 2)
