"""Parse the box-drawn tables vendor tools print (``+----+`` rules, ``|`` separated cells)."""

from __future__ import annotations

import re

__all__ = ["parse_box_tables", "parse_number", "parse_quantity_gb"]

_UNITS = {
    "b": 1.0,
    "kb": 1e3,
    "mb": 1e6,
    "gb": 1e9,
    "tb": 1e12,
    "kib": 2.0**10,
    "mib": 2.0**20,
    "gib": 2.0**30,
    "tib": 2.0**40,
}


def parse_box_tables(text: str) -> list[list[dict[str, str]]]:
    """Every table in ``text``: rows as {header: cell}, headers from each table's first row.

    A table is a run of ``|``-rows between ``+---+`` (or ``+===+``) rules; a row whose cell
    count differs from the header (a title banner) starts a new table.
    """
    tables: list[list[dict[str, str]]] = []
    header: list[str] | None = None
    rows: list[dict[str, str]] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line.startswith("|"):
            if line and not line.startswith("+") and header is not None:
                tables.append(rows)
                header, rows = None, []
            continue
        cells = [c.strip() for c in line.strip("|").split("|")]
        if header is None or len(cells) != len(header):
            if header is not None and rows:
                tables.append(rows)
            header, rows = (cells if len(cells) > 1 else None), []
            continue
        rows.append(dict(zip(header, cells, strict=True)))
    if header is not None and rows:
        tables.append(rows)
    return tables


def parse_quantity_gb(text: str) -> float | None:
    """``"15.7GiB"`` -> 16.86 (GB, 1e9 bytes); ``"0.0B"`` -> 0.0; None if unparsable."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([KMGT]?i?B)\s*", text, flags=re.IGNORECASE)
    if not m:
        return None
    return float(m.group(1)) * _UNITS[m.group(2).lower()] / 1e9


def parse_number(text: str) -> float | None:
    """The first number in ``text`` (``"38.40 W"`` -> 38.4, ``"40.98°C"`` -> 40.98)."""
    m = re.search(r"-?[0-9]*\.?[0-9]+", text)
    return float(m.group(0)) if m else None
