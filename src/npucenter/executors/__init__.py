"""Executors: run engine replicas as local processes (default), on Ray, inside this process
(virtual engines only), or in memory (tests).

``EXECUTORS.get("local")()`` builds one; every executor satisfies :class:`Executor`.
"""

from __future__ import annotations

from npucenter.executors.base import EXECUTORS, Executor, ReplicaState, RunningReplica
from npucenter.executors.fake import FakeExecutor
from npucenter.executors.inprocess import InProcessExecutor
from npucenter.executors.local import LocalProcessExecutor, free_port
from npucenter.executors.ray import RayExecutor, accelerator_resources, ray_actor_options

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
    "free_port",
    "ray_actor_options",
]
