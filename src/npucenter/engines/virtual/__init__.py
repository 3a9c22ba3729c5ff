"""The virtual engine: an OpenAI-compatible server that behaves like a given device and model.

Step times and power come from ``npucenter.perf``; batching is the simulator's replica logic
(``npucenter.sim.replica.ReplicaCore``) driven in real time. Run it with
``python -m npucenter.engines.virtual --model llama-3.1-8b --device rngd --port 8001``.
"""

from __future__ import annotations

from npucenter.engines.virtual.spec import VirtualEngine

__all__ = ["VirtualEngine"]
