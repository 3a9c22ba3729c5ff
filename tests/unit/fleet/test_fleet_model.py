"""The fleet file: one format (the simulator's parser), validation, replica placement."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from npucenter.errors import InvalidConfigError, NotFoundError
from npucenter.files.fleet import load_fleet
from npucenter.fleet import default_fleet, fleet_from_dict
from npucenter.fleet.spec import fleet_spec_from_mapping

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "fleets"
# Fleet files (atom-override.yaml beside them is a user catalog file, not a fleet).
FLEET_FILES = sorted(p for p in EXAMPLES.glob("*.yaml") if "servers:" in p.read_text())


def test_default_fleet_has_two_rngd_servers_and_one_h100_server() -> None:
    fleet = default_fleet()
    groups = {g.device: g for g in fleet.servers}
    assert groups["rngd"].num_servers == 2 and groups["rngd"].cards_per_server == 8
    assert groups["h100"].num_servers == 1
    replicas = fleet.replicas()
    assert len({r.replica_id for r in replicas}) == len(replicas)
    assert {r.server_id for r in replicas} == {"rngd-0", "rngd-1", "h100-0"}


def test_replicas_take_distinct_cards(tmp_path: Path) -> None:
    path = tmp_path / "fleet.yaml"
    path.write_text(
        "servers: [{device: rngd, count: 1, cards_per_server: 8}]\n"
        "services:\n"
        "  - {model: a, device: rngd, tp: 2, replicas_per_server: 2}\n"
        "  - {model: b, device: rngd, tp: 4}\n"
    )
    replicas = load_fleet(path).replicas()
    cards = [c for r in replicas for c in r.card_ids]
    assert sorted(cards) == list(range(8))


@pytest.mark.parametrize(
    "data",
    [
        {"servers": []},
        {"servers": [{"device": "rngd", "cards_per_server": 0}]},
        {
            "servers": [{"device": "rngd", "cards_per_server": 8}],
            "services": [{"model": "m", "device": "rngd", "tp": 9}],
        },
        {"servers": [{"device": "rngd", "count": 0}]},  # (cards_per_server defaults to 8)
        {"servers": [{"device": "rngd", "cards_per_server": 8}], "bogus": 1},
        {"servers": [{"device": "rngd", "cards_per_server": "x"}]},
    ],
)
def test_invalid_fleets_raise_config_errors(data: dict[str, object]) -> None:
    with pytest.raises(InvalidConfigError):
        fleet_from_dict(data)


def test_service_on_a_device_without_servers() -> None:
    # The one format's parser (npucenter.fleet.spec) names the key (was NotFoundError).
    with pytest.raises(InvalidConfigError, match="no server group"):
        fleet_from_dict(
            {
                "servers": [{"device": "rngd", "cards_per_server": 8}],
                "services": [{"model": "m", "device": "h100"}],
            }
        )


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError):
        load_fleet(tmp_path / "none.yaml")


def test_a_simulator_fleet_file_is_accepted() -> None:
    fleet = fleet_from_dict(
        {
            "name": "sim",
            "slo": "mlperf-llama-3.1-8b-interactive",  # validated now (one parser)
            "routing": {"chat": "npu-first"},
            "servers": [{"device": "rngd", "count": 1, "cards_per_server": 8}],
            "services": [
                {
                    "service": "chat",
                    "model": "m",
                    "device": "rngd",
                    "max_num_seqs": 32,
                    "role": "both",
                }
            ],
        }
    )
    assert fleet.replicas()[0].max_num_seqs == 32


def test_unknown_service_keys_are_rejected() -> None:
    with pytest.raises(InvalidConfigError):
        fleet_from_dict(
            {
                "servers": [{"device": "rngd", "cards_per_server": 8}],
                "services": [{"model": "m", "device": "rngd", "gpus": 1}],
            }
        )


def test_the_examples_are_fleet_files() -> None:
    assert {p.name for p in FLEET_FILES} >= {
        "gwangju-80-20.yaml",
        "gwangju-atom.yaml",
        "two-services.yaml",
        "disagg-h100-prefill-rngd-decode.yaml",
    }


@pytest.mark.parametrize("path", FLEET_FILES, ids=lambda p: p.name)
def test_every_example_is_read_by_the_simulator_and_the_live_center(path: Path) -> None:
    spec = fleet_spec_from_mapping(yaml.safe_load(path.read_text()))
    fleet = load_fleet(path)
    assert fleet.name == spec.name
    assert [(g.device, g.num_servers, g.cards_per_server) for g in fleet.servers] == [
        (p.device, p.num_servers, p.cards_per_server) for p in spec.servers
    ]
    assert len(fleet.services) == len(spec.deployments)
    assert len({s.deployment_name for s in fleet.services}) == len(fleet.services)
    placed = fleet.replicas()  # per-server entries; `replicas:` totals are left to admission
    pinned = [s for s in fleet.services if s.num_replicas is None]
    assert len(placed) == sum(fleet.num_replicas(s) for s in pinned)
    cards = [(r.server_id, c) for r in placed for c in r.card_ids]
    assert len(cards) == len(set(cards))  # no card twice
    for r in placed:
        assert max(r.card_ids) < fleet.server_group(r.device_id).cards_per_server


def test_tariff_is_an_optional_field_of_the_one_format() -> None:
    data = {
        "servers": [{"device": "rngd", "cards_per_server": 8}],
        "services": [{"model": "m", "device": "rngd"}],
        "tariff_usd_per_device_hour": {"rngd": 1.5},
    }
    assert fleet_spec_from_mapping(data).tariff_usd_per_device_hour == {"rngd": 1.5}
    assert fleet_from_dict(data).tariff_usd_per_device_hour == {"rngd": 1.5}
    with pytest.raises(InvalidConfigError, match="tariff"):
        fleet_from_dict({**data, "tariff_usd_per_device_hour": {"rngd": -1}})


def test_services_become_named_deployments_with_the_service_as_alias() -> None:
    fleet = fleet_from_dict(
        {
            "servers": [{"device": "rngd", "count": 2, "cards_per_server": 8}],
            "services": [
                {"service": "chat", "model": "llama-3.1-8b", "device": "rngd", "tp": 2},
                {"model": "qwen2.5-7b", "device": "rngd"},
            ],
        }
    )
    chat, qwen = fleet.services
    assert (chat.deployment_name, chat.alias) == ("chat-rngd", "chat")
    assert (qwen.deployment_name, qwen.alias) == ("qwen2.5-7b-rngd", None)
    assert [(r.replica_id, r.deployment) for r in fleet.replicas()] == [
        ("rngd-0-r0", "chat-rngd"),
        ("rngd-0-r2", "qwen2.5-7b-rngd"),
        ("rngd-1-r0", "chat-rngd"),
        ("rngd-1-r2", "qwen2.5-7b-rngd"),
    ]


def test_a_fleet_of_servers_only_runs_live_but_is_not_simulated() -> None:
    data = {"servers": [{"device": "h100", "cards_per_server": 8}]}
    fleet = fleet_from_dict(data)
    assert fleet.services == () and fleet.replicas() == () and fleet.num_cards == 8
    with pytest.raises(InvalidConfigError, match="at least one deployment"):
        fleet_spec_from_mapping(data)


def test_public_names_match_all() -> None:
    import npucenter.fleet as fleet
    from npucenter.fleet import jobs, model, placement, spec, tenants

    for mod in (fleet, jobs, model, placement, spec, tenants):
        for name in mod.__all__:
            assert hasattr(mod, name), (mod.__name__, name)
    assert not {"load_fleet", "yaml"} & set(vars(model)), "the fleet model does no I/O"


@pytest.mark.parametrize("path", FLEET_FILES, ids=lambda p: p.name)
def test_the_live_view_pins_replicas_where_the_twin_runs_them(path: Path) -> None:
    """One pinned layout: the live center's replicas are the twin's per-server running set."""
    from npucenter.fleet import fleet_admission

    fleet = load_fleet(path)
    twin = {(a.server_id, a.card_indices) for a in fleet_admission(fleet.spec).snapshot.running}
    assert {(r.server_id, r.card_ids) for r in fleet.replicas()} == twin
