"""Read each replica's engine metrics: KV-cache use (routing) and power (metering).

Engines speak vLLM's metric names (``vllm:kv_cache_usage_perc``); the virtual engine adds its
modelled energy counter ``npucenter:energy_joules_total``, whose rate between two scrapes is the
replica's average power. Real NPUs' power comes from telemetry the same way once exported.
"""

from __future__ import annotations

import logging

import httpx

from npucenter.gateway.pool import Replica

__all__ = ["ReplicaReading", "parse_engine_metrics", "scrape_replica"]

log = logging.getLogger(__name__)

_KV = "vllm:kv_cache_usage_perc"
_ENERGY = "npucenter:energy_joules_total"
_POWER = "npucenter:power_watts"
_IDLE_POWER = "npucenter:idle_power_watts"


class ReplicaReading:
    """The figures read from one scrape (None: not exported by this engine)."""

    __slots__ = ("energy_j", "idle_power_w", "kv_usage_fraction", "power_w")

    def __init__(self) -> None:
        self.kv_usage_fraction: float | None = None
        self.energy_j: float | None = None
        self.power_w: float | None = None
        self.idle_power_w: float | None = None


def parse_engine_metrics(text: str) -> ReplicaReading:
    """Pick the figures out of a Prometheus exposition text (summed over label sets)."""
    reading = ReplicaReading()
    for line in text.splitlines():
        if not line or line[0] == "#":
            continue
        head, _, value_text = line.rpartition(" ")
        name = head.split("{", 1)[0].strip()
        try:
            value = float(value_text)
        except ValueError:
            continue
        if name == _KV:
            reading.kv_usage_fraction = max(reading.kv_usage_fraction or 0.0, value)
        elif name == _ENERGY:
            reading.energy_j = (reading.energy_j or 0.0) + value
        elif name == _IDLE_POWER:
            reading.idle_power_w = (reading.idle_power_w or 0.0) + value
        elif name == _POWER:
            reading.power_w = (reading.power_w or 0.0) + value
    return reading


async def scrape_replica(
    client: httpx.AsyncClient, replica: Replica, now_s: float, last: dict[str, tuple[float, float]]
) -> None:
    """Scrape ``replica`` once and apply what it says (errors are logged, never raised).

    ``last`` maps replica id to its previous (time, energy) so power is the energy's rate.
    """
    try:
        resp = await client.get(replica.endpoint.base_url.rstrip("/") + "/metrics", timeout=2.0)
        resp.raise_for_status()
    except httpx.HTTPError as exc:
        log.debug("scrape of %s failed: %r", replica.replica_id, exc)
        return
    reading = parse_engine_metrics(resp.text)
    if reading.kv_usage_fraction is not None:
        replica.kv_usage_fraction = reading.kv_usage_fraction
    if reading.idle_power_w is not None:
        replica.idle_power_w = reading.idle_power_w
    if reading.energy_j is not None:
        prev = last.get(replica.replica_id)
        last[replica.replica_id] = (now_s, reading.energy_j)
        if prev is not None and now_s > prev[0] and reading.energy_j >= prev[1]:
            replica.meter.set_power_w((reading.energy_j - prev[1]) / (now_s - prev[0]))
    elif reading.power_w is not None:
        replica.meter.set_power_w(reading.power_w)
