"""Prometheus metrics of the virtual engine, named like vLLM's so one scraper reads both.

Gauges and counters are read from the engine loop at scrape time (nothing is updated per
token); latency histograms are observed once per finished request. Modelled power and energy
are ``npucenter:power_watts`` and ``npucenter:energy_joules_total`` (Prometheus base units).
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from npucenter.engines.virtual.loop import EngineLoop, RequestResult

__all__ = ["METRIC_ENERGY_J", "METRIC_POWER_W", "EngineMetrics"]

METRIC_POWER_W = "npucenter:power_watts"
METRIC_ENERGY_J = "npucenter:energy_joules_total"

_LATENCY_BUCKETS_S = (
    0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0,
    2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0,
)  # fmt: skip


class _LoopCollector(Collector):
    def __init__(self, loop: EngineLoop, labels: dict[str, str]) -> None:
        self._loop = loop
        self._names = list(labels)
        self._values = list(labels.values())

    def _gauge(self, name: str, doc: str, value: float) -> GaugeMetricFamily:
        g = GaugeMetricFamily(name, doc, labels=self._names)
        g.add_metric(self._values, value)
        return g

    def _counter(self, name: str, doc: str, value: float) -> CounterMetricFamily:
        c = CounterMetricFamily(name, doc, labels=self._names)
        c.add_metric(self._values, value)
        return c

    def collect(self) -> Iterator[Metric]:
        loop, stats = self._loop, self._loop.stats
        running, waiting = loop.counts()
        kv = loop.kv_used_tokens() / loop.kv_capacity_tokens if loop.kv_capacity_tokens else 0.0
        yield self._gauge("vllm:num_requests_running", "Requests generating tokens.", running)
        yield self._gauge(
            "vllm:num_requests_waiting", "Requests waiting for a first token.", waiting
        )
        yield self._gauge("vllm:kv_cache_usage_perc", "KV-cache usage (1 = full).", min(kv, 1.0))
        yield self._counter("vllm:prompt_tokens", "Prompt tokens received.", stats.prompt_tokens)
        yield self._counter("vllm:generation_tokens", "Tokens generated.", stats.generation_tokens)
        yield self._counter("vllm:request_success", "Requests finished.", stats.finished)
        yield self._counter("vllm:num_preemptions", "Sequences preempted.", stats.preemptions)
        yield self._counter("npucenter:requests_aborted", "Requests aborted.", stats.aborted)
        yield self._gauge(METRIC_POWER_W, "Modelled power of the replica's cards (W).",
                          loop.power_w_now())  # fmt: skip
        yield self._gauge(
            "npucenter:idle_power_watts", "Modelled idle power (W).", loop.idle_power_w
        )
        yield self._counter(
            METRIC_ENERGY_J.removesuffix("_total"),
            "Modelled energy of the replica's cards (J).",
            loop.energy_j_now(),
        )
        yield self._counter("npucenter:busy_seconds", "Modelled busy time (s).", stats.busy_s)
        yield self._counter("npucenter:engine_steps", "Engine iterations.", stats.num_steps)
        yield self._counter(
            "npucenter:timeline_resyncs", "Times the loop lagged and resynced.", stats.resyncs
        )


class EngineMetrics:
    """The engine's Prometheus registry; ``observe`` is the loop's ``on_finish`` hook."""

    def __init__(self, labels: dict[str, str]) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self._labels = labels
        names = list(labels)
        self._ttft = Histogram(
            "vllm:time_to_first_token_seconds",
            "Time to first token (modelled).",
            names,
            buckets=_LATENCY_BUCKETS_S,
            registry=self.registry,
        ).labels(**labels)
        self._e2e = Histogram(
            "vllm:e2e_request_latency_seconds",
            "Arrival to last token (modelled).",
            names,
            buckets=_LATENCY_BUCKETS_S,
            registry=self.registry,
        ).labels(**labels)

    def attach(self, loop: EngineLoop) -> None:
        """Read live values from ``loop`` at scrape time."""
        self.registry.register(_LoopCollector(loop, self._labels))

    def observe(self, result: RequestResult) -> None:
        """Record one finished request's latencies."""
        self._ttft.observe(result.ttft_s)
        self._e2e.observe(result.e2e_s)

    def render(self) -> bytes:
        """The Prometheus text exposition."""
        return generate_latest(self.registry)
