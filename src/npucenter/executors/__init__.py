"""Executors: run engine replicas as local processes (default), on Ray, inside this process
(virtual engines only), or in memory (tests).

``EXECUTORS.get("local")()`` builds one; every executor satisfies :class:`Executor`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from npucenter.executors.base import EXECUTORS, Executor, ReplicaState, RunningReplica
from npucenter.executors.fake import FakeExecutor
from npucenter.executors.inprocess import InProcessExecutor
from npucenter.executors.local import LocalProcessExecutor, free_port
from npucenter.executors.ray import RayExecutor, accelerator_resources, ray_actor_options

if TYPE_CHECKING:
    from npucenter.settings import Settings

__all__ = [
    "EXECUTORS",
    "Executor",
    "FakeExecutor",
    "InProcessExecutor",
    "LocalProcessExecutor",
    "RayExecutor",
    "ReplicaState",
    "RunningReplica",
    "accelerator_resources",
    "executor_for",
    "free_port",
    "ray_actor_options",
]


def executor_for(settings: Settings) -> Any | None:
    """The replicas' executor the settings name (``None``: the default local processes)."""
    if settings.executor == "ray":
        return RayExecutor(address=settings.ray_address or "auto", bind_host=settings.engine_host)
    if settings.engine_host:
        return LocalProcessExecutor(host=settings.engine_host)
    return None
