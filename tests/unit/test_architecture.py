"""The layers contract covers every package, and docs/architecture.md draws the same layers."""

from __future__ import annotations

import pkgutil
import tomllib
from pathlib import Path

import npucenter

ROOT = Path(__file__).resolve().parents[2]


def _top_level_names() -> set[str]:
    return {m.name for m in pkgutil.iter_modules(npucenter.__path__) if m.name != "__main__"}


def _layers() -> list[set[str]]:
    doc = tomllib.loads((ROOT / "pyproject.toml").read_text())
    (contract,) = [
        c
        for c in doc["tool"]["importlinter"]["contracts"]
        if c["type"] == "layers" and c["name"].startswith("Layers:")
    ]
    return [
        {name.strip().removeprefix("npucenter.") for name in layer.split("|")}
        for layer in contract["layers"]
    ]


def test_every_package_and_root_module_is_in_one_layer() -> None:
    placed = [name for layer in _layers() for name in layer]
    assert len(placed) == len(set(placed)), "a package is in two layers"
    assert set(placed) == _top_level_names()


def test_the_architecture_page_draws_every_package_in_its_layer() -> None:
    page = (ROOT / "docs" / "architecture.md").read_text()
    drawing = page.split("## Layers", 1)[1].split("```")[1]  # the first fenced block there
    drawn = [
        {name.strip() for name in line.split("  ")[1].split("|")}
        for line in drawing.splitlines()
        if line.startswith("  ") and not line.startswith("   ")
    ]
    assert drawn == _layers()


def test_no_module_imports_one_that_imports_it_back_at_run_time() -> None:
    # type-only imports (under TYPE_CHECKING) may point back; a run-time circle may not
    import grimp

    graph = grimp.build_graph("npucenter", exclude_type_checking_imports=True)
    circles = [
        (module, other)
        for module in graph.modules
        for other in graph.find_modules_directly_imported_by(module)
        if module < other and graph.chain_exists(importer=other, imported=module)
    ]
    assert circles == [], "modules that import each other (directly or through others)"
