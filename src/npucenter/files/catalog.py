"""Reading user catalog files (TOML or YAML) at the edge, then applying them to the catalog.

A user catalog adds devices and models or overrides fields of shipped ones; overridden figures
are shown as assumptions in every output that uses them. Files are looked up in the user catalog
directory (``<user config dir>/npucenter/catalog/*.toml|*.yaml``), in ``NPUCENTER_CATALOG``
(paths separated by ``os.pathsep``) and in the ``--catalog`` paths, in that order.

Example (``atom.toml``)::

    [[devices]]
    id = "rebellions_atom"
    memory_bandwidth_gbps = 256   # from your own measurement or a source you trust
    tdp_w = 130
    source = "lab measurement 2026-11, card SN ..."
"""

from __future__ import annotations

import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from platformdirs import user_config_dir

from npucenter.catalog import Catalog, default_catalog
from npucenter.errors import InvalidConfigError, NotFoundError
from npucenter.settings import catalog_paths_from_env

__all__ = ["load_catalog", "read_catalog_file", "user_catalog_dir"]


def user_catalog_dir() -> Path:
    """The directory whose ``*.toml``/``*.yaml`` files are always applied."""
    return Path(user_config_dir("npucenter")) / "catalog"


def read_catalog_file(path: Path) -> dict[str, Any]:
    """Parse one user catalog file; errors name the file and what is wrong."""
    if not path.is_file():
        raise NotFoundError("catalog file", str(path))
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix == ".toml":
            doc: Any = tomllib.loads(text)
        elif path.suffix in (".yaml", ".yml"):
            doc = yaml.safe_load(text) or {}
        else:
            raise InvalidConfigError("catalog file", str(path), "must end in .toml, .yaml or .yml")
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
        raise InvalidConfigError("catalog file", str(path), f"cannot be parsed: {exc}") from exc
    if not isinstance(doc, dict):
        raise InvalidConfigError("catalog file", str(path), "top level must be a table/mapping")
    return doc


def load_catalog(paths: Sequence[str | Path] = (), *, include_user_dir: bool = True) -> Catalog:
    """The shipped catalog with the user catalog directory, NPUCENTER_CATALOG and ``paths`` applied."""
    files: list[Path] = []
    if include_user_dir and user_catalog_dir().is_dir():
        files += sorted(
            p for p in user_catalog_dir().iterdir() if p.suffix in (".toml", ".yaml", ".yml")
        )
    files += catalog_paths_from_env()
    files += [Path(p) for p in paths]
    if not files:
        return default_catalog()
    docs = []
    for path in files:
        doc = read_catalog_file(path)
        try:
            docs.append(doc)
            default_catalog().with_documents([doc])
        except InvalidConfigError as exc:
            raise InvalidConfigError(f"{path}: {exc.field}", exc.value, exc.reason) from exc
    return default_catalog().with_documents(docs)
