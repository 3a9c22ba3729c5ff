"""The digital twin: a discrete-event simulator of replicas, routers and the whole center.

Pure core: virtual time only, randomness from a seed, no I/O. ``replica`` holds the per-replica
scheduler also driven in real time by the virtual engine; ``center`` runs a fleet on a trace.
"""

from __future__ import annotations

from npucenter.sim.replica import (
    Completion,
    ReplicaConfig,
    ReplicaCore,
    SeqRequest,
    StepCostModel,
    StepResult,
)

__all__ = [
    "Completion",
    "ReplicaConfig",
    "ReplicaCore",
    "SeqRequest",
    "StepCostModel",
    "StepResult",
]
