"""Rebellions ATOM/REBEL cards through ``rbln-smi`` (or the older ``rbln-stat``).

Parses the "Device Information" table (``NPU``, ``Name``, ``Device``, ``PCI BUS ID``, ``Temp``,
``Power``, ``Memory(used/total)``, ``Util``); the ``Perf`` column of newer releases is ignored.
Product codes: ``RBLN-CA*`` are ATOM cards, ``RBLN-CR*`` REBEL (docs/engines.md).
"""

from __future__ import annotations

import shutil
from collections.abc import Awaitable, Callable

from npucenter.errors import UpstreamError
from npucenter.telemetry.base import TELEMETRY, DiscoveredCard, PowerSample, run_tool
from npucenter.telemetry.table import parse_box_tables, parse_number, parse_quantity_gb

__all__ = ["RblnSmiTelemetry", "parse_rbln_smi", "rbln_device_type"]

Runner = Callable[[list[str]], Awaitable[str]]


def rbln_device_type(product: str) -> str:
    """``RBLN-CA12`` -> ``atom``, ``RBLN-CR13`` -> ``rebel``, else the code lower-cased."""
    code = product.upper().removeprefix("RBLN-")
    if code.startswith("CA"):
        return "atom"
    if code.startswith("CR"):
        return "rebel"
    return product.lower()


def parse_rbln_smi(text: str) -> tuple[DiscoveredCard, ...]:
    """Cards from ``rbln-smi``/``rbln-stat`` output; UpstreamError if no device table is found."""
    for table in parse_box_tables(text):
        if table and "NPU" in table[0] and "Power" in table[0] and "Name" in table[0]:
            return tuple(_card(row) for row in table)
    if not text.strip():
        return ()
    raise UpstreamError("rbln-smi printed no device table", details={"output": text[:500]})


def _card(row: dict[str, str]) -> DiscoveredCard:
    used_gb = total_gb = None
    memory = next((v for k, v in row.items() if k.startswith("Memory")), "")
    if "/" in memory:
        used, total = memory.split("/", 1)
        used_gb, total_gb = parse_quantity_gb(used), parse_quantity_gb(total)
    util = parse_number(row.get("Util", ""))
    return DiscoveredCard(
        device_type=rbln_device_type(row["Name"]),
        index=int(row["NPU"]),
        name=row["Name"],
        memory_gb=total_gb,
        memory_used_gb=used_gb,
        power_w=parse_number(row.get("Power", "")),
        temperature_c=parse_number(row.get("Temp", "")),
        utilization_fraction=util / 100.0 if util is not None else None,
        pci_bdf=row.get("PCI BUS ID") or None,
        source="rbln-smi",
    )


class RblnSmiTelemetry:
    """Reads Rebellions cards with ``rbln-smi`` (falls back to ``rbln-stat``)."""

    name = "rbln-smi"

    def __init__(self, *, runner: Runner = run_tool) -> None:
        self._run = runner

    async def discover(self) -> tuple[DiscoveredCard, ...]:
        """Every card the tool lists."""
        tool = (
            "rbln-smi"
            if shutil.which("rbln-smi") or shutil.which("rbln-stat") is None
            else "rbln-stat"
        )
        return parse_rbln_smi(await self._run([tool]))

    async def sample(self) -> tuple[PowerSample, ...]:
        """Power of every card (the tool has no energy counter)."""
        return tuple(
            PowerSample(source_id=f"rbln{c.index}", device_type=c.device_type, power_w=c.power_w)
            for c in await self.discover()
            if c.power_w is not None
        )


TELEMETRY.add("rbln-smi", RblnSmiTelemetry, aliases=("rbln", "atom"))
