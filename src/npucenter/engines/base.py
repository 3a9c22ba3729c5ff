"""What an engine replica is and how to launch it: ``ReplicaSpec`` -> ``LaunchSpec``.

An :class:`Engine` turns an engine-agnostic :class:`ReplicaSpec` (model, device, TP, options) into
the exact command line, environment and health check of one server process. Engines build
values only; starting processes is the executors' job.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from npucenter.catalog import Catalog, default_catalog
from npucenter.errors import InvalidConfigError, NotSupportedError
from npucenter.registry import Registry
from npucenter.settings import ENV_PARENT_PID

__all__ = [
    "ENGINES",
    "PARENT_PID_ENV",
    "Engine",
    "LaunchSpec",
    "ReplicaSpec",
    "card_list",
    "default_engine_for_device",
    "device_family",
    "option_args",
    "require_device_family",
]


PARENT_PID_ENV = ENV_PARENT_PID  # set by executors; engines exit when that pid is gone


@dataclass(frozen=True, slots=True, kw_only=True)
class ReplicaSpec:
    """One engine replica to run: which engine serves which model on which cards.

    ``device_indices`` are the physical card indices on the node (``()`` means the first ``tp``
    cards); ``env`` and ``extra_args`` are passed through to the engine unchanged.
    """

    engine: str
    model: str
    device: str
    tp: int = 1
    precision: str | None = None
    device_indices: tuple[int, ...] = ()
    served_model_name: str | None = None
    model_path: str | None = None  # HF id, local checkpoint or compiled artifact; default: model
    max_num_seqs: int | None = None
    max_model_len: int | None = None
    gpu_memory_utilization_fraction: float | None = None
    time_scale: float = 1.0  # virtual engine only: real seconds per modelled second (0 = no wait)
    executable: str | None = None  # the interpreter/program to run (default: the engine's)
    ready_timeout_s: float | None = None  # None: the engine's own start-up timeout
    extra_args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()  # (name, value) pairs added to the environment
    # What a scale-out executor (Ray) reserves on the node besides the cards; None: nothing
    num_cpus: float | None = None
    memory_gb: float | None = None

    def __post_init__(self) -> None:
        for name in ("num_cpus", "memory_gb"):
            value = getattr(self, name)
            if value is not None and not value >= 0:
                raise InvalidConfigError(name, value, "must be >= 0")
        if not self.engine:
            raise InvalidConfigError("engine", self.engine, "must name an engine")
        if not self.model:
            raise InvalidConfigError("model", self.model, "must name a model")
        if not self.device:
            raise InvalidConfigError("device", self.device, "must name a device")
        if self.tp < 1:
            raise InvalidConfigError("tp", self.tp, "must be at least 1")
        if self.device_indices:
            if len(self.device_indices) != self.tp:
                raise InvalidConfigError(
                    "device_indices", self.device_indices, f"must list exactly tp={self.tp} cards"
                )
            if len(set(self.device_indices)) != len(self.device_indices):
                raise InvalidConfigError("device_indices", self.device_indices, "has duplicates")
            if min(self.device_indices) < 0:
                raise InvalidConfigError("device_indices", self.device_indices, "must be >= 0")
        if self.max_num_seqs is not None and self.max_num_seqs < 1:
            raise InvalidConfigError("max_num_seqs", self.max_num_seqs, "must be at least 1")
        if self.max_model_len is not None and self.max_model_len < 1:
            raise InvalidConfigError("max_model_len", self.max_model_len, "must be at least 1")
        frac = self.gpu_memory_utilization_fraction
        if frac is not None and not 0.0 < frac <= 1.0:
            raise InvalidConfigError("gpu_memory_utilization_fraction", frac, "must be in (0, 1]")
        if self.time_scale < 0:
            raise InvalidConfigError("time_scale", self.time_scale, "must be >= 0")
        if self.ready_timeout_s is not None and not self.ready_timeout_s > 0:
            raise InvalidConfigError("ready_timeout_s", self.ready_timeout_s, "must be > 0")

    @property
    def cards(self) -> tuple[int, ...]:
        """The card indices this replica uses (explicit, or ``0..tp-1``)."""
        return self.device_indices or tuple(range(self.tp))

    @property
    def name_served(self) -> str:
        """The model name clients send (``served_model_name`` or ``model``)."""
        return self.served_model_name or self.model


@dataclass(frozen=True, slots=True, kw_only=True)
class LaunchSpec:
    """The exact process to start for one replica and how to know it is ready."""

    engine: str
    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...] = ()  # added to the inherited environment
    host: str = "127.0.0.1"
    port: int = 8000
    health_path: str = "/health"
    ready_timeout_s: float = 60.0
    resources: tuple[tuple[str, float], ...] = field(
        default=()
    )  # Ray's names, e.g. (("FURIOSA", 2.0),)

    def __post_init__(self) -> None:
        if not self.argv:
            raise InvalidConfigError("argv", self.argv, "must not be empty")
        if not 0 <= self.port <= 65535:
            raise InvalidConfigError("port", self.port, "must be in 0..65535")
        if self.ready_timeout_s <= 0:
            raise InvalidConfigError("ready_timeout_s", self.ready_timeout_s, "must be > 0")

    @property
    def base_url(self) -> str:
        """``http://host:port`` of the replica's server."""
        return f"http://{self.host}:{self.port}"

    @property
    def health_url(self) -> str:
        """The URL that answers 200 when the replica is ready."""
        return self.base_url + self.health_path

    def env_dict(self) -> dict[str, str]:
        """The added environment as a dict."""
        return dict(self.env)

    def shell(self) -> str:
        """The launch as one copy-pasteable shell line (environment first)."""
        env = " ".join(f"{k}={shlex.quote(v)}" for k, v in self.env)
        cmd = shlex.join(self.argv)
        return f"{env} {cmd}" if env else cmd


@runtime_checkable
class Engine(Protocol):
    """An inference engine npucenter can launch (vLLM, furiosa-llm, vllm-rbln, virtual)."""

    name: str
    device_families: tuple[str, ...]  # families it runs on: "gpu", "rngd", "rbln", "any"

    def launch_spec(self, spec: ReplicaSpec, *, host: str, port: int) -> LaunchSpec:
        """The command, environment and health check that start ``spec`` on ``host:port``."""
        ...


ENGINES: Registry[Engine] = Registry("engine")


#: The launch family of an NPU vendor (catalog ``vendor``, lower case): which engine, which
#: visible-devices variable and which Ray resource its cards take. GPUs are ``"gpu"``.
_FAMILY_BY_VENDOR: Mapping[str, str] = {"furiosaai": "rngd", "rebellions": "rbln", "host": "cpu"}


def device_family(device: str, catalog: Catalog | None = None) -> str:
    """The launch family of a catalog device: ``"rngd"``, ``"rbln"``, ``"cpu"`` or ``"gpu"``.

    Read from the catalog's ``vendor`` and ``kind`` (FuriosaAI NPUs ``rngd``, Rebellions NPUs
    ``rbln``, the host CPU of vLLM's CPU build ``cpu``, every GPU ``gpu``), not from the id's
    spelling.

    Raises:
        NotFoundError: ``device`` is not in the catalog (default: the shipped one).
        NotSupportedError: an NPU of a vendor no engine launches on.
    """
    dev = (catalog or default_catalog()).device(device)
    family = _FAMILY_BY_VENDOR.get(dev.vendor.lower())
    if family is not None:
        return family
    if dev.kind == "gpu":
        return "gpu"
    raise NotSupportedError(
        f"launching an engine on {dev.device_id}",
        f"no engine launches on {dev.vendor} {dev.kind.upper()}s",
        hint=f"engines run on {', '.join(sorted({*_FAMILY_BY_VENDOR.values(), 'gpu'}))} devices",
    )


_DEFAULT_ENGINE: Mapping[str, str] = {
    "rngd": "furiosa-llm",
    "rbln": "vllm-rbln",
    "gpu": "vllm",
    "cpu": "vllm",
}


def default_engine_for_device(device: str) -> str:
    """The real engine that serves LLMs on ``device`` (furiosa-llm, vllm-rbln or vllm)."""
    return _DEFAULT_ENGINE[device_family(device)]


def option_args(*options: tuple[str, object | None]) -> list[str]:
    """``[flag, value, ...]`` for each ``(flag, value)`` whose value is set, in order."""
    return [arg for flag, value in options if value is not None for arg in (flag, str(value))]


def card_list(cards: tuple[int, ...]) -> str:
    """Card indices as a device-selection variable wants them, e.g. ``0,1``."""
    return ",".join(str(i) for i in cards)


def require_device_family(engine: Engine, spec: ReplicaSpec) -> None:
    """Raise :class:`NotSupportedError` unless ``engine`` runs on ``spec.device``."""
    family = device_family(spec.device)
    if "any" not in engine.device_families and family not in engine.device_families:
        raise NotSupportedError(
            f"engine {engine.name} on device {spec.device}",
            f"{engine.name} runs on {', '.join(engine.device_families)} devices",
            hint=f"use engine {default_engine_for_device(spec.device)!r} for {spec.device}",
        )
