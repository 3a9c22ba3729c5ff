"""LoRA adapters in the perf model: their compute per token, their weights per step, their load.

NOTE(perf): a LoRA adapter of rank ``r`` on a linear layer ``d_in -> d_out`` adds ``x·A·B`` with
``A: d_in x r`` and ``B: r x d_out``: ``2·r·(d_in + d_out)`` FLOPs per token and
``r·(d_in + d_out)`` weights, per targeted projection per layer (Hu et al. 2021, "LoRA",
arXiv:2106.09685, section 4). :meth:`PerfModel.with_lora` adds both to the roofline: the FLOPs
on every token a step runs (an upper bound: vLLM's LoRA kernels skip the base model's tokens of
a mixed batch), the weights of the adapters a replica holds (at most ``max_loras`` per step, as
vLLM's ``--max-loras``) read once per step at 16 bits. Architecture arithmetic, no device figure.

An adapter's load time (the gateway's ``POST /v1/load_lora_adapter`` before the first request
that needs it on a replica) is an engine figure: :data:`ADAPTER_LOAD_S` holds the measured ones;
elsewhere it is unknown and the twin charges what the fleet file says (0 s by default, stated).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from npucenter.catalog.model import Model
from npucenter.errors import InvalidConfigError

__all__ = [
    "ADAPTER_LOAD_S",
    "LORA_TARGETS",
    "AdapterLoadFigure",
    "LoraShape",
    "lora_flops_per_token",
    "lora_weight_bytes",
]

#: The projections an adapter may target (Llama-style names, as peft's ``target_modules``).
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
_WEIGHT_BYTES = 2.0  # adapters are kept at 16 bits (bf16/fp16) whatever the base precision


@dataclass(frozen=True, slots=True, kw_only=True)
class LoraShape:
    """The adapters a replica serves: their rank, target projections, and how many per step."""

    rank: int = 8
    target_modules: tuple[str, ...] = ("q_proj", "v_proj")
    max_loras: int = 1  # distinct adapters whose weights one step reads (vLLM --max-loras)

    def __post_init__(self) -> None:
        if self.rank < 1:
            raise InvalidConfigError("rank", self.rank, "must be >= 1")
        if self.max_loras < 1:
            raise InvalidConfigError("max_loras", self.max_loras, "must be >= 1")
        unknown = sorted(set(self.target_modules) - set(LORA_TARGETS))
        if unknown or not self.target_modules:
            raise InvalidConfigError(
                "target_modules", unknown or [], f"name one or more of {', '.join(LORA_TARGETS)}"
            )


@dataclass(frozen=True, slots=True, kw_only=True)
class AdapterLoadFigure:
    """How long one engine takes to load one adapter, and where the figure comes from."""

    seconds: float
    source: str


#: Measured load times by device id (the engine that runs on it). Only figures measured on a
#: real engine belong here; a device without one has no entry (the twin says so).
ADAPTER_LOAD_S: Mapping[str, AdapterLoadFigure] = {
    "cpu": AdapterLoadFigure(
        seconds=0.0227,
        source="measured on this machine (2 shared vCPUs, 2026-12-06): vLLM 0.32 CPU build, "
        "tiny-llama, r=8 on q_proj/v_proj, median of 10 POST /v1/load_lora_adapter (min "
        "5.6 ms, max 90 ms); benchmarks/bench_lora_load.py",
    ),
}


def _dims(model: Model, target: str) -> tuple[int, int]:
    h, q, kv, ff = model.hidden_size, model.q_dim, model.kv_dim, model.intermediate_size
    return {
        "q_proj": (h, q),
        "k_proj": (h, kv),
        "v_proj": (h, kv),
        "o_proj": (q, h),
        "gate_proj": (h, ff),
        "up_proj": (h, ff),
        "down_proj": (ff, h),
    }[target]


def lora_flops_per_token(model: Model, shape: LoraShape) -> float:
    """Extra FLOPs one token costs through one adapter of ``shape`` (all layers)."""
    per_layer = sum(2.0 * shape.rank * sum(_dims(model, t)) for t in shape.target_modules)
    return model.num_layers * per_layer


def lora_weight_bytes(model: Model, shape: LoraShape) -> float:
    """Bytes of one adapter of ``shape`` (A and B of every targeted projection, 16-bit)."""
    per_layer = sum(shape.rank * sum(_dims(model, t)) for t in shape.target_modules)
    return model.num_layers * per_layer * _WEIGHT_BYTES
