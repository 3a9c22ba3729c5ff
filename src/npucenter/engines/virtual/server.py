"""Build and run one virtual engine: perf model + replica core + loop + ASGI app + uvicorn.

:func:`build_app` is what tests use in-process; :func:`serve` runs it under uvicorn (httptools
and uvloop when installed) until SIGINT/SIGTERM, or until the parent process is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from dataclasses import dataclass
from typing import Any

from npucenter.clock import Clock
from npucenter.engines.virtual.app import VirtualEngineApp
from npucenter.engines.virtual.core import ReplicaConfig, make_replica_core
from npucenter.engines.virtual.loop import EngineLoop
from npucenter.engines.virtual.lora import LoraStepCost
from npucenter.engines.virtual.metrics import EngineMetrics
from npucenter.errors import InvalidConfigError
from npucenter.perf.lora import ADAPTER_LOAD_S
from npucenter.settings import parent_pid

__all__ = ["VirtualEngineConfig", "build_app", "serve"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class VirtualEngineConfig:
    """Everything one virtual engine needs (mirrors ``python -m npucenter.engines.virtual``)."""

    model: str
    device: str
    tp: int = 1
    precision: str | None = None
    served_model_name: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    time_scale: float = 1.0
    max_num_seqs: int = 256
    max_num_batched_tokens: int = 8192
    max_model_len: int | None = None  # default: min(model context, KV capacity)

    def __post_init__(self) -> None:
        if self.tp < 1:
            raise InvalidConfigError("tp", self.tp, "must be at least 1")
        if self.time_scale < 0:
            raise InvalidConfigError("time_scale", self.time_scale, "must be >= 0")
        if not 0 <= self.port <= 65535:
            raise InvalidConfigError("port", self.port, "must be in 0..65535")
        if self.max_model_len is not None and self.max_model_len < 2:
            raise InvalidConfigError("max_model_len", self.max_model_len, "must be at least 2")


def build_app(
    config: VirtualEngineConfig, *, perf: Any = None, clock: Clock | None = None
) -> VirtualEngineApp:
    """The ASGI app of one virtual engine (``perf`` defaults to the catalog's perf model)."""
    if perf is None:
        from npucenter.catalog import default_catalog
        from npucenter.perf import build_perf_model

        perf = build_perf_model(
            default_catalog(),
            model=config.model,
            device=config.device,
            precision=config.precision,
            tp=config.tp,
        )
    kv_capacity = int(perf.kv_capacity_tokens)
    context = _model_context(perf)
    max_model_len = min(config.max_model_len or context or kv_capacity, kv_capacity)
    lora_cost = LoraStepCost(perf)  # the perf model's LoRA term while adapters are loaded
    core, request_cls = make_replica_core(
        lora_cost,
        ReplicaConfig(
            max_num_seqs=config.max_num_seqs,
            max_num_batched_tokens=config.max_num_batched_tokens,
            max_model_len_tokens=max_model_len,
        ),
    )
    name = config.served_model_name or config.model
    metrics = EngineMetrics(
        {
            "model_name": name,
            "device": _device_id(perf, config.device),
            "tp": str(config.tp),
        }
    )
    loop = EngineLoop(
        core,
        idle_power_w=float(perf.idle_power_w),
        kv_capacity_tokens=kv_capacity,
        request_cls=request_cls,
        clock=clock,
        time_scale=config.time_scale,
        on_finish=metrics.observe,
    )
    metrics.attach(loop)
    device = getattr(getattr(perf, "device", None), "device_id", config.device)
    measured = ADAPTER_LOAD_S.get(device)  # a load takes what it took on the real engine
    return VirtualEngineApp(
        loop,
        model_name=name,
        max_model_len=max_model_len,
        metrics=metrics,
        lora_cost=lora_cost,
        adapter_load_s=(measured.seconds if measured else 0.0) * config.time_scale,
    )


def serve(config: VirtualEngineConfig, *, perf: Any = None) -> None:
    """Run the engine under uvicorn until a signal, or until the parent process is gone."""
    import uvicorn

    app = build_app(config, perf=perf)
    uv_config = uvicorn.Config(
        app,
        host=config.host,
        port=config.port,
        loop=_loop_impl(),
        http=_http_impl(),
        lifespan="on",
        access_log=False,
        log_level="warning",
        timeout_graceful_shutdown=2,
        backlog=4096,
    )
    server = uvicorn.Server(uv_config)
    if uv_config.loop == "uvloop":
        import uvloop

        uvloop.run(_serve_until_orphaned(server))
    else:
        asyncio.run(_serve_until_orphaned(server))


async def _serve_until_orphaned(server: Any) -> None:
    watchdog = asyncio.get_running_loop().create_task(_exit_when_parent_dies(server))
    try:
        await server.serve()
    finally:
        watchdog.cancel()


async def _exit_when_parent_dies(server: Any) -> None:
    expected = parent_pid()
    if expected is None:
        return
    while True:
        await asyncio.sleep(0.5)
        if os.getppid() != expected:
            log.warning("parent %s is gone; shutting down", expected)
            server.should_exit = True
            return


def _loop_impl() -> str:
    with contextlib.suppress(ImportError):
        import uvloop  # noqa: F401

        return "uvloop"
    return "asyncio"


def _http_impl() -> str:
    with contextlib.suppress(ImportError):
        import httptools  # noqa: F401

        return "httptools"
    return "h11"


def _model_context(perf: Any) -> int | None:
    model = getattr(perf, "model", None)
    value = getattr(model, "max_context_tokens", None)
    return int(value) if isinstance(value, int | float) else None


def _device_id(perf: Any, fallback: str) -> str:
    device = getattr(perf, "device", None)
    value = getattr(device, "device_id", None)
    return str(value) if value else fallback
