"""Prometheus metrics of the gateway: requests, TTFT/TPOT, tokens, queue, per-replica power.

Everything lives in one :class:`GatewayMetrics` with its own ``CollectorRegistry`` (several
gateways in one test process do not collide). Replica gauges are read from the pool at scrape
time, so the hot path only touches counters and histograms.

Label values are bounded: a ``model`` label is a model (or alias) the pool serves, else
``other``, so client-chosen names never become series; ``tenant`` values come from
authenticated keys only (the store's tenants, ``-`` when unauthenticated).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from npucenter.gateway.pool import UpstreamPool

__all__ = ["CONTENT_TYPE", "OTHER_MODEL", "GatewayMetrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OTHER_MODEL = "other"  # the model label of every name the pool does not serve
_MAX_CACHED_CHILDREN = 4096  # per family: client-chosen model names cannot grow it without bound

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
        self._pool = pool
        self.requests = _ModelLabelled(
            self,
            Counter(
                "npucenter_gateway_requests",
                "Requests answered by the gateway, by model, tenant, endpoint and status.",
                ("model", "tenant", "endpoint", "status"),
                registry=self.registry,
            ),
        )
        self.tokens = _ModelLabelled(
            self,
            Counter(
                "npucenter_gateway_tokens",
                "Tokens metered, by model, tenant and kind (input|output).",
                ("model", "tenant", "kind"),
                registry=self.registry,
            ),
        )
        self.retries = _ModelLabelled(
            self,
            Counter(
                "npucenter_gateway_retries",
                "Requests re-sent to another replica after failing before their first token.",
                ("model",),
                registry=self.registry,
            ),
        )
        self.ttft = _ModelLabelled(
            self,
            Histogram(
                "npucenter_gateway_ttft_seconds",
                "Time to first token seen by the gateway (streamed requests).",
                ("model",),
                buckets=_LATENCY_BUCKETS_S,
                registry=self.registry,
            ),
        )
        self.tpot = _ModelLabelled(
            self,
            Histogram(
                "npucenter_gateway_tpot_seconds",
                "Time per output token after the first (streamed requests).",
                ("model",),
                buckets=_TPOT_BUCKETS_S,
                registry=self.registry,
            ),
        )
        self.e2e = _ModelLabelled(
            self,
            Histogram(
                "npucenter_gateway_request_seconds",
                "End-to-end request time in the gateway.",
                ("model",),
                buckets=_LATENCY_BUCKETS_S,
                registry=self.registry,
            ),
        )
        self.registry.register(_PoolCollector(pool, queued))

    def render(self) -> bytes:
        """The exposition text."""
        return generate_latest(self.registry)

    def model_label(self, model: str | None) -> str:
        """``model`` when the pool serves it (a model id or an alias), else ``other``."""
        if not model or model == "-":
            return "-"
        return model if self._pool.replicas(self._pool.resolve(model)) else OTHER_MODEL


class _ModelLabelled:
    """A metric family whose first label (``model``) is bounded by :meth:`model_label`.

    NOTE(gateway): the children are cached by the labels asked for (3-4 lookups a request,
    each a lock, a tuple and the pool's model check in prometheus_client); the cache is
    dropped when the pool's models or aliases change (``UpstreamPool.version``), since
    a model's label is ``other`` while the pool does not serve it.
    """

    def __init__(self, metrics: GatewayMetrics, family: Any) -> None:
        self._metrics = metrics
        self._family = family
        self._children: dict[tuple[str | None, ...], Any] = {}
        self._version = -1

    def labels(self, model: str | None, *rest: str) -> Any:
        """The child for ``(model label, *rest)``."""
        version = self._metrics._pool.version
        if version != self._version:
            self._children.clear()
            self._version = version
        key = (model, *rest)
        child = self._children.get(key)
        if child is None:
            if len(self._children) >= _MAX_CACHED_CHILDREN:
                self._children.clear()
            child = self._children[key] = self._family.labels(
                self._metrics.model_label(model), *rest
            )
        return child

    def collect(self) -> Any:
        """The family's samples (as the wrapped metric's ``collect``)."""
        return self._family.collect()


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
