"""Autoscaling in the live center: the leader feeds the pure policy and asks admission.

Every ``interval_s`` (and at once when the gateway holds a request at zero replicas) the
leading process reads, for each deployment whose fleet entry names ``min_replicas`` /
``max_replicas`` / ``autoscale:`` (or was given min/max replicas through the API: ``npucenter deploy create --min-replicas 0 --max-replicas 4``), what its gateway sees — requests held for a replica and
running on its replicas, their mean KV-cache use, whether any request came since the last
look — and asks :func:`npucenter.policy.autoscaling.decide_scale` (the twin's policy) for a
replica count. A change is the same as ``npucenter deploy scale``: the store's desired count,
then an admission cycle (admission and the tenant's quota bound it: replicas it cannot place
stay pending). A model of a deployment that may go to zero stays known to the gateway
(``standby_models``): its requests are held while a replica starts, never answered 404.

SLO attainment is read from the gateway's TTFT and TPOT histograms over the last interval,
against the service's SLO (the fleet file's ``slos:``): the smaller of the fraction of requests
whose TTFT was within the SLO and the fraction whose TPOT was (each counted at the largest
histogram bucket edge not above the limit, so a miss is never counted as met).

NOTE(autoscaling): the min of the two marginal fractions is an upper bound on the fraction that
met both (the histograms do not pair them).

With several gateways every one publishes its load each second (:func:`gateway_load`: per
model, the requests it holds at zero replicas or queues for a slot, those it runs, how many it
has seen, and its cumulative TTFT/TPOT histograms) as one small row ``load/<host>-<pid>`` in
the store; the leader adds the rows younger than ``stale_s`` (5 s) to its own: queue depth and
running requests are summed, idleness is "no gateway saw a request", and SLO attainment is
counted over every gateway's histograms. A gateway that stops publishing drops out after
``stale_s``; an interval whose summed counts went down (one left) counts no attainment.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from npucenter.errors import NpuCenterError
from npucenter.fleet import Fleet
from npucenter.live.load import (
    LOAD_PREFIX,
    TPOT_METRIC,
    TTFT_METRIC,
    load_row_name,
    merge_buckets,
    merge_inflight,
    merge_loads,
    model_buckets,
)
from npucenter.policy.autoscaling import AutoscalePolicy, DeploymentLoad, decide_scale
from npucenter.store import coordination

__all__ = ["Autoscaler"]

#: Other gateways' load rows older than this are deleted (seconds; ignored after ``stale_s``).
PRUNE_EVERY_S = 600.0

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Tracked:
    tenant: str
    name: str
    model: str
    policy: AutoscalePolicy
    last_request_s: float
    base: AutoscalePolicy | None = None  # the fleet file's (None: the API's defaults)
    last_change_s: float | None = None
    requests_seen: int = 0
    ttft_limit_s: float = math.inf
    tpot_limit_s: float = math.inf
    counts: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)  # ttft n/met, tpot n/met


class Autoscaler:
    """Scales the fleet's autoscaled deployments on the gateway's signals (leader only)."""

    def __init__(
        self,
        control: Any,
        gateway: Any,
        fleet: Fleet,
        *,
        interval_s: float = 2.0,
        now_s: Callable[[], float] = time.time,
        stale_s: float = 5.0,
        own_row: str | None = None,
    ) -> None:
        from npucenter.live.gateway import OPERATOR_TENANT

        self.control = control
        self.gateway = gateway
        self.interval_s = interval_s
        self.now_s = now_s
        self.stale_s = stale_s  # other gateways' rows older than this are ignored
        self.own_row = own_row or load_row_name()  # this process's row: counted in process
        start = now_s()
        slos = {svc.name: svc.slo for svc in fleet.spec.services}
        self.tracked = [
            _Tracked(
                tenant=s.tenant or OPERATOR_TENANT,
                name=s.deployment_name,
                model=s.model_id,
                policy=s.autoscale,
                last_request_s=start,  # idle counts from the center's start
                ttft_limit_s=_limit(slos, s.service or s.model_id, "ttft_s"),
                tpot_limit_s=_limit(slos, s.service or s.model_id, "tpot_s"),
            )
            for s in fleet.services
            if s.autoscale is not None
        ]
        self._wake = asyncio.Event()
        self.stored: set[tuple[str, str]] = set()  # tracked from the store (API), not the file
        self._remote: dict[str, dict[str, Any]] = {}  # model -> the other gateways' load
        self.remote_inflight: dict[str, int] = {}  # replica id -> the other gateways' requests
        self._pruned_s = -math.inf

    def install(self) -> None:
        """Keep scalable models known to the gateway; wake on a request held at zero."""
        self.gateway.standby_models = {t.model for t in self.tracked if t.policy.min_replicas == 0}
        self.gateway.on_cold_start = self.wake

    def wake(self) -> None:
        """Decide at once (called on the event loop by the gateway)."""
        self._wake.set()

    async def run_forever(self) -> None:
        """Decide every ``interval_s`` or when woken, until cancelled."""
        self.install()
        while True:
            try:
                await self.tick()
            except NpuCenterError as exc:
                log.warning("autoscaler: %s", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.interval_s)
            self._wake.clear()

    async def tick(self) -> list[tuple[str, int, int]]:
        """One decision per tracked deployment; returns (name, from, to) of those changed."""
        rows = await asyncio.to_thread(self._read)
        now = self.now_s()
        self._remote = await asyncio.to_thread(self._read_remote, now)
        self._track_stored(rows, now)
        changes = []
        for t in self.tracked:
            row = rows.get((t.tenant, t.name))
            if row is None:
                continue
            dep_id, desired = row[0], row[1]
            decision = decide_scale(t.policy, self._load(t, desired, now), now_s=now)
            if decision.desired != desired:
                await asyncio.to_thread(self._scale, dep_id, decision.desired)
                t.last_change_s = now
                changes.append((t.name, desired, decision.desired))
                log.info(
                    "autoscaler: %s %d -> %d replicas (%s: %s)",
                    t.name, desired, decision.desired, decision.reason.value, decision.detail,
                )  # fmt: skip
        return changes

    def _load(self, t: _Tracked, desired: int, now: float) -> DeploymentLoad:
        gw = self.gateway
        replicas = [r for r in gw.pool.replicas(t.model) if r.is_up(gw.pool.now_s())]
        remote = self._remote.get(t.model, {})
        running = sum(r.inflight for r in replicas) + int(remote.get("running", 0))
        held = (
            gw.held_for_replica.get(t.model, 0)
            + gw.dispatcher.queued(t.model)
            + int(remote.get("held", 0))  # held or queued by the other gateways
        )
        seen = sum(v.num_requests for (_tenant, m), v in gw.usage_totals.items() if m == t.model)
        seen += int(remote.get("requests", 0))
        if seen != t.requests_seen or running or held:
            t.last_request_s = now
            t.requests_seen = seen
        kv = sum(r.kv_usage_fraction for r in replicas) / len(replicas) if replicas else 0.0
        return DeploymentLoad(
            num_ready=len(replicas),
            num_starting=max(0, desired - len(replicas)),
            num_queued=held,
            num_running=running,
            kv_used_fraction=kv,
            slo_attainment=self._attainment(t),
            last_request_s=t.last_request_s,
            last_change_s=t.last_change_s,
        )

    def _attainment(self, t: _Tracked) -> float | None:
        """SLO attainment of the requests since the last look, over every gateway (None: none,
        or no SLO)."""
        if math.isinf(t.ttft_limit_s) and math.isinf(t.tpot_limit_s):
            return None
        registry = self.gateway.metrics.registry
        remote = self._remote.get(t.model, {})
        ttft = merge_buckets(model_buckets(registry, TTFT_METRIC, t.model), remote.get("ttft", []))
        tpot = merge_buckets(model_buckets(registry, TPOT_METRIC, t.model), remote.get("tpot", []))
        now = (*_count_within(ttft, t.ttft_limit_s), *_count_within(tpot, t.tpot_limit_s))
        before, t.counts = t.counts, now
        fractions = []
        for k in (0, 2):
            n, met = now[k] - before[k], now[k + 1] - before[k + 1]
            if n > 0 and met >= 0:  # a drop: a gateway left (its counts went with it)
                fractions.append(min(1.0, met / n))
        return min(fractions) if fractions else None

    def _read(self) -> dict[tuple[str, str], tuple[Any, ...]]:
        with self.control.tx() as repo:
            names = {x.id: x.name for x in repo.list_tenants()}
            return {
                (names.get(d.tenant_id, ""), d.name): (
                    d.id,
                    d.replicas,
                    d.model,
                    getattr(d, "min_replicas", None),
                    getattr(d, "max_replicas", None),
                    getattr(d, "idle_to_zero_s", None),
                )
                for d in repo.list_deployments()
            }

    def _read_remote(self, now: float) -> dict[str, dict[str, Any]]:
        """The other gateways' load (rows published in the last ``stale_s``), summed by model."""
        db = getattr(self.control, "db", None)
        if db is None or not coordination.is_postgres(getattr(db, "url", "")):
            return {}
        rows = coordination.read_published_prefix(db, LOAD_PREFIX, since_s=now - self.stale_s)
        if now - self._pruned_s > PRUNE_EVERY_S:  # rows of gateways killed without a goodbye
            coordination.prune_published(db, LOAD_PREFIX, before_s=now - PRUNE_EVERY_S)
            self._pruned_s = now
        others = [doc for name, doc in rows if name != self.own_row]
        self.remote_inflight = merge_inflight(others)  # a drain waits for these too
        return merge_loads(others)

    def _track_stored(self, rows: dict[tuple[str, str], tuple[Any, ...]], now: float) -> None:
        """Track deployments given bounds through the API, and use the bounds the store holds.

        Bounds set on a deployment (``npucenter deploy autoscale``, PATCH) win over the fleet
        file's for the fields set; they are read every tick, so a change counts at the next.
        """
        known = {(t.tenant, t.name): t for t in self.tracked}
        for key, row in rows.items():
            stored = _stored_bounds(row)
            t = known.get(key)
            if t is None:
                if row[3] is None and row[4] is None:  # an idle period alone scales nothing
                    continue
                t = _Tracked(
                    tenant=key[0], name=key[1], model=row[2], policy=AutoscalePolicy(),
                    last_request_s=now,
                )  # fmt: skip
                self.tracked.append(t)
                self.stored.add(key)
            if t.base is None and key not in self.stored:
                t.base = t.policy  # the fleet file's, kept under what the store says
            base = t.base if t.base is not None else AutoscalePolicy()
            try:
                policy = replace(base, **stored)
            except NpuCenterError as exc:  # e.g. a stored min above the file's max
                log.warning("autoscaler: bounds of %s not used: %s", t.name, exc)
                policy = base
            if policy != t.policy:
                log.info("autoscaler: %s bounds %s", t.name, stored or "from the fleet file")
                t.policy = policy
        for key in list(self.stored):  # deleted, or its bounds removed
            row = rows.get(key)
            if row is None or (row[3] is None and row[4] is None):
                self.stored.discard(key)
                self.tracked = [t for t in self.tracked if (t.tenant, t.name) != key]
        self.install()

    def _scale(self, dep_id: int, replicas: int) -> None:
        from npucenter.api.admission import admit_after_change

        reconciler = getattr(self.gateway, "reconciler", None)  # drains the idlest first
        inflight = reconciler.inflight_by_row() if reconciler is not None else None
        with self.control.tx() as repo:
            repo.scale_deployment(repo.get_deployment(dep_id), replicas, inflight=inflight)
        admit_after_change(self.control)


def _stored_bounds(row: tuple[Any, ...]) -> dict[str, Any]:
    """The bounds a deployment's row sets (min, max, idle period), by policy field."""
    names = ("min_replicas", "max_replicas", "idle_to_zero_s")
    return {k: v for k, v in zip(names, row[3:6], strict=True) if v is not None}


def _limit(slos: dict[str, Any], service: str, field: str) -> float:
    slo = slos.get(service)
    return float(getattr(slo, field)) if slo is not None else math.inf


def _count_within(buckets: list[list[Any]], limit_s: float) -> tuple[float, float]:
    """(requests observed, those at or under the largest bucket edge <= ``limit_s``)."""
    total = float(buckets[-1][1]) if buckets else 0.0  # the +Inf bucket
    if math.isinf(limit_s):
        return total, total
    met = 0.0
    for edge, count in buckets:
        if float(edge) <= limit_s:
            met = max(met, float(count))
    return total, met
