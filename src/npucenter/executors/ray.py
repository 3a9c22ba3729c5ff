"""Replicas on a Ray cluster whose nodes advertise their accelerators as resources.

A replica of ``tp`` RNGD cards asks Ray for ``{"RNGD": tp}``; Rebellions cards are ``RBLN``
(the resource key vllm-rbln's platform uses); GPUs use Ray's own ``num_gpus`` and
``accelerator_type``. Ray is optional: it is imported only when a replica is started, and a
missing install raises :class:`NotSupportedError` with the pip command.
"""

from __future__ import annotations

import asyncio
import importlib
import itertools
import logging
import re
import time
from dataclasses import replace
from typing import Any

import httpx

from npucenter.engines import ENGINES, ReplicaSpec, device_family
from npucenter.errors import NotFoundError, NotSupportedError, UpstreamError
from npucenter.executors.base import EXECUTORS, ReplicaState, RunningReplica
from npucenter.executors.local import healthy
from npucenter.settings import environ

__all__ = ["RAY_INSTALL_HINT", "RayExecutor", "accelerator_resources", "ray_actor_options"]

log = logging.getLogger(__name__)

RAY_INSTALL_HINT = "pip install 'ray[default]>=2.9'"

# device id -> Ray accelerator_type for GPUs (Ray's names, ray.util.accelerators)
_GPU_TYPES = (("h200", "H200"), ("h100", "H100"), ("l40s", "L40S"), ("a100", "A100"))


def accelerator_resources(spec: ReplicaSpec) -> dict[str, Any]:
    """Ray resource options for one replica of ``spec``: what the node must advertise.

    ``{"resources": {"RNGD": tp}}`` for RNGD, ``{"resources": {"RBLN": tp}}`` for ATOM/REBEL,
    ``{"num_gpus": tp, "accelerator_type": "H100"}`` for GPUs (type omitted if unknown).
    """
    family = device_family(spec.device)
    if family == "rngd":
        return {"resources": {"RNGD": float(spec.tp)}}
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
    spec: ReplicaSpec, replica_id: str, *, num_cpus: float = 1.0
) -> dict[str, Any]:
    """The full ``.options(...)`` of the actor that runs one replica on its node."""
    options: dict[str, Any] = {
        "name": f"npucenter-replica-{replica_id}",
        "num_cpus": num_cpus,
        "max_restarts": 0,
        "runtime_env": {"env_vars": dict(spec.env)},
        **accelerator_resources(spec),
    }
    return options


def _import_ray() -> Any:
    try:
        return importlib.import_module("ray")
    except ImportError:
        raise NotSupportedError(
            "ray executor", "ray is not installed", hint=f"install it with: {RAY_INSTALL_HINT}"
        ) from None


class _ReplicaProcess:
    """Runs on the chosen node: starts the replica's engine there on a free port."""

    def __init__(self, spec: ReplicaSpec) -> None:
        self.spec = spec
        self.proc: Any = None

    def start(self) -> tuple[str, int, tuple[str, ...]]:
        import socket
        import subprocess

        from npucenter.executors.local import free_port

        host = socket.gethostbyname(socket.gethostname())
        launch = ENGINES.get(self.spec.engine).launch_spec(
            self.spec, host="0.0.0.0", port=free_port("0.0.0.0")
        )
        env = {**environ(), **launch.env_dict()}
        self.proc = subprocess.Popen(launch.argv, env=env, start_new_session=True)
        return host, launch.port, launch.argv

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, grace_s: float) -> None:
        import os
        import signal
        import subprocess

        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


class RayExecutor:
    """Places each replica on a Ray node that advertises its accelerator (scale-out).

    Args:
        address: the Ray cluster (``"auto"``, ``ray://host:10001``); ``None`` uses an
            already-initialised Ray or starts a local one.
    """

    name = "ray"

    def __init__(self, *, address: str | None = "auto") -> None:
        self.address = address
        self._ray: Any = None
        self._actors: dict[str, Any] = {}
        self._replicas: dict[str, RunningReplica] = {}
        self._ids = itertools.count(1)

    def _ensure_ray(self) -> Any:
        if self._ray is None:
            ray = _import_ray()
            if not ray.is_initialized():
                ray.init(address=self.address, ignore_reinit_error=True)
            self._ray = ray
        return self._ray

    async def start(
        self, spec: ReplicaSpec, *, replica_id: str | None = None, wait_ready: bool = True
    ) -> RunningReplica:
        """Create the actor on a fitting node and start the engine there."""
        ray = self._ensure_ray()
        rid = replica_id or f"{spec.engine}-{next(self._ids)}"
        actor_cls = ray.remote(_ReplicaProcess)
        actor = actor_cls.options(**ray_actor_options(spec, rid)).remote(spec)
        try:
            host, port, _argv = await actor.start.remote()
        except Exception as exc:  # ray's errors are many; all mean the same here
            raise UpstreamError(f"ray could not start replica {rid!r}: {exc}") from exc
        launch = ENGINES.get(spec.engine).launch_spec(spec, host=host, port=port)
        replica = RunningReplica(
            replica_id=rid, spec=spec, launch=launch, state=ReplicaState.STARTING, node=host
        )
        self._actors[rid] = actor
        self._replicas[rid] = replica
        if wait_ready:
            deadline = time.monotonic() + launch.ready_timeout_s
            async with httpx.AsyncClient(timeout=2.0) as client:
                while not await healthy(client, launch.health_url):
                    if time.monotonic() > deadline:
                        await self.stop(rid)
                        raise UpstreamError(f"replica {rid!r} on {host} was not ready in time")
                    await asyncio.sleep(0.5)
            replica = replace(replica, state=ReplicaState.READY)
            self._replicas[rid] = replica
        return replica

    async def stop(self, replica_id: str, *, grace_s: float = 5.0) -> None:
        """Stop the engine and kill its actor."""
        ray = self._ensure_ray()
        actor = self._actors.pop(replica_id, None)
        if actor is None:
            raise NotFoundError("replica", replica_id, valid=list(self._actors))
        await actor.stop.remote(grace_s)
        ray.kill(actor)
        self._replicas[replica_id] = replace(self._replicas[replica_id], state=ReplicaState.STOPPED)

    async def restart(self, replica_id: str) -> RunningReplica:
        """Stop and start again (possibly on another node)."""
        old = self._replicas[replica_id]
        await self.stop(replica_id)
        replica = await self.start(old.spec, replica_id=replica_id)
        replica = replace(replica, restarts=old.restarts + 1)
        self._replicas[replica_id] = replica
        return replica

    async def check(self, replica_id: str) -> bool:
        """The actor's process is alive."""
        actor = self._actors.get(replica_id)
        return bool(actor is not None and await actor.alive.remote())

    def replicas(self) -> list[RunningReplica]:
        """Replicas not stopped."""
        return [r for r in self._replicas.values() if r.state != ReplicaState.STOPPED]

    async def shutdown(self) -> None:
        """Stop every replica."""
        for rid in list(self._actors):
            await self.stop(rid)


EXECUTORS.add("ray", RayExecutor)
