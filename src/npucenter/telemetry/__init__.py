"""Telemetry: device discovery and power from NVML, furiosa-smi, rbln-smi and virtual engines.

Every reader registers in :data:`TELEMETRY` and satisfies :class:`Telemetry`;
:func:`discover_cards` asks every real reader and keeps what answers.
"""

from __future__ import annotations

from npucenter.errors import NotSupportedError
from npucenter.telemetry.base import TELEMETRY, DiscoveredCard, PowerSample, Telemetry
from npucenter.telemetry.furiosa_smi import FuriosaSmiTelemetry, parse_furiosa_smi_info
from npucenter.telemetry.nvml import NvmlTelemetry
from npucenter.telemetry.rbln_smi import RblnSmiTelemetry, parse_rbln_smi
from npucenter.telemetry.virtual import VirtualTelemetry, parse_virtual_metrics

__all__ = [
    "TELEMETRY",
    "DiscoveredCard",
    "FuriosaSmiTelemetry",
    "NvmlTelemetry",
    "PowerSample",
    "RblnSmiTelemetry",
    "Telemetry",
    "VirtualTelemetry",
    "discover_cards",
    "parse_furiosa_smi_info",
    "parse_rbln_smi",
    "parse_virtual_metrics",
]


async def discover_cards(
    readers: tuple[Telemetry, ...] | None = None,
) -> tuple[DiscoveredCard, ...]:
    """Cards from every reader that works on this node (NVML, furiosa-smi, rbln-smi).

    Readers that are not supported here (tool or library missing) are skipped.
    """
    if readers is None:
        readers = (NvmlTelemetry(), FuriosaSmiTelemetry(), RblnSmiTelemetry())
    cards: list[DiscoveredCard] = []
    for reader in readers:
        try:
            cards.extend(await reader.discover())
        except NotSupportedError:
            continue
    return tuple(cards)
