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

A replica no longer wanted is drained, not cut: the gateway's pool sends it no new request at
once (:meth:`~npucenter.gateway.pool.UpstreamPool.drain`), its requests in flight finish, and
its engine stops when it has none, or after ``drain_s`` (60 s by default; the fleet file's
``autoscale: {drain_s: ...}`` per deployment), when the requests still running are cancelled
and counted (``num_drain_cancelled``). Wanted again before that, it serves again. The store
keeps a drained replica's cards (state ``draining``: held by its tenant, billed, shown) until
this loop reports, at the end of each tick (``release``), which replicas it still runs, drains,
starts or stops; the others draining are released then. A new leader holds none of them, so
what drained under a process that stopped or died is released at its first tick.

An engine's id is ``<server>-r<first card>``: stable while the replica keeps its cards, so a
restarted center finds the same ids. What it writes to the store is what it saw of each placed
replica (``record``): ``running``, ``starting``, ``pending`` (nothing can take it: "no Ray node
has RBLN:4") or ``failed``, with the reason; the store bills a replica's cards only while it
runs, and `deploy list`/`fleet list` show it; and which replicas' engines it still holds
(``release``: the store frees the cards of the other replicas draining).

NOTE(engines): each deployment names its engine (:class:`~npucenter.engines.EngineChoice`, from
the fleet file; virtual by default). Starts and restarts run as background tasks: a tick waits
for them at most ``start_wait_s``, so a real engine that takes minutes to become ready (vLLM's
CPU build: 35-135 s here) never holds up the reconcile of other deployments. A replica is ready
when its health check answers and its ``/v1/models`` lists the served name; a start that fails
or times out is kept as a visible failure (error and the engine's log tail,
:meth:`DeploymentReconciler.engine_states`) and retried with a back-off. An ``external`` engine
is not started: its server is health-checked every tick and published while it answers.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from npucenter.engines import EngineChoice, ReplicaSpec, engine_choice, engine_for_device
from npucenter.engines.models import ensure_model, resolve_model_path
from npucenter.engines.tokenizer import tokenizer_counter
from npucenter.errors import CapacityUnavailableError, NpuCenterError, UpstreamError
from npucenter.executors.base import Executor, ReplicaState
from npucenter.executors.procs import Ticker
from npucenter.gateway.pool import ReplicaEndpoint
from npucenter.store.repository import Repository

__all__ = [
    "DEFAULT_DRAIN_S",
    "DEFAULT_MAX_NUM_SEQS",
    "DeploymentOptions",
    "DeploymentReconciler",
    "EngineFailure",
    "ReconcileReport",
    "WantedReplica",
    "wanted_replicas",
]

log = logging.getLogger(__name__)

#: The longest reason the store keeps for a replica's run state (replicas.run_reason).
REASON_LEN = 512
#: Sequences a replica runs at once when its deployment says nothing (vLLM's and the twin's).
DEFAULT_MAX_NUM_SEQS = 256
#: Seconds a replica scaled down may finish its requests in flight before it is stopped anyway.
DEFAULT_DRAIN_S = 60.0


@dataclass(frozen=True, slots=True, kw_only=True)
class DeploymentOptions:
    """What the store does not hold about a deployment (the fleet file's entries say it)."""

    alias: str | None = None  # None: none besides the model id
    max_num_seqs: int = DEFAULT_MAX_NUM_SEQS
    engine: EngineChoice = field(default_factory=EngineChoice)
    drain_s: float | None = None  # None: the reconciler's (DEFAULT_DRAIN_S)


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
    engine: EngineChoice = field(default_factory=EngineChoice)
    # the store's replica row and the run state it holds (written back when it changes);
    # not part of what runs
    store_id: int | None = field(default=None, compare=False)
    stored_run: tuple[str | None, str | None] = field(default=(None, None), compare=False)
    drain_s: float | None = field(default=None, compare=False)  # None: the reconciler's

    def spec(self, engine: str = "virtual", *, models_dir: Path | None = None) -> ReplicaSpec:
        """The engine replica to start (``engine``: the default when the deployment names none)."""
        choice = self.engine
        name = choice.name if choice.is_real else engine
        real = name != "virtual"
        return ReplicaSpec(
            engine=name,
            model=self.model,
            device=self.device,
            tp=self.tp,
            precision=self.precision,
            device_indices=self.card_indices,
            max_num_seqs=self.max_num_seqs,
            model_path=(
                resolve_model_path(self.model, choice.model_path, models_dir) if real else None
            ),
            max_model_len=choice.max_model_len,
            executable=choice.python,
            ready_timeout_s=choice.ready_timeout_s,
            extra_args=choice.launch_args(),
            env=choice.launch_env(),
            num_cpus=choice.num_cpus,  # Ray reserves these on the node (none when unset)
            memory_gb=choice.memory_gb,
        )

    def endpoint(self, base_url: str, *, api_key: str | None = None) -> ReplicaEndpoint:
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
            api_key=api_key,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class EngineFailure:
    """Why a replica's engine is not serving: what failed, when, and the engine's last lines."""

    replica_id: str
    deployment_id: int
    error: str
    log_tail: str = ""
    at_s: float = 0.0  # wall-clock time of the failure
    num_attempts: int = 1
    retry_at_s: float = 0.0  # monotonic time of the next try
    no_capacity: bool = False  # nothing can take it now (no node has its cards): pending


@dataclass(slots=True)
class ReconcileReport:
    """What one tick changed (engine ids)."""

    started: list[str] = field(default_factory=list)
    stopped: list[str] = field(default_factory=list)
    restarted: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)  # did not start; retried next tick
    draining: list[str] = field(default_factory=list)  # no new request; stopped when empty

    @property
    def changed(self) -> bool:
        """Whether any engine started, stopped, restarted or began to drain."""
        return bool(self.started or self.stopped or self.restarted or self.draining)


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
        if opts is None:  # not the fleet file's: its row says which engine serves it
            stored = _stored_engine(dep)
            if stored is None:
                continue
            opts = DeploymentOptions(
                alias=dep.name if dep.name != dep.model else None, engine=stored
            )
        device = rep.device_type or dep.device_type  # a fungible replica's: where admission put it
        engine = _engine_on(opts.engine, device, dep.name)
        if engine is None:
            continue
        out.append(
            WantedReplica(
                replica_id=f"{server}-r{cards[0][1]}",
                deployment_id=dep.id,
                deployment=dep.name,
                tenant=tenant,
                model=dep.model,
                device=(device_names or {}).get(device, device),
                precision=dep.precision,
                tp=dep.tp,
                server=server,
                card_indices=tuple(c[1] for c in cards),
                alias=opts.alias,
                max_num_seqs=opts.max_num_seqs,
                engine=engine,
                store_id=rep.id,
                stored_run=(rep.run_state, rep.run_reason),
                drain_s=opts.drain_s,
            )
        )
    return out


def _engine_on(choice: EngineChoice, device: str, deployment: str) -> EngineChoice | None:
    """The engine of ``device``'s family for a deployment's replica (None: none can serve it)."""
    try:
        return engine_for_device(choice, device)
    except NpuCenterError as exc:  # checked when created; a later catalog may disagree
        log.error("deployment %s: no engine for %s (%s); not served", deployment, device, exc)
        return None


class DeploymentReconciler:
    """Keeps ``executor``'s engines equal to what ``read()`` says is placed; tells ``gateway``.

    ``read`` runs in a worker thread (it reads the store); ``gateway`` is anything with a
    ``pool`` (:class:`~npucenter.gateway.pool.UpstreamPool`) and ``expected_models``. One tick
    at a time; :meth:`wake` is thread-safe (the API calls it after every change). ``engine`` is
    the engine of deployments that name none; ``models_dir`` is where local models live (and the
    tiny test model is built); ``secret`` reads an external engine's upstream key by its name.
    """

    def __init__(
        self,
        *,
        read: Callable[[], list[WantedReplica]],
        executor: Executor,
        gateway: Any,
        interval_s: float = 2.0,
        engine: str = "virtual",
        models_dir: Path | None = None,
        start_wait_s: float = 1.0,
        secret: Callable[[str], str | None] | None = None,
        record: Callable[[dict[int, tuple[str, str | None]]], None] | None = None,
        release: Callable[[set[int]], None] | None = None,
        drain_s: float = DEFAULT_DRAIN_S,
        drain_poll_s: float = 0.1,
    ) -> None:
        self.read = read
        self.record = record
        # (store ids of the replicas whose engine still holds its cards) -> the store releases
        # its other draining replicas (scaled down, engine gone)
        self.release = release
        self.executor = executor
        self.gateway = gateway
        self.interval_s = interval_s
        self.engine = engine
        self.models_dir = models_dir
        self.start_wait_s = start_wait_s
        self._secret = secret or (lambda _name: None)
        self._running: dict[str, WantedReplica] = {}  # engine id -> what it runs
        self._stopping: dict[str, WantedReplica] = {}  # engine id -> what it ran, until it stopped
        self.drain_s = drain_s
        self.drain_poll_s = drain_poll_s
        self._draining: dict[str, WantedReplica] = {}  # engine id -> what it runs, off the pool
        self._drains: dict[str, asyncio.Task[None]] = {}  # engine id -> its drain
        # replica id -> requests other gateways have in flight on it (several processes on one
        # PostgreSQL: their load rows, read by the autoscaler); a drain waits for them too, and
        # lasts at least ``drain_settle_s`` (for their rows to show a request just sent)
        self.remote_inflight: Callable[[], Mapping[str, int]] = dict
        self.drain_settle_s = 0.0
        self.num_drained = 0  # drains ended (empty or at the bound)
        self.num_drain_cancelled = 0  # requests still running at a drain's bound, cancelled
        self._wanted: list[WantedReplica] = []
        self._starting: dict[str, asyncio.Task[bool]] = {}  # engine id -> its start
        self._restarting: asyncio.Task[list[str]] | None = None
        self._failures: dict[str, EngineFailure] = {}  # engine id -> its last failed start
        self._external: dict[str, tuple[str, str | None]] = {}  # id -> (base URL, upstream key)
        self._external_down: set[str] = set()  # external servers not answering now
        self._ticker = Ticker("deployment reconciler", log)

    @property
    def running(self) -> dict[str, WantedReplica]:
        """The engines this reconciler started and has not stopped, by id."""
        return dict(self._running)

    @property
    def failures(self) -> dict[str, EngineFailure]:
        """Replicas whose last start failed (retried with a back-off), by engine id."""
        return dict(self._failures)

    @property
    def draining(self) -> dict[str, WantedReplica]:
        """Engines scaled down that still finish their requests in flight, by id."""
        return dict(self._draining)

    def inflight_by_row(self) -> dict[int, int]:
        """Store replica id -> requests the gateway has in flight on its engine (the store's
        scale-down removes the replicas with the fewest first)."""
        out = {}
        for rid, w in self._running.items():
            if w.store_id is not None:
                out[w.store_id] = self._inflight(rid)
        return out

    def _inflight(self, rid: str) -> int:
        """Requests every gateway has in flight on ``rid`` (this one's, and the others' rows)."""
        replica = self.gateway.pool.get(rid)
        return (replica.inflight if replica is not None else 0) + self.remote_inflight().get(rid, 0)

    def held_replicas(self) -> set[int]:
        """Store ids of the replicas whose engine runs, drains, starts or is still stopping."""
        starting = {w.store_id for w in self._wanted if w.replica_id in self._starting}
        held = [*self._running.values(), *self._draining.values(), *self._stopping.values()]
        return {w.store_id for w in held if w.store_id is not None} | {
            i for i in starting if i is not None
        }

    def held_cards(self) -> set[tuple[str, int]]:
        """(server, card index) of every engine running, draining or still stopping."""
        held = [*self._running.values(), *self._draining.values(), *self._stopping.values()]
        return {(w.server, card) for w in held for card in w.card_indices}

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
            report = await self._apply(wanted)
            await self._record_run_states()
            await self._release_drained(self.held_replicas())
            return report

    async def shutdown(self) -> None:
        """Stop every engine this reconciler runs and empty the gateway's pool of them."""
        for task in [*self._starting.values(), *([self._restarting] if self._restarting else [])]:
            task.cancel()
        await asyncio.gather(*self._starting.values(), return_exceptions=True)
        self._starting.clear()
        for task in list(self._drains.values()):  # stopping: no drain; cut now
            task.cancel()
        await asyncio.gather(*self._drains.values(), return_exceptions=True)
        for rid in list(self._draining):
            await self._stop(rid)
        for rid in list(self._running):
            await self._stop(rid)
        await self.record_stopped()
        self._wanted = []
        self._publish()

    async def record_stopped(self) -> None:
        """Record every wanted replica ``pending`` (its engine stopped with this reconciler): not
        billed until a leader runs it again (its first tick rewrites what it sees)."""
        stopped = {
            w.store_id: ("pending", "the center stopped; the next leader starts it")
            for w in self._wanted
            if w.store_id is not None
        }
        await self._release_drained(set())  # their engines are gone with this one's
        if self.record is None or not stopped:
            return
        try:
            await asyncio.to_thread(self.record, stopped)
        except Exception as exc:  # the database is gone (leadership lost)
            log.warning("recording replicas stopped: %s", exc)

    async def _release_drained(self, still_held: set[int]) -> None:
        """Let the store release the replicas it holds draining whose engine is gone."""
        if self.release is None:
            return
        try:
            await asyncio.to_thread(self.release, still_held)
        except Exception as exc:  # the database is down (or leadership lost): next tick
            log.warning("releasing drained replicas: %s", exc)

    def engine_states(self) -> list[dict[str, Any]]:
        """Every wanted replica's engine: state, engine, where it listens, failure and log tail.

        ``state`` is ``ready``, ``starting`` or ``failed`` (the error and the engine's last lines
        with it); an external server is ``ready`` or ``unreachable``. Never holds a secret.
        """
        by_id = {r.replica_id: r for r in self.executor.replicas()}
        out = []
        for w in sorted(self._wanted, key=lambda w: w.replica_id):
            rid = w.replica_id
            failure = self._failures.get(rid)
            replica = by_id.get(rid)
            if rid in self._external:
                state = "unreachable" if rid in self._external_down else "ready"
                base_url: str | None = self._external[rid][0]
            elif rid in self._running:
                state = "ready"
                base_url = replica.base_url if replica else None
            elif rid in self._starting:
                state, base_url = "starting", replica.base_url if replica else None
            else:
                state, base_url = ("failed" if failure else "pending"), None
            out.append(
                {
                    "replica_id": rid,
                    "deployment_id": w.deployment_id,
                    "deployment": w.deployment,
                    "tenant": w.tenant,
                    "engine": w.engine.name if w.engine.is_real else self.engine,
                    "state": state,
                    "base_url": base_url,
                    "pid": replica.pid if replica else None,
                    "restarts": replica.restarts if replica else 0,
                    "error": failure.error if failure else None,
                    "num_failed_starts": failure.num_attempts if failure else 0,
                    "log_tail": failure.log_tail if failure else self._log_tail(rid),
                }
            )
        return out

    def run_states(self) -> dict[int, tuple[str, str | None]]:
        """Store replica id -> (run state, reason) of every wanted replica, as seen now.

        ``running`` (serving), ``starting`` (asked for, not ready; or restarting), ``pending``
        (nothing can take it now: "no Ray node has RBLN:4") or ``failed`` (its start failed,
        its engine died, or its external server does not answer), with the reason.
        """
        executor_state = {r.replica_id: r for r in self.executor.replicas()}
        reasons = getattr(self.executor, "reasons", {})
        out: dict[int, tuple[str, str | None]] = {}
        for w in self._wanted:
            if w.store_id is None:
                continue
            rid = w.replica_id
            failure = self._failures.get(rid)
            if rid in self._external:
                down = rid in self._external_down
                out[w.store_id] = (
                    ("failed", "the external server does not answer") if down else ("running", None)
                )
            elif rid in self._running:
                replica = executor_state.get(rid)
                if replica is not None and replica.state == ReplicaState.READY:
                    out[w.store_id] = ("running", None)
                elif replica is not None and replica.state == ReplicaState.STARTING:
                    out[w.store_id] = ("starting", "restarting")
                else:
                    why = reasons.get(rid) or "its engine exited; restarting"
                    out[w.store_id] = ("failed", str(why)[:REASON_LEN])
            elif rid in self._starting or failure is None:
                out[w.store_id] = ("starting", None)
            else:
                state = "pending" if failure.no_capacity else "failed"
                out[w.store_id] = (state, failure.error[:REASON_LEN])
        return out

    async def _record_run_states(self) -> None:
        """Write the run states that differ from the store's (as read this tick) (``record``)."""
        if self.record is None:
            return
        stored = {w.store_id: w.stored_run for w in self._wanted if w.store_id is not None}
        changed = {k: v for k, v in self.run_states().items() if stored.get(k) != v}
        if not changed:
            return
        try:
            await asyncio.to_thread(self.record, changed)
        except Exception as exc:  # the database is down: written again next tick
            log.warning("recording replicas' run states: %s", exc)

    # --- one tick --------------------------------------------------------------------------

    async def _apply(self, wanted: list[WantedReplica]) -> ReconcileReport:
        report = ReconcileReport()
        by_id = {w.replica_id: w for w in wanted}
        sync = getattr(self.executor, "sync", None)
        if sync is not None:  # Ray: adopt the store's replicas it runs, stop its orphans
            try:  # (what this tick stops itself below is left to it: off the pool first)
                await sync(
                    set(by_id) | set(self._running) | set(self._starting) | set(self._draining)
                )
            except NpuCenterError as exc:
                log.warning("executor sync: %s", exc)
        self._wanted = list(by_id.values())
        for rid in list(self._failures):
            if rid not in by_id:
                del self._failures[rid]
        for rid, task in list(self._starting.items()):
            if by_id.get(rid) is None or task.get_name() != _task_name(by_id[rid]):
                task.cancel()  # scaled down, deleted or changed while it was starting
                await asyncio.gather(task, return_exceptions=True)
                self._starting.pop(rid, None)
                report.stopped.append(rid)
        # cards another replica is placed on now (a preemption): their old engine stops at once
        needed = {
            (w.server, card)
            for w in wanted
            if self._running.get(w.replica_id) != w and self._draining.get(w.replica_id) != w
            for card in w.card_indices
        }
        for rid, have in list(self._draining.items()):
            if by_id.get(rid) == have:  # wanted again before its drain ended: serve again
                await self._end_drain(rid)
                self._running[rid] = have
                self.gateway.pool.undrain(rid)
            elif _on_cards(have, needed):
                await self._end_drain(rid, cancel=True)
                await self._stop(rid)
                report.stopped.append(rid)
        for rid, have in list(self._running.items()):
            if rid not in by_id and not _on_cards(have, needed):  # scaled down: finish first
                if await self._begin_drain(rid, have):
                    report.draining.append(rid)
                else:
                    report.stopped.append(rid)
            elif by_id.get(rid) != have:  # preempted, or its deployment/spec changed
                await self._stop(rid)
                report.stopped.append(rid)
        self._publish()  # before starting: a slow start keeps nothing stale in the pool
        now = time.monotonic()
        new = [
            w
            for rid, w in by_id.items()
            if rid not in self._running
            and rid not in self._starting
            and rid not in self._draining  # its old engine first (it starts after)
            and (rid not in self._failures or self._failures[rid].retry_at_s <= now)
        ]
        created = {
            w.replica_id: asyncio.create_task(self._start(w), name=_task_name(w)) for w in new
        }
        self._starting.update(created)
        if self._restarting is None or self._restarting.done():
            self._restarting = asyncio.create_task(self._restart_failed())
        restarting = self._restarting
        await self._check_external()
        pending = [*self._starting.values(), restarting]
        if pending:
            await asyncio.wait(pending, timeout=self.start_wait_s)
        for rid, task in created.items():
            if task.done():
                ok = not task.cancelled() and task.exception() is None and task.result()
                (report.started if ok else report.failed).append(rid)
        if restarting.done() and not restarting.cancelled() and restarting.exception() is None:
            report.restarted = restarting.result()
        self._publish()
        if report.changed or report.failed:
            log.info(
                "deployments: started %s, stopped %s, draining %s, restarted %s, failed %s",
                report.started or "-",
                report.stopped or "-",
                report.draining or "-",
                report.restarted or "-",
                report.failed or "-",
            )
        return report

    async def _start(self, w: WantedReplica) -> bool:
        """Start one replica's engine; record a failure (with the log tail) instead of raising."""
        rid = w.replica_id
        try:
            if w.engine.is_external:
                await self._reach_external(w)
            else:
                spec = w.spec(self.engine, models_dir=self.models_dir)
                if spec.engine != "virtual" and self._in_models_dir(spec.model_path):
                    await asyncio.to_thread(ensure_model, w.model, spec.model_path)
                replica = await self.executor.start(spec, replica_id=rid)
                if spec.engine != "virtual":
                    await self._require_listed(replica.base_url, w.model, None, 10.0)
                    await self._use_tokenizer(w.model, spec.model_path)
        except asyncio.CancelledError:
            if not w.engine.is_external and any(
                r.replica_id == rid for r in self.executor.replicas()
            ):
                with _suppress_npucenter():
                    await self.executor.stop(rid)
            raise
        except (NpuCenterError, OSError, ImportError) as exc:
            self._fail(w, exc)
            if not w.engine.is_external and any(
                r.replica_id == rid for r in self.executor.replicas()
            ):
                with _suppress_npucenter():
                    await self.executor.stop(rid)
            return False
        finally:
            if self._starting.get(rid) is asyncio.current_task():
                self._starting.pop(rid, None)
        self._failures.pop(rid, None)
        self._running[rid] = w
        self._publish()  # serve it as soon as it is up
        return True

    def _in_models_dir(self, path: str | None) -> bool:
        """Whether ``path`` is under ``models_dir`` (the center builds models only there)."""
        if path is None or self.models_dir is None:
            return False
        return Path(path).resolve().is_relative_to(Path(self.models_dir).resolve())

    async def _use_tokenizer(self, model: str, model_path: str | None) -> None:
        """Let the gateway count ``model``'s prompts with its own tokenizer (when local)."""
        counters = getattr(self.gateway, "token_counters", None)
        if counters is None or model in counters:
            return
        counter = await asyncio.to_thread(tokenizer_counter, model_path)
        if counter is not None:
            counters[model] = counter

    def _fail(self, w: WantedReplica, exc: BaseException) -> None:
        rid = w.replica_id
        details = getattr(exc, "details", None) or {}
        tail = str(details.get("log_tail") or "") or self._log_tail(rid)
        previous = self._failures.get(rid)
        attempts = previous.num_attempts + 1 if previous else 1
        backoff_s = min(60.0, 2.0 ** (attempts - 1))
        self._failures[rid] = EngineFailure(
            replica_id=rid,
            deployment_id=w.deployment_id,
            error=str(exc),
            log_tail=tail,
            at_s=time.time(),
            num_attempts=attempts,
            retry_at_s=time.monotonic() + (0.0 if attempts == 1 else backoff_s),
            no_capacity=isinstance(exc, CapacityUnavailableError),
        )
        log.error("replica %s of %s did not start: %s", rid, w.deployment, exc)

    async def _begin_drain(self, rid: str, w: WantedReplica) -> bool:
        """Take ``rid`` off routing and stop it once its requests finish (True: draining;
        False: it had none and is stopped now)."""
        left = self._inflight(rid)
        if (left == 0 and not self.drain_settle_s) or rid in self._external:
            await self._stop(rid)
            return False
        self._running.pop(rid, None)
        self._draining[rid] = w
        self.gateway.pool.drain(rid)  # no new request from now on
        bound = self.drain_s if w.drain_s is None else w.drain_s
        self._drains[rid] = asyncio.create_task(self._drain(rid, bound), name=f"drain {rid}")
        log.info("replica %s of %s drains (%d in flight, at most %gs)", rid, w.deployment,
                 left, bound)  # fmt: skip
        return True

    async def _drain(self, rid: str, bound_s: float) -> None:
        start = time.monotonic()
        deadline = start + bound_s
        left = 0
        while True:
            left = self._inflight(rid)
            now = time.monotonic()
            if (left == 0 and now - start >= self.drain_settle_s) or now >= deadline:
                break
            await asyncio.sleep(self.drain_poll_s)
        if left:
            self.num_drain_cancelled += left
            log.warning("replica %s drained for %gs: %d requests cancelled", rid, bound_s, left)
        self._drains.pop(rid, None)
        await self._stop(rid)
        self.num_drained += 1
        self.wake()  # a replica waiting for this id starts now

    async def _end_drain(self, rid: str, *, cancel: bool = False) -> None:
        task = self._drains.pop(rid, None)
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        left = self._inflight(rid)
        if cancel and left:
            self.num_drain_cancelled += left
            log.warning("replica %s: its cards are taken; %d requests cancelled", rid, left)
        if not cancel:
            self._draining.pop(rid, None)

    async def _stop(self, replica_id: str) -> None:
        was = self._running.pop(replica_id, None) or self._draining.pop(replica_id, None)
        self._publish()  # off the pool first: no new request goes to it
        if self._external.pop(replica_id, None) is not None:
            self._external_down.discard(replica_id)
            return  # nothing of ours runs there
        if was is not None:
            self._stopping[replica_id] = was  # its cards are held until the engine is gone
        try:
            await self.executor.stop(replica_id)
        except NpuCenterError as exc:
            log.warning("stopping replica %s: %s", replica_id, exc)
        finally:
            self._stopping.pop(replica_id, None)
        self._forget_prefixes([replica_id])

    async def _restart_failed(self) -> list[str]:
        restart_failed = getattr(self.executor, "restart_failed", None)
        try:
            if restart_failed is not None:  # the local executor: exited processes, with back-off
                restarted = [r for r in await restart_failed() if r in self._running]
            else:
                restarted = []
                for rid in [r for r in self._running if r not in self._external]:
                    if rid not in self._running or await self.executor.check(rid):
                        continue  # stopped meanwhile (scaled down), or alive
                    await self.executor.restart(rid)
                    if rid not in self._running:  # stopped while it restarted: stop it again
                        with _suppress_npucenter():
                            await self.executor.stop(rid)
                        continue
                    restarted.append(rid)
        except NpuCenterError as exc:
            log.warning("restarting failed replicas: %s", exc)
            return []
        self._forget_prefixes(restarted)  # a restarted engine's KV cache is empty
        if restarted:
            self._publish()
        return restarted

    # --- external servers ------------------------------------------------------------------

    async def _reach_external(self, w: WantedReplica) -> None:
        choice = w.engine
        assert choice.base_url is not None
        key = self._secret(choice.api_key_env) if choice.api_key_env else None
        if choice.api_key_env and key is None:
            raise UpstreamError(
                f"external engine of {w.deployment}: ${choice.api_key_env} is not set",
                hint=f"export {choice.api_key_env} before starting the center",
            )
        base = choice.base_url.rstrip("/")
        await self._require_listed(base, w.model, key, choice.ready_timeout_s or 30.0)
        self._external[w.replica_id] = (base, key)
        self._external_down.discard(w.replica_id)

    async def _check_external(self) -> None:
        if not self._external:
            return
        async with httpx.AsyncClient(timeout=2.0) as client:
            for rid, (base, key) in list(self._external.items()):
                ok = await _answers(client, base, key)
                was_down = rid in self._external_down
                if ok and was_down:
                    self._external_down.discard(rid)
                    log.info("external replica %s answers again", rid)
                elif not ok and not was_down:
                    self._external_down.add(rid)
                    log.warning("external replica %s at %s does not answer", rid, base)

    async def _require_listed(
        self, base_url: str, model: str, key: str | None, timeout_s: float
    ) -> None:
        """Wait until ``GET base/v1/models`` lists ``model`` (raise UpstreamError at the timeout)."""
        deadline = time.monotonic() + timeout_s
        headers = {"authorization": f"Bearer {key}"} if key else {}
        last = "no answer"
        async with httpx.AsyncClient(timeout=2.0, headers=headers) as client:
            while True:
                try:
                    resp = await client.get(base_url.rstrip("/") + "/v1/models")
                    if resp.status_code == 200:
                        names = [m.get("id") for m in resp.json().get("data", [])]
                        if model in names:
                            return
                        last = f"/v1/models lists {names}, not {model!r}"
                    else:
                        last = f"/v1/models answered HTTP {resp.status_code}"
                except (httpx.HTTPError, ValueError, AttributeError) as exc:
                    last = repr(exc)
                if time.monotonic() > deadline:
                    raise UpstreamError(
                        f"the engine at {base_url} does not serve {model!r}: {last}",
                        hint="check the server's served model name (it must be the model id)",
                        details={"base_url": base_url, "model": model},
                    )
                await asyncio.sleep(0.5)

    # --- the gateway's view ----------------------------------------------------------------

    def _publish(self) -> None:
        urls = {  # ready ones only: a restarting engine gets no request until it answers
            r.replica_id: r.base_url
            for r in self.executor.replicas()
            if r.state == ReplicaState.READY
        }
        endpoints = []
        for rid, w in sorted([*self._running.items(), *self._draining.items()]):
            if rid in self._external:
                if rid not in self._external_down:
                    base, key = self._external[rid]
                    endpoints.append(w.endpoint(base, api_key=key))
            elif rid in urls:
                endpoints.append(w.endpoint(urls[rid]))
        pool = self.gateway.pool
        pool.set(endpoints)
        for rid in self._draining:
            pool.drain(rid)
        self.gateway.replica_servers = {rid: w.server for rid, w in self._running.items()}
        aliases: dict[str, str] = {}
        ambiguous: set[str] = set()
        for w in self._wanted:
            if w.alias and aliases.setdefault(w.alias, w.model) != w.model:
                ambiguous.add(w.alias)  # one name for two models: serve neither by it
        pool.set_aliases({a: m for a, m in aliases.items() if a not in ambiguous})
        self.gateway.expected_models = {w.model for w in self._wanted} | (set(aliases) - ambiguous)

    def _log_tail(self, replica_id: str, num_lines: int = 20) -> str:
        tail = getattr(self.executor, "log_tail", None)
        if tail is not None:
            try:
                return str(tail(replica_id))
            except NpuCenterError:
                pass  # a start that failed leaves no record; its log file stays
        log_dir = getattr(self.executor, "log_dir", None)
        if log_dir is None:
            return ""
        try:
            text = (Path(log_dir) / f"{replica_id}.log").read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-num_lines:])

    def _forget_prefixes(self, replica_ids: list[str]) -> None:
        index = getattr(
            getattr(getattr(self.gateway, "router", None), "policy", None), "index", None
        )
        if index is not None and hasattr(index, "forget"):
            for rid in replica_ids:
                index.forget(rid)
        loader = getattr(self.gateway, "adapter_loader", None)  # its adapters are gone too
        if loader is not None:
            for rid in replica_ids:
                loader.forget(rid)


def _stored_engine(dep: Any) -> EngineChoice | None:
    """The engine a deployment's row names (virtual when none); None when it is not usable."""
    name = getattr(dep, "engine", None) or "virtual"
    try:
        return engine_choice({**(getattr(dep, "engine_options", None) or {}), "name": name})
    except NpuCenterError as exc:  # checked when created; a later release may disagree
        log.error("deployment %s: engine %s not usable (%s); not served", dep.name, name, exc)
        return None


def _on_cards(w: WantedReplica, cards: set[tuple[str, int]]) -> bool:
    return any((w.server, card) in cards for card in w.card_indices)


def _task_name(w: WantedReplica) -> str:
    return f"start {w.replica_id} {hash(w)}"


async def _answers(client: httpx.AsyncClient, base_url: str, key: str | None) -> bool:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    for path in ("/health", "/v1/models"):
        try:
            resp = await client.get(base_url + path, headers=headers)
        except httpx.HTTPError:
            return False
        if resp.status_code == 200:
            return True
    return False


class _suppress_npucenter:
    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, exc: Any, tb: Any) -> bool:
        if exc is not None and isinstance(exc, NpuCenterError):
            log.warning("stopping a replica that failed to start: %s", exc)
            return True
        return False


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
