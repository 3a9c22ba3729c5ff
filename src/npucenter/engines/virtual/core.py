"""The replica core the virtual engine drives: the simulator's own ``ReplicaCore``.

The virtual engine and the digital twin batch with one piece of code
(:class:`npucenter.sim.replica.ReplicaCore`): the engine calls ``step(now_s)`` in real time, the
simulator skips ahead with ``advance_until``; both give the same per-request timeline.
"""

from __future__ import annotations

from typing import Any

from npucenter.sim.replica import ReplicaConfig, ReplicaCore, SeqRequest, StepResult

__all__ = ["ReplicaConfig", "ReplicaCore", "SeqRequest", "StepResult", "make_replica_core"]


def make_replica_core(perf: Any, config: ReplicaConfig) -> tuple[ReplicaCore, type[SeqRequest]]:
    """The replica core for ``perf`` and the request class its ``add`` takes."""
    return ReplicaCore(perf, config), SeqRequest
