"""Reading a fleet file (YAML) for ``npucenter simulate``, ``plan`` and ``up``.

The one fleet format is parsed by the pure :func:`npucenter.fleet.fleet_spec_from_mapping`; this
module only opens the file, reports a missing or malformed one, and resolves the ``catalog:``
paths next to it.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

from npucenter.errors import InvalidConfigError, NotFoundError
from npucenter.fleet import Fleet, FleetSpec, fleet_from_spec, fleet_spec_from_mapping

__all__ = ["load_fleet", "load_fleet_spec", "read_fleet_file"]


def read_fleet_file(path: str | Path) -> Any:
    """The parsed YAML document of a fleet file ({} when empty)."""
    path = Path(path)
    if not path.is_file():
        raise NotFoundError("fleet file", str(path))
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise InvalidConfigError("fleet file", str(path), f"not valid YAML: {exc}") from exc


def load_fleet_spec(path: str | Path, *, require_services: bool = True) -> FleetSpec:
    """Read and parse a fleet file, its ``catalog:`` paths resolved next to it.

    ``require_services=False`` accepts a fleet of servers only (the live center's case).
    """
    path = Path(path)
    spec = fleet_spec_from_mapping(read_fleet_file(path), require_services=require_services)
    resolved = tuple(str((path.parent / c).resolve()) for c in spec.catalog_files)
    return replace(spec, catalog_files=resolved)


def load_fleet(path: str | Path) -> Fleet:
    """The live center's view of a fleet file (servers only are enough)."""
    return fleet_from_spec(load_fleet_spec(path, require_services=False))
