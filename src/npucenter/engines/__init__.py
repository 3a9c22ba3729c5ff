"""Engines: how to launch and talk to vLLM, furiosa-llm, vllm-rbln, external servers and the virtual engine.

Every engine registers itself in :data:`ENGINES`; ``ENGINES.get(name).launch_spec(spec, ...)``
builds the exact process to start. Executors start it.
"""

from __future__ import annotations

from npucenter.engines.base import (
    ENGINES,
    PARENT_PID_ENV,
    Engine,
    LaunchSpec,
    ReplicaSpec,
    default_engine_for_device,
    device_family,
    require_device_family,
)
from npucenter.engines.external import ExternalEngine
from npucenter.engines.furiosa import FuriosaLlmEngine
from npucenter.engines.options import EngineChoice, engine_choice, engine_for_device
from npucenter.engines.rbln import VllmRblnEngine
from npucenter.engines.virtual import VirtualEngine
from npucenter.engines.vllm import VllmEngine

__all__ = [
    "ENGINES",
    "PARENT_PID_ENV",
    "Engine",
    "EngineChoice",
    "ExternalEngine",
    "FuriosaLlmEngine",
    "LaunchSpec",
    "ReplicaSpec",
    "VirtualEngine",
    "VllmEngine",
    "VllmRblnEngine",
    "default_engine_for_device",
    "device_family",
    "engine_choice",
    "engine_for_device",
    "launch_spec",
    "require_device_family",
]


def launch_spec(spec: ReplicaSpec, *, host: str = "127.0.0.1", port: int) -> LaunchSpec:
    """The launch of ``spec`` by its engine (``ENGINES.get(spec.engine)``)."""
    return ENGINES.get(spec.engine).launch_spec(spec, host=host, port=port)
