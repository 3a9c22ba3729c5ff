"""Read each replica's engine metrics: running, waiting and KV-cache use (routing), power (metering).

Each engine exports its scheduler state under its own names (:data:`ENGINE_METRICS`, each from the
engine's docs); the virtual engine speaks vLLM's and adds its modelled energy counter
``npucenter:energy_joules_total``, whose rate between two scrapes is the replica's average power.
Real NPUs' power comes from telemetry the same way once exported. An external server is scraped
with its upstream key.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import httpx

from npucenter.gateway.pool import Replica

__all__ = [
    "ENGINE_METRICS",
    "EngineMetricNames",
    "ReplicaReading",
    "apply_reading",
    "parse_engine_metrics",
    "scrape_replica",
]

log = logging.getLogger(__name__)

_ENERGY = "npucenter:energy_joules_total"
_POWER = "npucenter:power_watts"
_IDLE_POWER = "npucenter:idle_power_watts"


@dataclass(frozen=True, slots=True, kw_only=True)
class EngineMetricNames:
    """An engine's Prometheus names of its scheduler state (gauges; summed over label sets)."""

    running: tuple[str, ...]
    waiting: tuple[str, ...]
    kv_usage: tuple[str, ...]  # 0-1 (1 means 100 %), max over label sets
    source_url: str


#: Engine -> its metric names. vllm-rbln is vLLM with a hardware plug-in: vLLM's own names.
ENGINE_METRICS: dict[str, EngineMetricNames] = {
    "vllm": EngineMetricNames(
        running=("vllm:num_requests_running",),
        waiting=("vllm:num_requests_waiting",),
        # kv_cache_usage_perc since vLLM V1; gpu_cache_usage_perc in V0 releases
        kv_usage=("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"),
        source_url="https://docs.vllm.ai/en/latest/usage/metrics/",
    ),
    "furiosa-llm": EngineMetricNames(
        running=("furiosa_llm_num_requests_running",),
        waiting=("furiosa_llm_num_requests_waiting",),
        kv_usage=("furiosa_llm_kv_cache_usage_percent",),
        source_url="https://developer.furiosa.ai/latest/en/furiosa_llm/furiosa-llm-serve.html"
        "#monitoring-the-openai-compatible-server",
    ),
}
ENGINE_METRICS["vllm-rbln"] = ENGINE_METRICS["vllm"]
ENGINE_METRICS["virtual"] = ENGINE_METRICS["vllm"]

_RUNNING = {n for m in ENGINE_METRICS.values() for n in m.running}
_WAITING = {n for m in ENGINE_METRICS.values() for n in m.waiting}
_KV = {n for m in ENGINE_METRICS.values() for n in m.kv_usage}


class ReplicaReading:
    """The figures read from one scrape (None: not exported by this engine)."""

    __slots__ = (
        "energy_j",
        "idle_power_w",
        "kv_usage_fraction",
        "num_running",
        "num_waiting",
        "power_w",
    )

    def __init__(self) -> None:
        self.kv_usage_fraction: float | None = None
        self.num_running: float | None = None
        self.num_waiting: float | None = None
        self.energy_j: float | None = None
        self.power_w: float | None = None
        self.idle_power_w: float | None = None


def parse_engine_metrics(text: str) -> ReplicaReading:
    """Pick the figures out of a Prometheus exposition text (vLLM, furiosa-llm, vllm-rbln).

    Counts are summed over label sets (one per engine core of a data-parallel server); KV use
    is the largest over them.
    """
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
        if value != value:  # NaN: not measured yet
            continue
        if name in _KV:
            reading.kv_usage_fraction = max(reading.kv_usage_fraction or 0.0, value)
        elif name in _RUNNING:
            reading.num_running = (reading.num_running or 0.0) + value
        elif name in _WAITING:
            reading.num_waiting = (reading.num_waiting or 0.0) + value
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
    key = replica.endpoint.api_key
    headers = {"authorization": f"Bearer {key}"} if key else None
    try:
        resp = await client.get(
            replica.endpoint.base_url.rstrip("/") + "/metrics", timeout=2.0, headers=headers
        )
        resp.raise_for_status()
    except httpx.HTTPError as exc:
        log.debug("scrape of %s failed: %r", replica.replica_id, exc)
        return
    apply_reading(replica, parse_engine_metrics(resp.text), now_s, last)


def apply_reading(
    replica: Replica, reading: ReplicaReading, now_s: float, last: dict[str, tuple[float, float]]
) -> None:
    """Put one scrape's figures on the gateway's replica (routing state and power)."""
    if reading.kv_usage_fraction is not None:
        replica.kv_usage_fraction = reading.kv_usage_fraction
    if reading.num_running is not None:
        replica.engine_running = int(reading.num_running)
    if reading.num_waiting is not None:
        replica.engine_waiting = int(reading.num_waiting)
    if reading.num_running is not None or reading.num_waiting is not None:
        in_engine = replica.engine_running + replica.engine_waiting
        replica.engine_foreign = max(0, in_engine - replica.inflight)
    if reading.idle_power_w is not None:
        replica.idle_power_w = reading.idle_power_w
    if reading.energy_j is not None:
        prev = last.get(replica.replica_id)
        last[replica.replica_id] = (now_s, reading.energy_j)
        if prev is not None and now_s > prev[0] and reading.energy_j >= prev[1]:
            replica.meter.set_power_w((reading.energy_j - prev[1]) / (now_s - prev[0]))
    elif reading.power_w is not None:
        replica.meter.set_power_w(reading.power_w)
