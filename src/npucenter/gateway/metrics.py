"""Prometheus metrics of the gateway: requests, TTFT/TPOT, tokens, queue, per-replica power.

Everything lives in one :class:`GatewayMetrics` with its own ``CollectorRegistry`` (several
gateways in one test process do not collide). Replica gauges are read from the pool at scrape
time, so the hot path only touches counters and histograms.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from npucenter.gateway.pool import UpstreamPool

__all__ = ["CONTENT_TYPE", "GatewayMetrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_LATENCY_BUCKETS_S = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip
_TPOT_BUCKETS_S = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.02,
    0.04,
    0.06,
    0.08,
    0.1,
    0.15,
    0.2,
    0.3,
    0.5,
    1.0,
)


class GatewayMetrics:
    """The gateway's metric families."""

    def __init__(self, pool: UpstreamPool, queued: Callable[[], int]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "npucenter_gateway_requests",
            "Requests answered by the gateway, by model, tenant, endpoint and status.",
            ("model", "tenant", "endpoint", "status"),
            registry=self.registry,
        )
        self.tokens = Counter(
            "npucenter_gateway_tokens",
            "Tokens metered, by model, tenant and kind (input|output).",
            ("model", "tenant", "kind"),
            registry=self.registry,
        )
        self.retries = Counter(
            "npucenter_gateway_retries",
            "Requests re-sent to another replica after failing before their first token.",
            ("model",),
            registry=self.registry,
        )
        self.ttft = Histogram(
            "npucenter_gateway_ttft_seconds",
            "Time to first token seen by the gateway (streamed requests).",
            ("model",),
            buckets=_LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.tpot = Histogram(
            "npucenter_gateway_tpot_seconds",
            "Time per output token after the first (streamed requests).",
            ("model",),
            buckets=_TPOT_BUCKETS_S,
            registry=self.registry,
        )
        self.e2e = Histogram(
            "npucenter_gateway_request_seconds",
            "End-to-end request time in the gateway.",
            ("model",),
            buckets=_LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.registry.register(_PoolCollector(pool, queued))

    def render(self) -> bytes:
        """The exposition text."""
        return generate_latest(self.registry)


class _PoolCollector(Collector):
    def __init__(self, pool: UpstreamPool, queued: Callable[[], int]) -> None:
        self._pool = pool
        self._queued = queued

    def collect(self) -> Iterator[Metric]:
        labels = ["replica", "device", "model"]
        inflight = GaugeMetricFamily(
            "npucenter_replica_inflight_requests", "Requests in flight on a replica.", labels=labels
        )
        util = GaugeMetricFamily(
            "npucenter_replica_utilization_fraction",
            "In-flight requests over the replica's slots.",
            labels=labels,
        )
        power = GaugeMetricFamily(
            "npucenter_replica_power_watts",
            "Replica power used for metering (telemetry or modelled), W.",
            labels=labels,
        )
        kv = GaugeMetricFamily(
            "npucenter_replica_kv_usage_fraction",
            "KV-cache use reported by the engine.",
            labels=labels,
        )
        up = GaugeMetricFamily(
            "npucenter_replica_up", "1 unless in a failure cool-down.", labels=labels
        )
        now_s = self._pool.now_s()
        for r in self._pool.replicas():
            key = [r.replica_id, r.endpoint.device_id, r.endpoint.model_id]
            inflight.add_metric(key, r.inflight)
            util.add_metric(key, r.inflight / r.endpoint.max_inflight)
            power.add_metric(key, r.meter.power_w if r.inflight else r.idle_power_w)
            kv.add_metric(key, r.kv_usage_fraction)
            up.add_metric(key, 1.0 if r.is_up(now_s) else 0.0)
        queue = GaugeMetricFamily(
            "npucenter_gateway_queued_requests", "Requests waiting in the gateway."
        )
        queue.add_metric([], self._queued())
        yield from (inflight, util, power, kv, up, queue)
