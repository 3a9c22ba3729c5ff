"""The deployment reconciler: the engines that run follow the store's admitted replicas.

Admission (``npucenter.api.admission``) places a deployment's replicas on cards in the store;
this loop makes the running engines match. Every tick (``interval_s``, or at once when woken
after a change) it reads the placed replicas, stops the engines of replicas that are gone
(scaled down, deleted, preempted, moved), starts one engine per new placed replica through an
executor (virtual engines on the virtual fleet), restarts failed ones (the executor's own
back-off), and publishes the result to the gateway: each replica in the upstream pool under the
deployment's model id, the deployment's name as an alias of that model, and the models still
starting as ``expected_models`` (503 + Retry-After instead of 404 meanwhile), and the server
each running replica was placed on as ``replica_servers`` (the dashboard's server column).

An engine's id is ``<server>-r<first card>``: stable while the replica keeps its cards, so a
restarted center finds the same ids. The reconciler never writes the store.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from npucenter.engines import ReplicaSpec
from npucenter.errors import NpuCenterError
from npucenter.executors.base import Executor, ReplicaState
from npucenter.executors.procs import Ticker
from npucenter.gateway.pool import ReplicaEndpoint
from npucenter.store.repository import Repository

__all__ = [
    "DEFAULT_MAX_NUM_SEQS",
    "DeploymentOptions",
    "DeploymentReconciler",
    "ReconcileReport",
    "WantedReplica",
    "wanted_replicas",
]

log = logging.getLogger(__name__)

#: Sequences a replica runs at once when its deployment says nothing (vLLM's and the twin's).
DEFAULT_MAX_NUM_SEQS = 256


@dataclass(frozen=True, slots=True, kw_only=True)
class DeploymentOptions:
    """What the store does not hold about a deployment (the fleet file's entries say it)."""

    alias: str | None = None  # None: none besides the model id
    max_num_seqs: int = DEFAULT_MAX_NUM_SEQS


@dataclass(frozen=True, slots=True, kw_only=True)
class WantedReplica:
    """One placed replica of the store, as an engine to run."""

    replica_id: str  # "<server>-r<first card>"
    deployment_id: int
    deployment: str
    tenant: str
    model: str
    device: str  # as the gateway names it (the fleet file's spelling, else the catalog id)
    precision: str
    tp: int
    server: str
    card_indices: tuple[int, ...]
    alias: str | None = None
    max_num_seqs: int = DEFAULT_MAX_NUM_SEQS

    def spec(self, engine: str = "virtual") -> ReplicaSpec:
        """The engine replica to start."""
        return ReplicaSpec(
            engine=engine,
            model=self.model,
            device=self.device,
            tp=self.tp,
            precision=self.precision,
            device_indices=self.card_indices,
            max_num_seqs=self.max_num_seqs,
        )

    def endpoint(self, base_url: str) -> ReplicaEndpoint:
        """The gateway's endpoint of this replica once it listens at ``base_url``."""
        return ReplicaEndpoint(
            replica_id=self.replica_id,
            base_url=base_url,
            model_id=self.model,
            device_id=self.device,
            device_kind=_device_kind(self.device),
            tp=self.tp,
            max_inflight=self.max_num_seqs,
            busy_power_w=_tdp_w(self.device) * self.tp,
        )


@dataclass(slots=True)
class ReconcileReport:
    """What one tick changed (engine ids)."""

    started: list[str] = field(default_factory=list)
    stopped: list[str] = field(default_factory=list)
    restarted: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)  # did not start; retried next tick

    @property
    def changed(self) -> bool:
        """Whether any engine started, stopped or restarted."""
        return bool(self.started or self.stopped or self.restarted)


def wanted_replicas(
    repo: Repository,
    *,
    options: Callable[[str, str], DeploymentOptions | None] | None = None,
    device_names: Mapping[str, str] | None = None,
) -> list[WantedReplica]:
    """Every placed replica in the store, by engine id.

    ``options(tenant, deployment name)`` gives a deployment's alias and sequence limit (None:
    the deployment's name is its alias); ``device_names`` maps catalog ids to the names the
    gateway and its tariff use (the fleet file's spelling).
    """
    names = {t.id: t.name for t in repo.list_tenants()}
    card_at = {c.id: (s.name, c.index) for s in repo.list_servers() for c in s.cards}
    cards_of: dict[int, list[tuple[str, int]]] = defaultdict(list)
    for alloc in repo.allocations():
        if alloc.replica_id is not None and alloc.card_id in card_at:
            cards_of[alloc.replica_id].append(card_at[alloc.card_id])
    deployments = {d.id: d for d in repo.list_deployments()}
    out: list[WantedReplica] = []
    for rep in repo.replicas_in_state("placed"):
        dep = deployments.get(rep.deployment_id)
        cards = sorted(cards_of.get(rep.id, []), key=lambda c: c[1])
        if dep is None or not cards:
            continue
        server = cards[0][0]
        tenant = names.get(dep.tenant_id, str(dep.tenant_id))
        opts = options(tenant, dep.name) if options is not None else None
        if opts is None:
            opts = DeploymentOptions(alias=dep.name if dep.name != dep.model else None)
        out.append(
            WantedReplica(
                replica_id=f"{server}-r{cards[0][1]}",
                deployment_id=dep.id,
                deployment=dep.name,
                tenant=tenant,
                model=dep.model,
                device=(device_names or {}).get(dep.device_type, dep.device_type),
                precision=dep.precision,
                tp=dep.tp,
                server=server,
                card_indices=tuple(c[1] for c in cards),
                alias=opts.alias,
                max_num_seqs=opts.max_num_seqs,
            )
        )
    return out


class DeploymentReconciler:
    """Keeps ``executor``'s engines equal to what ``read()`` says is placed; tells ``gateway``.

    ``read`` runs in a worker thread (it reads the store); ``gateway`` is anything with a
    ``pool`` (:class:`~npucenter.gateway.pool.UpstreamPool`) and ``expected_models``. One tick
    at a time; :meth:`wake` is thread-safe (the API calls it after every change).
    """

    def __init__(
        self,
        *,
        read: Callable[[], list[WantedReplica]],
        executor: Executor,
        gateway: Any,
        interval_s: float = 2.0,
        engine: str = "virtual",
    ) -> None:
        self.read = read
        self.executor = executor
        self.gateway = gateway
        self.interval_s = interval_s
        self.engine = engine
        self._running: dict[str, WantedReplica] = {}  # engine id -> what it runs
        self._wanted: list[WantedReplica] = []
        self._ticker = Ticker("deployment reconciler", log)

    @property
    def running(self) -> dict[str, WantedReplica]:
        """The engines this reconciler started and has not stopped, by id."""
        return dict(self._running)

    async def run_forever(self) -> None:
        """Tick every ``interval_s`` (or at once when woken) until cancelled."""
        await self._ticker.run_forever(self.reconcile, lambda: self.interval_s)

    def wake(self) -> None:
        """Reconcile as soon as possible (thread-safe)."""
        self._ticker.wake()

    async def reconcile(self) -> ReconcileReport:
        """One tick: read, stop what is no longer wanted, start what is, restart failed ones."""
        async with self._ticker.bind():
            wanted = await asyncio.to_thread(self.read)
            return await self._apply(wanted)

    async def shutdown(self) -> None:
        """Stop every engine this reconciler runs and empty the gateway's pool of them."""
        for rid in list(self._running):
            await self._stop(rid)
        self._wanted = []
        self._publish()

    # --- one tick --------------------------------------------------------------------------

    async def _apply(self, wanted: list[WantedReplica]) -> ReconcileReport:
        report = ReconcileReport()
        by_id = {w.replica_id: w for w in wanted}
        self._wanted = list(by_id.values())
        for rid, have in list(self._running.items()):
            if by_id.get(rid) != have:  # gone, or its deployment/spec changed under this id
                await self._stop(rid)
                report.stopped.append(rid)
        self._publish()  # before starting: a slow start keeps nothing stale in the pool
        new = [w for rid, w in by_id.items() if rid not in self._running]
        results = await asyncio.gather(*(self._start(w) for w in new))
        for w, ok in zip(new, results, strict=True):
            (report.started if ok else report.failed).append(w.replica_id)
        report.restarted = await self._restart_failed()
        self._publish()
        if report.changed or report.failed:
            log.info(
                "deployments: started %s, stopped %s, restarted %s, failed %s",
                report.started or "-",
                report.stopped or "-",
                report.restarted or "-",
                report.failed or "-",
            )
        return report

    async def _start(self, w: WantedReplica) -> bool:
        try:
            await self.executor.start(w.spec(self.engine), replica_id=w.replica_id)
        except NpuCenterError as exc:
            log.error("replica %s of %s did not start: %s", w.replica_id, w.deployment, exc)
            return False
        self._running[w.replica_id] = w
        self._publish()  # serve it as soon as it is up
        return True

    async def _stop(self, replica_id: str) -> None:
        self._running.pop(replica_id, None)
        self._publish()  # off the pool first: no new request goes to it
        try:
            await self.executor.stop(replica_id)
        except NpuCenterError as exc:
            log.warning("stopping replica %s: %s", replica_id, exc)
        self._forget_prefixes([replica_id])

    async def _restart_failed(self) -> list[str]:
        restart_failed = getattr(self.executor, "restart_failed", None)
        try:
            if restart_failed is not None:  # the local executor: exited processes, with back-off
                restarted = [r for r in await restart_failed() if r in self._running]
            else:
                restarted = []
                for rid in list(self._running):
                    if not await self.executor.check(rid):
                        await self.executor.restart(rid)
                        restarted.append(rid)
        except NpuCenterError as exc:
            log.warning("restarting failed replicas: %s", exc)
            return []
        self._forget_prefixes(restarted)  # a restarted engine's KV cache is empty
        return restarted

    def _publish(self) -> None:
        urls = {
            r.replica_id: r.base_url
            for r in self.executor.replicas()
            if r.state != ReplicaState.STOPPED
        }
        pool = self.gateway.pool
        pool.set(w.endpoint(urls[rid]) for rid, w in sorted(self._running.items()) if rid in urls)
        self.gateway.replica_servers = {rid: w.server for rid, w in self._running.items()}
        aliases: dict[str, str] = {}
        ambiguous: set[str] = set()
        for w in self._wanted:
            if w.alias and aliases.setdefault(w.alias, w.model) != w.model:
                ambiguous.add(w.alias)  # one name for two models: serve neither by it
        pool.set_aliases({a: m for a, m in aliases.items() if a not in ambiguous})
        self.gateway.expected_models = {w.model for w in self._wanted} | (set(aliases) - ambiguous)

    def _forget_prefixes(self, replica_ids: list[str]) -> None:
        index = getattr(
            getattr(getattr(self.gateway, "router", None), "policy", None), "index", None
        )
        if index is not None and hasattr(index, "forget"):
            for rid in replica_ids:
                index.forget(rid)


def _device_kind(device_id: str) -> str:
    try:
        from npucenter.catalog import default_catalog

        return str(default_catalog().device(device_id).kind)
    except NpuCenterError:
        return "gpu" if device_id.lower().startswith(("h1", "h2", "a1", "l4", "nvidia")) else "npu"


def _tdp_w(device_id: str) -> float:
    """The card's sourced TDP (busy-power bound until the engine reports power), else 0."""
    try:
        from npucenter.catalog import default_catalog

        return float(default_catalog().device(device_id).tdp_w or 0.0)
    except NpuCenterError:
        return 0.0
