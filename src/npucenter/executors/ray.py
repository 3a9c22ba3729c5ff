"""Replicas as Ray actors on the node whose accelerators fit (``npucenter up --executor ray``).

NOTE(executors): each replica is one detached, named actor (``npucenter-replica-<id>`` in the
namespace ``npucenter``) that starts the replica's engine as a child process on its node.

- **Resources are Ray's own names** (ray/_private/accelerators: ``furiosa.py`` ``FURIOSA``,
  ``rbln.py`` ``RBLN``, ``nvidia_gpu.py`` ``GPU``; types from ``ray.util.accelerators``:
  ``FURIOSA_RNGD``, ``H100``, ``H200``, ...): an RNGD replica of ``tp`` cards asks for
  ``{"FURIOSA": tp}`` and ``accelerator_type="FURIOSA_RNGD"``, a Rebellions one ``{"RBLN": tp}``
  (Ray's RBLN type is whatever ``rebel.get_npu_name()`` says, so none is asked), a GPU one
  ``num_gpus=tp`` and its ``accelerator_type``. CPU and memory come from the spec
  (``num_cpus``, ``memory_gb``; nothing by default: the cards bound a node's replicas).
- **The cards Ray assigns are the cards the engine uses**: the actor reads its accelerator ids
  from Ray's runtime context and launches the engine on those (``device_indices``), and keeps
  the visible-devices variable Ray set (``CUDA_VISIBLE_DEVICES``, ``RBLN_DEVICES``,
  ``FURIOSA_DEVICES``) rather than the engine's own.
- **The store's server, where Ray knows it**: a node started with the label
  ``npucenter-server=<server>`` (``ray start --labels npucenter-server=rngd-0``) takes the
  replicas admission placed on that server (``label_selector``; the replica id is
  ``<server>-r<card>``); when no live node carries the label (it died, or labels are not
  used), Ray picks any node with the resources, so a dead node's replicas start elsewhere.
- **The bind address is configuration** (``bind_host``; default: the node's own address as
  Ray knows it), never ``0.0.0.0``.
- **A replica no node can take fails at once**: before creating the actor, the live nodes'
  totals (the labelled node's, when one is asked for) are checked against what it asks;
  none fits -> :class:`CapacityUnavailableError` "no Ray node has RBLN:4" (the reconciler
  records the replica as ``pending`` with that reason and retries with a back-off).
- **Every call is bounded in time**: placement (``place_timeout_s``: no node fits -> the actor
  is killed and the replica is FAILED with the reason), readiness (the engine's own timeout),
  every other call (``call_timeout_s``) and stop (``grace_s`` + ``call_timeout_s``, then
  ``ray.kill``).
- **The store is the truth of what runs**: :meth:`RayExecutor.sync` (the reconciler calls it at
  every tick, the first included) lists the namespace's actors, adopts those of wanted replicas
  it does not hold (a restarted center finds its engines), and stops the others (orphans,
  its own included: a restart that raced a scale-down).
- ``ray.init`` installs its own SIGTERM handler; the server's handlers are put back after it.

Ray is optional: it is imported only when used; a missing install raises
:class:`NotSupportedError` with the pip command.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import importlib
import itertools
import logging
import re
import signal
import threading
import time
from dataclasses import dataclass, replace
from typing import Any

import httpx

from npucenter.engines import ENGINES, PARENT_PID_ENV, ReplicaSpec, device_family
from npucenter.errors import (
    CapacityUnavailableError,
    NotFoundError,
    NotSupportedError,
    NpuCenterError,
    UpstreamError,
)
from npucenter.executors.base import EXECUTORS, ReplicaState, RunningReplica
from npucenter.executors.local import healthy
from npucenter.settings import environ

__all__ = [
    "ACTOR_PREFIX",
    "RAY_INSTALL_HINT",
    "RAY_NAMESPACE",
    "RAY_RESOURCE",
    "RAY_VISIBLE_DEVICES_ENV",
    "SERVER_LABEL",
    "RayExecutor",
    "accelerator_resources",
    "ray_actor_options",
]

log = logging.getLogger(__name__)

RAY_INSTALL_HINT = "pip install 'ray[default]>=2.40'"
RAY_NAMESPACE = "npucenter"
ACTOR_PREFIX = "npucenter-replica-"
#: The node label naming the store's server a Ray node is (``ray start --labels KEY=NAME``).
SERVER_LABEL = "npucenter-server"
#: device family -> Ray's resource name for its cards (ray/_private/accelerators/*.py).
RAY_RESOURCE = {"rngd": "FURIOSA", "rbln": "RBLN", "gpu": "GPU"}
#: device family -> the visible-devices variable Ray sets in an actor holding those cards.
RAY_VISIBLE_DEVICES_ENV = {
    "rngd": "FURIOSA_DEVICES",
    "rbln": "RBLN_DEVICES",
    "gpu": "CUDA_VISIBLE_DEVICES",
}
# device id needle -> Ray accelerator_type (ray.util.accelerators); order: most specific first
_GPU_TYPES = (
    ("gh200", "GH200"),
    ("gb200", "GB200"),
    ("h200", "H200"),
    ("h100", "H100"),
    ("h20", "H20"),
    ("b200", "B200"),
    ("l40s", "L40S"),
    ("a100", "A100"),
    ("l4", "L4"),
)
_FURIOSA_RNGD = "FURIOSA_RNGD"  # ray.util.accelerators.FURIOSA_RNGD
_GB = 1024**3


def accelerator_resources(spec: ReplicaSpec) -> dict[str, Any]:
    """Ray resource options for one replica of ``spec``: what its node must advertise.

    ``{"resources": {"FURIOSA": tp}, "accelerator_type": "FURIOSA_RNGD"}`` for RNGD,
    ``{"resources": {"RBLN": tp}}`` for ATOM/REBEL, ``{"num_gpus": tp, "accelerator_type":
    "H100"}`` for GPUs (type omitted where Ray names none).
    """
    family = device_family(spec.device)
    if family == "rngd":
        return {"resources": {"FURIOSA": float(spec.tp)}, "accelerator_type": _FURIOSA_RNGD}
    if family == "rbln":
        return {"resources": {"RBLN": float(spec.tp)}}
    out: dict[str, Any] = {"num_gpus": float(spec.tp)}
    key = re.sub(r"[^a-z0-9]", "", spec.device.lower())
    for needle, ray_type in _GPU_TYPES:
        if needle in key:
            out["accelerator_type"] = ray_type
            break
    return out


def ray_actor_options(
    spec: ReplicaSpec, replica_id: str, *, namespace: str = RAY_NAMESPACE
) -> dict[str, Any]:
    """The full ``.options(...)`` of the actor that runs one replica on its node."""
    family = device_family(spec.device)
    env = {k: v for k, v in spec.env if k != RAY_VISIBLE_DEVICES_ENV[family]}
    options: dict[str, Any] = {
        "name": ACTOR_PREFIX + replica_id,
        "namespace": namespace,
        "lifetime": "detached",  # outlives a center restart: the next one adopts it
        "max_restarts": 0,  # the reconciler restarts it, where the store says
        "num_cpus": float(spec.num_cpus or 0.0),
        "runtime_env": {"env_vars": env},
        **accelerator_resources(spec),
    }
    if spec.memory_gb:
        options["memory"] = int(spec.memory_gb * _GB)
    return options


def _import_ray() -> Any:
    try:
        return importlib.import_module("ray")
    except ImportError:
        raise NotSupportedError(
            "ray executor", "ray is not installed", hint=f"install it with: {RAY_INSTALL_HINT}"
        ) from None


@contextlib.contextmanager
def _keep_signal_handlers() -> Any:
    """``ray.init`` installs its own SIGTERM/SIGINT handlers: put the server's back after."""
    saved: dict[int, Any] = {}
    with contextlib.suppress(ValueError):  # not the main thread: nothing can change them
        saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in saved.items():
            with contextlib.suppress(ValueError, TypeError):
                signal.signal(sig, handler)


class _ReplicaProcess:
    """Runs on the chosen node: starts the replica's engine there on Ray's cards."""

    def __init__(self, spec: ReplicaSpec, bind_host: str | None) -> None:
        self.spec = spec
        self.bind_host = bind_host
        self.proc: Any = None
        self.info_: dict[str, Any] = {}

    def start(self) -> dict[str, Any]:
        import os
        import tempfile

        import ray

        from npucenter.executors.local import free_port
        from npucenter.executors.procs import spawn_group

        ctx = ray.get_runtime_context()
        family = device_family(self.spec.device)
        ids = [str(i) for i in ctx.get_accelerator_ids().get(RAY_RESOURCE[family], [])]
        spec = self.spec
        if len(ids) == spec.tp and all(i.isdigit() for i in ids):
            spec = replace(spec, device_indices=tuple(int(i) for i in ids))
        host = self.bind_host or ray.util.get_node_ip_address()
        launch = ENGINES.get(spec.engine).launch_spec(spec, host=host, port=free_port(host))
        visible = RAY_VISIBLE_DEVICES_ENV[family]
        inherited = environ()  # this worker's: Ray set the visible-devices variable in it
        env = {**inherited, **launch.env_dict(), PARENT_PID_ENV: str(os.getpid())}
        if visible in inherited:  # Ray's assignment wins over the engine's own
            env[visible] = inherited[visible]
        log_path = os.path.join(tempfile.gettempdir(), f"npucenter-replica-{os.getpid()}.log")
        with open(log_path, "ab") as out:
            self.proc = spawn_group(launch.argv, env=env, out=out)
        self.info_ = {
            "host": host,
            "port": launch.port,
            "node_id": ctx.get_node_id(),
            "cards": ids,
            "visible_devices": env.get(visible, ""),
            "pid": self.proc.pid,
            "log_path": log_path,
        }
        return self.info_

    def info(self) -> dict[str, Any]:
        return {**self.info_, "alive": self.alive()}

    def get_spec(self) -> ReplicaSpec:
        return self.spec

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, grace_s: float) -> None:
        import os
        import signal as signals
        import subprocess

        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signals.SIGTERM)
        try:
            self.proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signals.SIGKILL)
            self.proc.wait()


@dataclass(frozen=True, slots=True)
class SyncReport:
    """What :meth:`RayExecutor.sync` did (replica ids)."""

    adopted: list[str]
    stopped: list[str]  # orphans: actors of replicas the store does not want


class RayExecutor:
    """Places each replica as a Ray actor on a node that advertises its accelerator.

    Args:
        address: the Ray cluster (``"auto"``, ``"127.0.0.1:6379"``, ``"ray://host:10001"``);
            ``None`` uses an already-initialised Ray or starts a local one.
        namespace: the actors' namespace; one center per namespace (it stops what it does not
            want there).
        bind_host: the address engines listen on (default: their node's address).
        place_timeout_s: how long a replica may wait for a node with its resources.
        call_timeout_s: the bound of every other call to an actor.
        connect_timeout_s: the bound of connecting to the cluster (``ray.init``).
    """

    name = "ray"

    def __init__(
        self,
        *,
        address: str | None = "auto",
        namespace: str = RAY_NAMESPACE,
        bind_host: str | None = None,
        place_timeout_s: float = 60.0,
        call_timeout_s: float = 10.0,
        connect_timeout_s: float = 30.0,
    ) -> None:
        self.address = address
        self.namespace = namespace
        self.bind_host = bind_host
        self.place_timeout_s = place_timeout_s
        self.call_timeout_s = call_timeout_s
        self.connect_timeout_s = connect_timeout_s
        self._init_future: concurrent.futures.Future[None] | None = None
        self._ray: Any = None
        self._actors: dict[str, Any] = {}
        self._replicas: dict[str, RunningReplica] = {}
        self.reasons: dict[str, str] = {}  # replica id -> why it is FAILED
        self._info: dict[str, dict[str, Any]] = {}  # replica id -> where it runs
        self._ids = itertools.count(1)

    async def _ensure_ray(self) -> Any:
        """Ray, connected: ``ray.init`` runs in a worker thread, bounded by ``connect_timeout_s``.

        In a worker thread ``ray.init`` installs no signal handler, so the server's SIGTERM
        handling stays its own; an unreachable cluster is an :class:`UpstreamError`, never a
        server blocked in ``ray.init``.
        """
        if self._ray is not None:
            return self._ray
        ray = _import_ray()
        if not ray.is_initialized():
            if self._init_future is None:
                self._init_future = _in_daemon_thread(self._init, ray)
            try:
                await asyncio.wait_for(
                    asyncio.shield(asyncio.wrap_future(self._init_future)), self.connect_timeout_s
                )
            except TimeoutError:
                raise UpstreamError(
                    f"ray: no answer from the cluster at {self.address!r} within "
                    f"{self.connect_timeout_s:g} s",
                    hint="is the Ray head running (`ray start --head`) and reachable there?",
                    details={"address": self.address, "timeout_s": self.connect_timeout_s},
                ) from None
            except Exception as exc:
                self._init_future = None
                raise UpstreamError(
                    f"ray: cannot connect to {self.address!r}: {exc}",
                    details={"address": self.address},
                ) from exc
        self._ray = ray
        return ray

    def _init(self, ray: Any) -> None:
        with _keep_signal_handlers():
            ray.init(
                address=self.address,
                namespace=self.namespace,
                ignore_reinit_error=True,
                log_to_driver=False,
                logging_level=logging.WARNING,
            )

    async def _call(self, ref: Any, timeout_s: float, what: str) -> Any:
        try:
            return await asyncio.wait_for(asyncio.wrap_future(ref.future()), timeout_s)
        except TimeoutError:
            raise UpstreamError(
                f"ray: {what} did not answer within {timeout_s:g} s",
                details={"timeout_s": timeout_s},
            ) from None
        except NpuCenterError:
            raise
        except Exception as exc:  # ray's errors are many (actor died, node gone, ...)
            raise UpstreamError(f"ray: {what} failed: {type(exc).__name__}: {exc}") from exc

    # --- the Executor protocol ----------------------------------------------------------------
    async def start(
        self, spec: ReplicaSpec, *, replica_id: str | None = None, wait_ready: bool = True
    ) -> RunningReplica:
        """Create the actor on a fitting node and start the engine there (bounded in time).

        A replica this executor already holds alive (adopted by :meth:`sync`) is returned as is.
        """
        ray = await self._ensure_ray()
        rid = replica_id or f"{spec.engine}-{next(self._ids)}"
        held = self._replicas.get(rid)
        if held is not None and held.state in (ReplicaState.READY, ReplicaState.STARTING):
            if held.spec == spec:
                return held
            await self.stop(rid)
        options = ray_actor_options(spec, rid, namespace=self.namespace)
        server = _server_of(rid)
        if server is not None and server in await asyncio.to_thread(_labelled_servers, ray):
            options["label_selector"] = {SERVER_LABEL: server}
        await self._require_a_fitting_node(ray, options, spec, rid)
        actor = await self._create(ray, options, spec, rid)
        try:
            info = await self._call(
                actor.start.remote(), self.place_timeout_s, f"placing replica {rid!r}"
            )
        except UpstreamError as exc:
            with contextlib.suppress(Exception):
                ray.kill(actor, no_restart=True)
            wants = {k: v for k, v in options.items() if k in ("resources", "num_gpus")}
            wants |= {
                k: options[k]
                for k in ("accelerator_type", "num_cpus", "label_selector")
                if k in options
            }
            reason = f"no node took replica {rid!r} ({wants}) in time: {exc.message}"
            self._failed(rid, spec, reason)
            raise UpstreamError(reason, details={"resources": wants}) from exc
        replica = self._record(rid, spec, actor, info, ReplicaState.STARTING)
        if wait_ready:
            launch = replica.launch
            deadline = time.monotonic() + launch.ready_timeout_s
            async with httpx.AsyncClient(timeout=2.0) as client:
                while not await healthy(client, launch.health_url):
                    if time.monotonic() > deadline:
                        await self._kill(rid, grace_s=2.0)
                        reason = f"replica {rid!r} on {launch.host} was not ready in time"
                        self._failed(rid, spec, reason)
                        raise UpstreamError(reason, details={"timeout_s": launch.ready_timeout_s})
                    await asyncio.sleep(0.2)
            replica = replace(replica, state=ReplicaState.READY)
            self._replicas[rid] = replica
        return replica

    async def stop(self, replica_id: str, *, grace_s: float = 5.0) -> None:
        """Stop the engine (SIGTERM, SIGKILL after ``grace_s``) and kill its actor (bounded)."""
        ray = await self._ensure_ray()
        if replica_id not in self._actors:
            try:
                self._actors[replica_id] = ray.get_actor(
                    ACTOR_PREFIX + replica_id, namespace=self.namespace
                )
            except ValueError:
                raise NotFoundError("replica", replica_id, valid=list(self._actors)) from None
        await self._kill(replica_id, grace_s=grace_s)
        if replica_id in self._replicas:
            self._replicas[replica_id] = replace(
                self._replicas[replica_id], state=ReplicaState.STOPPED
            )

    async def restart(self, replica_id: str) -> RunningReplica:
        """Stop and start again (Ray places it again: another node if its own is gone)."""
        old = self._replicas[replica_id]
        with contextlib.suppress(NpuCenterError):
            await self.stop(replica_id)
        replica = await self.start(old.spec, replica_id=replica_id)
        replica = replace(replica, restarts=old.restarts + 1)
        self._replicas[replica_id] = replica
        return replica

    async def check(self, replica_id: str) -> bool:
        """The actor answers, its engine process is alive and its health check is 200."""
        actor = self._actors.get(replica_id)
        replica = self._replicas.get(replica_id)
        if actor is None or replica is None or replica.state == ReplicaState.STOPPED:
            return False
        try:
            ok = bool(await self._call(actor.alive.remote(), self.call_timeout_s, "check"))
        except UpstreamError as exc:
            self.reasons[replica_id] = exc.message
            ok = False
        if ok:
            async with httpx.AsyncClient(timeout=2.0) as client:
                ok = await healthy(client, replica.launch.health_url)
        self._replicas[replica_id] = replace(
            replica, state=ReplicaState.READY if ok else ReplicaState.FAILED
        )
        return ok

    def replicas(self) -> list[RunningReplica]:
        """Replicas not stopped."""
        return [r for r in self._replicas.values() if r.state != ReplicaState.STOPPED]

    async def shutdown(self) -> None:
        """Stop every replica this executor holds (in parallel, each bounded)."""
        if self._ray is None:
            return
        await asyncio.gather(
            *(self.stop(rid) for rid in list(self._actors)), return_exceptions=True
        )

    # --- more than the protocol ---------------------------------------------------------------
    async def sync(self, wanted: set[str]) -> SyncReport:
        """Make Ray's actors match the store: adopt wanted ones, stop orphans (bounded)."""
        ray = await self._ensure_ray()
        names = await asyncio.to_thread(ray.util.list_named_actors, all_namespaces=True)
        ours = sorted(
            n["name"][len(ACTOR_PREFIX) :]
            for n in names
            if n.get("namespace") == self.namespace and n["name"].startswith(ACTOR_PREFIX)
        )
        adopted, stopped = [], []
        for rid in ours:
            if rid in self._actors:
                if rid not in wanted:  # held, but the store no longer wants it (a restart raced
                    with contextlib.suppress(NpuCenterError):  # a scale-down): stop it
                        await self.stop(rid)
                    stopped.append(rid)
                continue
            if rid in wanted and await self._adopt(ray, rid):
                adopted.append(rid)
                continue
            with contextlib.suppress(NpuCenterError):
                await self.stop(rid)
            stopped.append(rid)
        if adopted or stopped:
            log.info("ray: adopted replicas %s, stopped orphans %s", adopted or "-", stopped or "-")
        return SyncReport(adopted=adopted, stopped=stopped)

    def actor_info(self, replica_id: str) -> dict[str, Any]:
        """Where the replica runs: node id, host, port, Ray's cards (tests, the dashboard)."""
        return dict(self._info.get(replica_id, {}))

    # --- helpers ------------------------------------------------------------------------------
    async def _create(self, ray: Any, options: dict[str, Any], spec: ReplicaSpec, rid: str) -> Any:
        actor_cls = ray.remote(_ReplicaProcess)
        deadline = time.monotonic() + self.call_timeout_s
        while True:
            try:
                return actor_cls.options(**options).remote(spec, self.bind_host)
            except ValueError as exc:  # the name of a just-killed actor is not free yet
                if time.monotonic() > deadline:
                    self._failed(rid, spec, str(exc))
                    raise UpstreamError(f"ray: replica {rid!r} cannot be created: {exc}") from exc
                await asyncio.sleep(0.2)

    async def _require_a_fitting_node(
        self, ray: Any, options: dict[str, Any], spec: ReplicaSpec, rid: str
    ) -> None:
        """Raise at once when no live node (the labelled one, if asked) has what it asks for.

        Totals, not what is free: a node that has the cards but lends them now may free them,
        so only a cluster with no such node is refused without waiting ``place_timeout_s``.

        Raises:
            CapacityUnavailableError: "no Ray node has RBLN:4" (retryable: a node may join).
        """
        ask = _resource_ask(options)
        nodes = await asyncio.to_thread(ray.nodes)
        wanted_label = (options.get("label_selector") or {}).get(SERVER_LABEL)
        live = [
            n
            for n in nodes
            if n.get("Alive")
            and (wanted_label is None or (n.get("Labels") or {}).get(SERVER_LABEL) == wanted_label)
        ]
        if any(_fits(n.get("Resources") or {}, ask) for n in live):
            return
        what = ", ".join(f"{k}:{v:g}" for k, v in ask.items())
        where = f" labelled {SERVER_LABEL}={wanted_label}" if wanted_label else ""
        reason = f"no Ray node{where} has {what}"
        self._failed(rid, spec, reason)
        raise CapacityUnavailableError(
            reason,
            hint="start a node with those resources (`ray start --resources ...`), "
            "or scale the deployment down",
            replica_id=rid,
            resources=ask,
            num_live_nodes=len(live),
        )

    async def _adopt(self, ray: Any, rid: str) -> bool:
        try:
            actor = ray.get_actor(ACTOR_PREFIX + rid, namespace=self.namespace)
            info = await self._call(actor.info.remote(), self.call_timeout_s, f"adopting {rid!r}")
            spec = await self._call(
                actor.get_spec.remote(), self.call_timeout_s, f"reading {rid!r}"
            )
        except (ValueError, UpstreamError) as exc:
            log.warning("ray: replica %s not adopted: %s", rid, exc)
            return False
        if not info.get("alive"):
            return False
        self._record(rid, spec, actor, info, ReplicaState.READY)
        return True

    def _record(
        self, rid: str, spec: ReplicaSpec, actor: Any, info: dict[str, Any], state: ReplicaState
    ) -> RunningReplica:
        launch = ENGINES.get(spec.engine).launch_spec(spec, host=info["host"], port=info["port"])
        old = self._replicas.get(rid)
        replica = RunningReplica(
            replica_id=rid,
            spec=spec,
            launch=launch,
            state=state,
            node=str(info.get("node_id", "ray")),
            restarts=old.restarts if old is not None else 0,
        )
        self._actors[rid] = actor
        self._replicas[rid] = replica
        self._info[rid] = dict(info)
        self.reasons.pop(rid, None)
        return replica

    def _failed(self, rid: str, spec: ReplicaSpec, reason: str) -> None:
        self.reasons[rid] = reason
        old = self._replicas.get(rid)
        if old is not None:
            self._replicas[rid] = replace(old, state=ReplicaState.FAILED)
        self._actors.pop(rid, None)
        log.warning("ray: %s", reason)

    async def _kill(self, rid: str, *, grace_s: float) -> None:
        ray = self._ray
        actor = self._actors.pop(rid, None)
        if actor is None:
            return
        with contextlib.suppress(UpstreamError):
            await self._call(actor.stop.remote(grace_s), grace_s + self.call_timeout_s, "stop")
        with contextlib.suppress(Exception):  # gone already
            ray.kill(actor, no_restart=True)


def _in_daemon_thread(fn: Any, *args: Any) -> concurrent.futures.Future[None]:
    """Run ``fn`` in a daemon thread: a ``ray.init`` that never returns never blocks exit."""
    future: concurrent.futures.Future[None] = concurrent.futures.Future()

    def run() -> None:
        try:
            fn(*args)
        except BaseException as exc:  # handed to the awaiting side
            future.set_exception(exc)
        else:
            future.set_result(None)

    threading.Thread(target=run, name="ray-init", daemon=True).start()
    return future


def _resource_ask(options: dict[str, Any]) -> dict[str, float]:
    """The node resources an actor's options ask for, by Ray's resource names."""
    ask = {k: float(v) for k, v in (options.get("resources") or {}).items()}
    if options.get("num_gpus"):
        ask["GPU"] = float(options["num_gpus"])
    if options.get("num_cpus"):
        ask["CPU"] = float(options["num_cpus"])
    if options.get("memory"):
        ask["memory"] = float(options["memory"])
    if options.get("accelerator_type"):
        ask[f"accelerator_type:{options['accelerator_type']}"] = 0.001  # Ray's own amount
    return ask


def _fits(resources: dict[str, Any], ask: dict[str, float]) -> bool:
    return all(float(resources.get(k, 0.0)) >= v for k, v in ask.items())


def _server_of(replica_id: str) -> str | None:
    match = re.fullmatch(r"(.+)-r\d+", replica_id)  # the reconciler's "<server>-r<first card>"
    return match.group(1) if match else None


def _labelled_servers(ray: Any) -> set[str]:
    """The store servers live Ray nodes say they are (their ``npucenter-server`` label)."""
    out = set()
    for node in ray.nodes():
        label = (node.get("Labels") or {}).get(SERVER_LABEL)
        if node.get("Alive") and label:
            out.add(str(label))
    return out


EXECUTORS.add("ray", RayExecutor)
