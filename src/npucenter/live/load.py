"""One gateway's load as it publishes it for the leader's autoscaler (several processes).

Every gateway writes one small row ``load/<host>-<pid>`` in the store each second
(:func:`npucenter.live.leader.share_replicas`): per model, the requests it holds (at zero
replicas, or queued for a slot), those running on replicas, how many it has seen, and its
cumulative TTFT/TPOT histograms; and per replica the requests it has in flight there. The
leader sums the fresh rows (:func:`merge_loads`, :func:`merge_inflight`) with its own signals
(:mod:`npucenter.live.autoscaler`; a replica scaled down drains until no gateway has a request
on it).
"""

from __future__ import annotations

import os
import socket
from typing import Any

__all__ = [
    "LOAD_PREFIX",
    "TPOT_METRIC",
    "TTFT_METRIC",
    "gateway_load",
    "load_row_name",
    "merge_buckets",
    "merge_inflight",
    "merge_loads",
    "model_buckets",
]

#: Every gateway publishes its load (:func:`gateway_load`) in the store under this prefix.
LOAD_PREFIX = "load/"
#: The gateway's latency histograms SLO attainment is read from.
TTFT_METRIC = "npucenter_gateway_ttft_seconds"
TPOT_METRIC = "npucenter_gateway_tpot_seconds"


def load_row_name() -> str:
    """This process's load row in the store: ``load/<host>-<pid>``."""
    return f"{LOAD_PREFIX}{socket.gethostname()}-{os.getpid()}"


def gateway_load(gateway: Any) -> dict[str, Any]:
    """What one gateway publishes of its load: per model, requests held (at zero replicas or
    for a slot) and running, requests seen, and its cumulative TTFT/TPOT histograms."""
    registry = gateway.metrics.registry
    ttft, tpot = _all_buckets(registry, TTFT_METRIC), _all_buckets(registry, TPOT_METRIC)
    models = set(gateway.held_for_replica) | {m for _t, m in gateway.usage_totals}
    models |= {r.endpoint.model_id for r in gateway.pool.replicas()}
    out: dict[str, Any] = {}
    for model in sorted(models):
        out[model] = {
            "held": gateway.held_for_replica.get(model, 0) + gateway.dispatcher.queued(model),
            "running": sum(r.inflight for r in gateway.pool.replicas(model)),
            "requests": sum(
                v.num_requests for (_t, m), v in gateway.usage_totals.items() if m == model
            ),
            "ttft": ttft.get(model, []),
            "tpot": tpot.get(model, []),
        }
    inflight = {r.replica_id: r.inflight for r in gateway.pool.replicas() if r.inflight}
    return {"models": out, "inflight": dict(sorted(inflight.items()))}


def merge_inflight(docs: Any) -> dict[str, int]:
    """Several gateways' requests in flight, summed by replica."""
    out: dict[str, int] = {}
    for doc in docs:
        for replica_id, count in (doc.get("inflight") or {}).items():
            out[replica_id] = out.get(replica_id, 0) + int(count)
    return out


def merge_loads(docs: Any) -> dict[str, dict[str, Any]]:
    """Several gateways' :func:`gateway_load` documents summed by model."""
    out: dict[str, dict[str, Any]] = {}
    for doc in docs:
        for model, load in (doc.get("models") or {}).items():
            have = out.setdefault(model, {"held": 0, "running": 0, "requests": 0})
            for key in ("held", "running", "requests"):
                have[key] += int(load.get(key, 0))
            for key in ("ttft", "tpot"):
                have[key] = merge_buckets(have.get(key, []), load.get(key, []))
    return out


def model_buckets(registry: Any, name: str, model: str) -> list[list[Any]]:
    """``[["upper edge", cumulative count], ...]`` of one model's histogram ("+Inf" last)."""
    return _all_buckets(registry, name).get(model, [])


def _all_buckets(registry: Any, name: str) -> dict[str, list[list[Any]]]:
    """Model -> its histogram's cumulative buckets (one pass over the registry)."""
    out: dict[str, list[list[Any]]] = {}
    for metric in registry.collect():
        if metric.name != name:
            continue
        for sample in metric.samples:
            if sample.name == f"{name}_bucket" and "model" in sample.labels:
                out.setdefault(sample.labels["model"], []).append(
                    [sample.labels["le"], float(sample.value)]  # "+Inf": JSON has no infinity
                )
    return {model: sorted(b, key=lambda e: float(e[0])) for model, b in out.items()}


def merge_buckets(a: list[list[Any]], b: list[list[Any]]) -> list[list[Any]]:
    """Two cumulative histograms with the same edges, added (an edge only one has is kept)."""
    total: dict[str, float] = {}
    for edge, count in [*a, *b]:
        total[str(edge)] = total.get(str(edge), 0.0) + float(count)
    return [[edge, total[edge]] for edge in sorted(total, key=float)]
