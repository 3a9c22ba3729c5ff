"""The fleet file: parsing, validation, replica placement."""

from __future__ import annotations

from pathlib import Path

import pytest

from npucenter.errors import InvalidConfigError, NotFoundError
from npucenter.fleet import default_fleet, fleet_from_dict, load_fleet


def test_default_fleet_has_two_rngd_servers_and_one_h100_server() -> None:
    fleet = default_fleet()
    groups = {g.device_id: g for g in fleet.servers}
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
        {"servers": [{"device": "rngd"}]},
        {"servers": [{"device": "rngd", "cards_per_server": 8}], "bogus": 1},
        {"servers": [{"device": "rngd", "cards_per_server": "x"}]},
    ],
)
def test_invalid_fleets_raise_config_errors(data: dict[str, object]) -> None:
    with pytest.raises(InvalidConfigError):
        fleet_from_dict(data)


def test_service_on_a_device_without_servers() -> None:
    with pytest.raises(NotFoundError):
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
            "slo": "interactive",
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
