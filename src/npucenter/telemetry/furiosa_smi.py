"""FuriosaAI RNGD cards through ``furiosa-smi info`` (format: docs/engines.md, tests/testdata).

The table's columns are found by header name (``Arch``, ``Device``, ``Temp.``, ``Power``,
``PCI-BDF``), so releases that add columns (``PERT``) parse alike.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from npucenter.errors import UpstreamError
from npucenter.telemetry.base import (
    TELEMETRY,
    DiscoveredCard,
    PowerSample,
    catalog_memory_gb,
    run_tool,
)
from npucenter.telemetry.table import parse_box_tables, parse_number

__all__ = ["FuriosaSmiTelemetry", "parse_furiosa_smi_info"]

Runner = Callable[[list[str]], Awaitable[str]]


def parse_furiosa_smi_info(text: str) -> tuple[DiscoveredCard, ...]:
    """Cards from ``furiosa-smi info`` output; raises UpstreamError if no device table is found."""
    for table in parse_box_tables(text):
        if table and "Device" in table[0] and "Power" in table[0]:
            return tuple(_card(row) for row in table)
    if "No devices" in text or not text.strip():
        return ()
    raise UpstreamError("furiosa-smi info printed no device table", details={"output": text[:500]})


def _card(row: dict[str, str]) -> DiscoveredCard:
    arch = row.get("Arch", "rngd").lower()
    device = row["Device"]
    index = int(device.removeprefix("npu")) if device.removeprefix("npu").isdigit() else -1
    return DiscoveredCard(
        device_type=arch,
        index=index,
        name=f"{arch.upper()} {device}",
        memory_gb=catalog_memory_gb(arch),
        power_w=parse_number(row.get("Power", "")),
        temperature_c=parse_number(row.get("Temp.", row.get("Temp", ""))),
        pci_bdf=row.get("PCI-BDF") or None,
        source="furiosa-smi",
    )


class FuriosaSmiTelemetry:
    """Reads RNGD cards with the ``furiosa-smi`` CLI (``runner`` is injectable for tests)."""

    name = "furiosa-smi"

    def __init__(self, *, runner: Runner = run_tool) -> None:
        self._run = runner

    async def discover(self) -> tuple[DiscoveredCard, ...]:
        """Every RNGD card ``furiosa-smi info`` lists."""
        return parse_furiosa_smi_info(await self._run(["furiosa-smi", "info"]))

    async def sample(self) -> tuple[PowerSample, ...]:
        """Power of every card (furiosa-smi has no energy counter)."""
        return tuple(
            PowerSample(source_id=f"npu{c.index}", device_type=c.device_type, power_w=c.power_w)
            for c in await self.discover()
            if c.power_w is not None
        )


TELEMETRY.add("furiosa-smi", FuriosaSmiTelemetry, aliases=("rngd",))
