"""Reading a fleet file at the edge: missing and malformed files, catalog paths beside it."""

from __future__ import annotations

from pathlib import Path

import pytest

from npucenter.errors import InvalidConfigError, NotFoundError
from npucenter.files.fleet import load_fleet, load_fleet_spec, read_fleet_file

FLEET = """
name: lab
catalog: [extra.catalog.yaml]
servers:
  - {device: rngd, count: 1, cards_per_server: 4}
services:
  - {model: llama-3.1-8b, device: rngd}
"""


def test_catalog_paths_are_resolved_next_to_the_fleet_file(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "fleet.yaml"
    path.parent.mkdir()
    path.write_text(FLEET)
    spec = load_fleet_spec(path)
    assert spec.catalog_files == (str((path.parent / "extra.catalog.yaml").resolve()),)
    assert load_fleet(path).num_cards == 4


def test_a_missing_fleet_file_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError):
        read_fleet_file(tmp_path / "none.yaml")


def test_malformed_yaml_is_an_invalid_config(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("servers: [\n")
    with pytest.raises(InvalidConfigError):
        load_fleet(path)


def test_the_live_center_accepts_servers_only_but_a_simulation_needs_services(
    tmp_path: Path,
) -> None:
    path = tmp_path / "servers.yaml"
    path.write_text("servers: [{device: h100, count: 1}]\n")
    assert load_fleet(path).services == ()
    with pytest.raises(InvalidConfigError):
        load_fleet_spec(path)
