"""Modelled power of virtual engines, read from their ``/metrics`` (the fake of telemetry).

Each virtual replica exposes ``npucenter:power_watts`` and ``npucenter:energy_joules_total``
with ``device`` and ``tp`` labels; a replica of ``tp`` cards is reported as ``tp`` cards sharing
its power equally.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable

import httpx
from prometheus_client.parser import text_string_to_metric_families

from npucenter.errors import UpstreamError
from npucenter.telemetry.base import TELEMETRY, DiscoveredCard, PowerSample, catalog_memory_gb

__all__ = ["VirtualReading", "VirtualTelemetry", "parse_virtual_metrics"]

_POWER = "npucenter:power_watts"
_ENERGY = "npucenter:energy_joules"  # the parser strips the counter's _total


class VirtualReading:
    """What one virtual engine's ``/metrics`` says about its cards."""

    __slots__ = ("device", "energy_j", "power_w", "tp")

    def __init__(self, device: str, tp: int, power_w: float, energy_j: float | None) -> None:
        self.device = device
        self.tp = tp
        self.power_w = power_w
        self.energy_j = energy_j


def parse_virtual_metrics(text: str) -> VirtualReading:
    """Power, energy, device and TP from a virtual engine's Prometheus text."""
    power = energy = None
    device, tp = "virtual", 1
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == _POWER:
                power = sample.value
                device = sample.labels.get("device", device)
                tp = int(sample.labels.get("tp", tp))
            elif sample.name == _ENERGY + "_total":
                energy = sample.value
    if power is None:
        raise UpstreamError(f"no {_POWER} in the metrics", details={"metrics": text[:300]})
    return VirtualReading(device, tp, power, energy)


class VirtualTelemetry:
    """Reads virtual engines; ``endpoints`` is a list of base URLs or a callable giving them."""

    name = "virtual"

    def __init__(
        self,
        endpoints: Iterable[str] | Callable[[], Iterable[str]] = (),
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout_s: float = 2.0,
    ) -> None:
        self._endpoints = endpoints
        self._transport = transport
        self._timeout_s = timeout_s

    def _urls(self) -> list[str]:
        eps = self._endpoints() if callable(self._endpoints) else self._endpoints
        return [u.rstrip("/") for u in eps]

    async def _read_all(self) -> list[tuple[str, VirtualReading]]:
        async with httpx.AsyncClient(transport=self._transport, timeout=self._timeout_s) as c:

            async def one(url: str) -> tuple[str, VirtualReading]:
                try:
                    response = await c.get(url + "/metrics")
                    response.raise_for_status()
                except httpx.HTTPError as exc:
                    raise UpstreamError(f"cannot read {url}/metrics: {exc}") from exc
                return url, parse_virtual_metrics(response.text)

            return list(await asyncio.gather(*(one(u) for u in self._urls())))

    async def discover(self) -> tuple[DiscoveredCard, ...]:
        """``tp`` cards per virtual replica, each with its share of the modelled power."""
        cards: list[DiscoveredCard] = []
        for url, r in await self._read_all():
            for i in range(r.tp):
                cards.append(
                    DiscoveredCard(
                        device_type=r.device,
                        index=len(cards),
                        name=f"virtual {r.device} ({url} card {i})",
                        memory_gb=catalog_memory_gb(r.device),
                        power_w=r.power_w / r.tp,
                        source="virtual",
                    )
                )
        return tuple(cards)

    async def sample(self) -> tuple[PowerSample, ...]:
        """One sample per replica: its modelled power and energy counter."""
        return tuple(
            PowerSample(source_id=url, device_type=r.device, power_w=r.power_w, energy_j=r.energy_j)
            for url, r in await self._read_all()
        )


TELEMETRY.add("virtual", VirtualTelemetry)
