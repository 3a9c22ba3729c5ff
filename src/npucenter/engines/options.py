"""Which engine serves a deployment, and how: a fleet-file service's ``engine:`` entry.

``engine: vllm`` names an engine with its defaults; a mapping sets its options::

    engine: {name: vllm, model_path: tiny-llama, max_model_len: 1024, kv_cache_space_gb: 1}
    engine: {name: external, base_url: "http://10.0.0.7:8000", api_key_env: TEAM_VLLM_KEY}

An ``external`` engine is a server the center does not start (a vendor's box, a team's vLLM):
the gateway health-checks it, routes to it and meters it like the others. Its upstream API key
is never written anywhere: the entry names the environment variable of the center's process
that holds it (``api_key_env``), read when the replica is published.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from npucenter.engines.base import ENGINES, default_engine_for_device, device_family
from npucenter.errors import InvalidConfigError, NotSupportedError

__all__ = ["EXTERNAL", "LORA_ENGINES", "EngineChoice", "engine_choice", "engine_for_device"]

EXTERNAL = "external"

#: Engines that serve LoRA adapters at run time, and how. vLLM: docs.vllm.ai "LoRA Adapters"
#: (dynamic serving) and measured here on its CPU build. furiosa-llm and vllm-rbln: their serving
#: docs (developer.furiosa.ai furiosa-llm-serve, docs.rbln.ai vllm-rbln) document no LoRA
#: serving, so they are not listed until a source says they do.
LORA_ENGINES: dict[str, str] = {
    "vllm": "--enable-lora, VLLM_ALLOW_RUNTIME_LORA_UPDATING=True, POST /v1/load_lora_adapter",
}

_KEYS = {
    "name",
    "model_path",
    "served_model_name",
    "max_model_len",
    "kv_cache_space_gb",
    "ready_timeout_s",
    "python",
    "args",
    "env",
    "base_url",
    "api_key_env",
    "enable_lora",
    "max_lora_rank",
    "num_cpus",
    "memory_gb",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class EngineChoice:
    """An engine name and the options a deployment's replicas are launched (or reached) with."""

    name: str = "virtual"
    model_path: str | None = None  # a directory (relative: under <data dir>/models) or a hub id
    served_model_name: str | None = None  # external only: the name the server lists
    max_model_len: int | None = None
    kv_cache_space_gb: float | None = None  # vLLM CPU build: VLLM_CPU_KVCACHE_SPACE
    ready_timeout_s: float | None = None  # None: the engine's own
    python: str | None = None  # interpreter with the engine installed (vLLM CPU build)
    args: tuple[str, ...] = ()  # extra engine arguments, passed unchanged
    env: tuple[tuple[str, str], ...] = ()  # extra environment of the engine process
    base_url: str | None = None  # external only
    api_key_env: str | None = None  # external only: the variable holding the upstream key
    enable_lora: bool = False  # vLLM: --enable-lora and runtime adapter loading
    max_lora_rank: int | None = None
    num_cpus: float | None = None  # what a scale-out executor (Ray) reserves besides the cards
    memory_gb: float | None = None

    def __post_init__(self) -> None:
        ENGINES.get(self.name)  # raises UnknownPluginError listing the engines
        if self.name == EXTERNAL:
            if not self.base_url or not self.base_url.startswith(("http://", "https://")):
                raise InvalidConfigError(
                    "engine.base_url", self.base_url, "an external engine needs an http(s) URL"
                )
        elif self.base_url is not None or self.api_key_env is not None:
            raise InvalidConfigError(
                "engine.base_url",
                self.base_url,
                f"only an external engine has one, not {self.name}",
            )
        if self.max_model_len is not None and self.max_model_len < 1:
            raise InvalidConfigError("engine.max_model_len", self.max_model_len, "must be >= 1")
        if self.kv_cache_space_gb is not None and not self.kv_cache_space_gb > 0:
            raise InvalidConfigError("engine.kv_cache_space_gb", self.kv_cache_space_gb, "> 0")
        if self.ready_timeout_s is not None and not self.ready_timeout_s > 0:
            raise InvalidConfigError("engine.ready_timeout_s", self.ready_timeout_s, "> 0")
        if self.enable_lora and self.name not in LORA_ENGINES:
            raise NotSupportedError(
                f"LoRA adapters with engine {self.name}",
                f"engines that serve adapters: {', '.join(sorted(LORA_ENGINES))}",
                hint="drop enable_lora or serve the deployment with vllm",
            )

    def launch_args(self) -> tuple[str, ...]:
        """Engine arguments this choice adds (LoRA serving, then ``args``)."""
        out: list[str] = []
        if self.enable_lora:
            out.append("--enable-lora")
            if self.max_lora_rank is not None:
                out += ["--max-lora-rank", str(self.max_lora_rank)]
        return (*out, *self.args)

    def launch_env(self) -> tuple[tuple[str, str], ...]:
        """Environment this choice adds (KV cache space of the CPU build, runtime LoRA, ``env``)."""
        out: list[tuple[str, str]] = []
        if self.kv_cache_space_gb is not None:
            out.append(("VLLM_CPU_KVCACHE_SPACE", f"{self.kv_cache_space_gb:g}"))
        if self.enable_lora:
            out.append(("VLLM_ALLOW_RUNTIME_LORA_UPDATING", "True"))
        return (*out, *self.env)

    @property
    def is_external(self) -> bool:
        """Whether the center only reaches the server (it does not start it)."""
        return self.name == EXTERNAL

    @property
    def is_real(self) -> bool:
        """Whether a real engine serves (not the virtual one)."""
        return self.name != "virtual"


def engine_for_device(choice: EngineChoice, device: str) -> EngineChoice:
    """The engine that serves a replica of ``choice``'s deployment placed on ``device``.

    A deployment that accepts several device types (a fallback list) names one engine; a
    replica placed on a device of another family is served by that family's engine (furiosa-llm
    on RNGD, vllm-rbln on RBLN, vllm on GPUs and CPUs) with the same options. The virtual and
    external engines serve any device and are kept.

    Raises:
        NotFoundError: ``device`` is not in the catalog.
        NotSupportedError: no engine launches on the device, or an option the family's engine
            does not have (LoRA adapters outside vllm).
    """
    if not choice.is_real or choice.is_external:
        return choice
    families = ENGINES.get(choice.name).device_families
    if "any" in families or device_family(device) in families:
        return choice
    return replace(choice, name=default_engine_for_device(device))  # checked again (LoRA)


def engine_choice(value: Any) -> EngineChoice:
    """An :class:`EngineChoice` from a fleet entry's ``engine`` value (a name or a mapping)."""
    if value is None:
        return EngineChoice()
    if isinstance(value, EngineChoice):
        return value
    if isinstance(value, str):
        return EngineChoice(name=_canonical(value))
    if not isinstance(value, Mapping):
        raise InvalidConfigError("engine", value, "must be an engine name or a mapping")
    unknown = set(value) - _KEYS
    if unknown:
        raise InvalidConfigError("engine", sorted(unknown), f"unknown keys; known: {sorted(_KEYS)}")
    if "name" not in value:
        raise InvalidConfigError("engine.name", None, "missing", hint="e.g. name: vllm")
    env = value.get("env") or {}
    if isinstance(env, tuple):  # frozen by the fleet parser: ((name, value), ...)
        env = dict(env)
    if not isinstance(env, Mapping):
        raise InvalidConfigError("engine.env", env, "must be a mapping of names to values")
    args = value.get("args") or []
    if isinstance(args, str) or not isinstance(args, list | tuple):
        raise InvalidConfigError("engine.args", args, "must be a list of arguments")

    def opt(key: str, kind: type) -> Any:
        raw = value.get(key)
        try:
            return None if raw is None else kind(raw)
        except (TypeError, ValueError) as exc:
            raise InvalidConfigError(f"engine.{key}", raw, f"must be a {kind.__name__}") from exc

    return EngineChoice(
        name=_canonical(str(value["name"])),
        model_path=opt("model_path", str),
        served_model_name=opt("served_model_name", str),
        max_model_len=opt("max_model_len", int),
        kv_cache_space_gb=opt("kv_cache_space_gb", float),
        ready_timeout_s=opt("ready_timeout_s", float),
        python=opt("python", str),
        args=tuple(str(a) for a in args),
        env=tuple((str(k), str(v)) for k, v in env.items()),
        base_url=opt("base_url", str),
        api_key_env=opt("api_key_env", str),
        enable_lora=bool(value.get("enable_lora", False)),
        max_lora_rank=opt("max_lora_rank", int),
        num_cpus=opt("num_cpus", float),
        memory_gb=opt("memory_gb", float),
    )


def _canonical(name: str) -> str:
    return str(ENGINES.get(name.strip()).name)  # raises UnknownPluginError listing the engines
