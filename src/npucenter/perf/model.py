"""The roofline performance model of one engine replica (a model on ``tp`` cards of one device).

Pure arithmetic: no I/O, no clocks. Every public method accepts floats or numpy arrays and
broadcasts, so the simulator can evaluate one step in about a microsecond and the planner
millions of steps in one vectorised call.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np
import numpy.typing as npt

from npucenter.catalog.device import Device
from npucenter.catalog.model import Model
from npucenter.catalog.precision import Precision
from npucenter.errors import InvalidConfigError, ModelDoesNotFitError
from npucenter.perf.lora import LoraShape, lora_flops_per_token, lora_weight_bytes
from npucenter.perf.power import IDLE_POWER_FRACTION, idle_power_w

__all__ = [
    "IDLE_POWER_FRACTION",
    "MEMORY_UTILIZATION",
    "Efficiency",
    "PerfModel",
    "Prediction",
]

# NOTE(perf): These two are model assumptions, not device figures, and every prediction lists
# them. MEMORY_UTILIZATION mirrors vLLM's default gpu_memory_utilization (0.9): the rest is left
# for activations, workspace and the runtime. Idle power follows the one rule of
# :mod:`npucenter.perf.power` (IDLE_POWER_FRACTION of TDP unless a catalog supplies ``idle_w``).
MEMORY_UTILIZATION = 0.90
_MIN_KV_TOKENS = 2048  # a replica that cannot hold one 2k-token sequence does not "fit"
# The host CPU (vLLM's CPU build) has no power figure (a slice of a host socket): its replicas'
# step times are modelled, their power is 0 W and every prediction says so.
HOST_CPU_DEVICES = ("cpu",)

Num = TypeVar("Num", float, npt.NDArray[np.float64])


@dataclass(frozen=True, slots=True, kw_only=True)
class Efficiency:
    """Fractions of peak a serving engine reaches on a device, and its fixed costs.

    Fitted per device by :mod:`npucenter.perf.calibration`; the defaults are the priors used for
    devices without published measurements.
    """

    compute_fraction: float = 0.5  # achieved / peak dense matmul rate
    memory_fraction: float = 0.7  # achieved / peak memory bandwidth
    step_overhead_s: float = 0.003  # scheduler, sampling, kernel launches per iteration
    allreduce_latency_s: float = 20e-6  # fixed cost of one all-reduce over the interconnect
    source: str = "prior"  # "prior", "fitted on N rows", "user"
    # Once per request, outside the engine's iterations: its API front end (HTTP, tokenisation,
    # hand-off to the engine core) and the hops to it. 0 unless measured (a machine's profile).
    request_overhead_s: float = 0.0

    def __post_init__(self) -> None:
        for name in ("compute_fraction", "memory_fraction"):
            value = getattr(self, name)
            if not 0 < value <= 1:
                raise InvalidConfigError(name, value, "must be in (0, 1]")
        for name in ("step_overhead_s", "allreduce_latency_s", "request_overhead_s"):
            if getattr(self, name) < 0:
                raise InvalidConfigError(name, getattr(self, name), "must be >= 0")


@dataclass(frozen=True, slots=True, kw_only=True)
class Prediction:
    """Steady-state serving figures for ``batch`` requests of the same lengths."""

    batch: int
    input_tokens: int
    output_tokens: int
    ttft_s: float
    tpot_s: float
    e2e_s: float
    output_tokens_per_s: float  # aggregate over the batch
    tokens_per_j: float  # output tokens per joule of the replica's cards
    energy_j_per_output_token: float
    memory_gb: float  # per card: weights + this batch's KV cache
    power_w: float  # average power of the replica's cards over the request
    kv_capacity_tokens: int
    assumptions: tuple[str, ...] = field(default=())


class PerfModel:
    """Step time, memory and power of one replica: ``model`` at ``precision`` on ``tp`` cards.

    NOTE(perf): One engine iteration processes ``prefill_tokens`` new prompt tokens and one token
    for each of ``decode_seqs`` running sequences. Its time is a roofline over the replica:
    ``max(FLOPs / (tp·peak·η_c), bytes / (tp·BW·η_m))`` plus a tensor-parallel term (two ring
    all-reduces of the activations per layer over the card-to-card link) plus a fixed per-step
    overhead. FLOPs are 2·(layer params) per token, the LM head for sampled tokens and
    4·layers·q_dim per attended query-key pair; bytes are the weights read once per step plus
    the KV cache read by decode tokens and written by prefill tokens.
    """

    def __init__(
        self,
        model: Model,
        device: Device,
        precision: Precision,
        tp: int = 1,
        efficiency: Efficiency | None = None,
        *,
        kv_bytes_per_element: float | None = None,
        memory_utilization: float = MEMORY_UTILIZATION,
    ) -> None:
        if tp < 1 or model.num_attention_heads % tp:
            raise InvalidConfigError(
                "tp", tp, f"must be >= 1 and divide {model.num_attention_heads} attention heads"
            )
        needed = ["memory_gb", "memory_bandwidth_gbps"]
        if device.device_id not in HOST_CPU_DEVICES:  # a host CPU: time modelled, energy not
            needed.append("tdp_w")
        if tp > 1:
            needed.append("interconnect_gbps")
        device.require(*needed)
        peak_tflops = device.peak_tflops(precision)
        self.model = model
        self.device = device
        self.precision = precision
        self.tp = tp
        self.efficiency = efficiency or Efficiency()
        eff = self.efficiency
        kvb = precision.kv_bytes if kv_bytes_per_element is None else kv_bytes_per_element

        layer_weights = model.num_layers * model.layer_params
        lm_head = model.vocab_size * model.hidden_size
        # Embeddings and LM head stay 16-bit in FP8/INT8/INT4 checkpoints.
        self.weight_bytes_total = (
            layer_weights * precision.weight_bytes + model.embedding_params * 2
        )
        weight_bytes_read = layer_weights * precision.weight_bytes + lm_head * 2
        self.weight_memory_gb = self.weight_bytes_total / tp / 1e9
        self.kv_bytes_per_token = model.kv_elements_per_token() * kvb
        # With fewer KV heads than cards, KV heads are replicated on every card.
        kv_replication = max(1.0, tp / model.num_kv_heads)

        assert device.memory_gb is not None and device.memory_bandwidth_gbps is not None
        usable_gb = device.memory_gb * memory_utilization
        free_bytes = (usable_gb - self.weight_memory_gb) * 1e9 * tp
        capacity = int(max(0.0, free_bytes) / (self.kv_bytes_per_token * kv_replication))
        if capacity < _MIN_KV_TOKENS:
            required = self.weight_memory_gb + _MIN_KV_TOKENS * self.kv_bytes_per_token / tp / 1e9
            raise ModelDoesNotFitError(
                model.model_id,
                device.device_id,
                tp,
                required,
                usable_gb,
                _smallest_fitting_tp(model, device, precision, kvb, memory_utilization),
            )
        self.kv_capacity_tokens = capacity

        # Linear coefficients of the step-time terms (seconds per unit).
        flops_rate = tp * peak_tflops * 1e12 * eff.compute_fraction
        bytes_rate = tp * device.memory_bandwidth_gbps * 1e9 * eff.memory_fraction
        self._c_token = 2.0 * model.num_layers * model.layer_params / flops_rate
        self._c_logits = 2.0 * lm_head / flops_rate
        self._c_pair = 4.0 * model.num_layers * model.q_dim / flops_rate
        self._m_weights = weight_bytes_read / bytes_rate
        self._m_kv = self.kv_bytes_per_token * kv_replication / bytes_rate
        self._flops_rate, self._bytes_rate = flops_rate, bytes_rate
        self.lora: LoraShape | None = None  # set by with_lora
        if tp > 1:
            assert device.interconnect_gbps is not None
            ring_bytes_per_token = 2.0 * (tp - 1) / tp * model.hidden_size * 2.0
            allreduces = 2 * model.num_layers
            self._comm_fixed = allreduces * eff.allreduce_latency_s
            self._comm_token = allreduces * ring_bytes_per_token / (device.interconnect_gbps * 1e9)
        else:
            self._comm_fixed = 0.0
            self._comm_token = 0.0
        self._overhead = eff.step_overhead_s
        #: added once to a request's first-token and finish times by the twin (not a step cost)
        self.request_overhead_s = eff.request_overhead_s
        tdp = float(device.tdp_w) if device.tdp_w is not None else 0.0
        self.idle_power_w = tp * (idle_power_w(device) or 0.0)
        self.max_power_w = tp * tdp

    def with_lora(self, shape: LoraShape) -> PerfModel:
        """This replica serving LoRA adapters of ``shape`` (see :mod:`npucenter.perf.lora`).

        A copy whose every token also runs the adapter's two thin matmuls and whose every step
        also reads ``max_loras`` adapters' weights.
        """
        out = copy.copy(self)
        out.lora = shape
        out._c_token = self._c_token + lora_flops_per_token(self.model, shape) / self._flops_rate
        extra = shape.max_loras * lora_weight_bytes(self.model, shape)
        out._m_weights = self._m_weights + extra / self._bytes_rate
        return out

    # --- static helpers ---------------------------------------------------------------------
    @staticmethod
    def attn_pairs(chunk_tokens: Num, prior_context_tokens: Num) -> Num:
        """Query-key pairs of a causal prefill chunk after ``prior_context_tokens`` of context."""
        return chunk_tokens * prior_context_tokens + chunk_tokens * (chunk_tokens + 1) / 2

    # --- the step ---------------------------------------------------------------------------
    def _busy_s(
        self,
        prefill_tokens: Num,
        prefill_attn_pairs: Num,
        decode_seqs: Num,
        decode_context_tokens: Num,
    ) -> tuple[Num, Num]:
        compute = (
            self._c_token * (prefill_tokens + decode_seqs)
            + self._c_logits * decode_seqs
            + self._c_pair * (prefill_attn_pairs + decode_context_tokens)
        )
        memory = self._m_weights + self._m_kv * (decode_context_tokens + prefill_tokens)
        # max(a, b) written so it works for floats and numpy arrays alike
        busy = (compute + memory + abs(compute - memory)) * 0.5
        comm = self._comm_token * (prefill_tokens + decode_seqs) + self._comm_fixed
        return busy, comm

    def step_time_s(
        self,
        prefill_tokens: Num,
        prefill_attn_pairs: Num,
        decode_seqs: Num,
        decode_context_tokens: Num,
    ) -> Num:
        """Duration of one engine iteration (see the class note for the model)."""
        busy, comm = self._busy_s(
            prefill_tokens, prefill_attn_pairs, decode_seqs, decode_context_tokens
        )
        return busy + comm + self._overhead

    def step_power_w(
        self,
        prefill_tokens: Num,
        prefill_attn_pairs: Num,
        decode_seqs: Num,
        decode_context_tokens: Num,
    ) -> Num:
        """Average power of the replica's cards during that iteration (idle + busy share)."""
        busy, comm = self._busy_s(
            prefill_tokens, prefill_attn_pairs, decode_seqs, decode_context_tokens
        )
        utilisation = busy / (busy + comm + self._overhead)
        return self.idle_power_w + (self.max_power_w - self.idle_power_w) * utilisation

    # --- derived figures --------------------------------------------------------------------
    def max_batch(self, context_tokens: int) -> int:
        """Sequences of ``context_tokens`` tokens whose KV cache fits at once."""
        if context_tokens < 1:
            raise InvalidConfigError("context_tokens", context_tokens, "must be >= 1")
        return self.kv_capacity_tokens // context_tokens

    def ttft_s(self, input_tokens: float, batch: float = 1) -> float:
        """Time to first token when ``batch`` prompts of ``input_tokens`` are prefilled together."""
        pairs = batch * self.attn_pairs(float(input_tokens), 0.0)
        return float(self.step_time_s(batch * input_tokens, pairs, 0.0, 0.0))

    def tpot_s(self, batch: float, context_tokens: float) -> float:
        """One decode iteration at ``batch`` sequences of mean context ``context_tokens``."""
        return float(self.step_time_s(0.0, 0.0, float(batch), float(batch * context_tokens)))

    def predict(self, input_tokens: int, output_tokens: int, batch: int) -> Prediction:
        """Serve ``batch`` requests of ``input_tokens`` in, ``output_tokens`` out, together.

        TTFT is one request's prompt prefilled in an iteration shared with the other ``batch - 1``
        sequences' decode tokens (continuous batching, no queueing); TPOT is a decode iteration
        at the mean context ``input + output/2`` (step time is linear in context, so this is the
        mean of the decode steps within one roofline branch). Throughput, power and energy are
        over one generation cycle: all ``batch`` prompts prefilled, then the decode iterations.
        """
        if input_tokens < 1 or output_tokens < 1 or batch < 1:
            raise InvalidConfigError(
                "input/output/batch", (input_tokens, output_tokens, batch), "must all be >= 1"
            )
        fits = self.max_batch(input_tokens + output_tokens)
        if batch > fits:
            raise InvalidConfigError(
                "batch",
                batch,
                f"{batch} sequences of {input_tokens + output_tokens} tokens need "
                f"{batch * (input_tokens + output_tokens)} KV tokens; the replica holds "
                f"{self.kv_capacity_tokens} (at most batch {fits}); use --batch max or a larger --tp",
            )
        b = float(batch)
        mean_ctx = input_tokens + output_tokens / 2.0
        prompt_pairs = self.attn_pairs(float(input_tokens), 0.0)
        # One request's first token: its prompt prefilled in a step shared with the other
        # batch - 1 sequences' decode tokens (continuous batching, no queueing).
        others = b - 1.0
        ttft = float(self.step_time_s(float(input_tokens), prompt_pairs, others, others * mean_ctx))
        tpot = float(self.step_time_s(0.0, 0.0, b, b * mean_ctx))
        decode_steps = output_tokens - 1
        e2e = ttft + decode_steps * tpot
        # Throughput and energy over one generation cycle: all prompts prefilled, then decode.
        prefill_all_s = float(self.step_time_s(b * input_tokens, b * prompt_pairs, 0.0, 0.0))
        cycle_s = prefill_all_s + decode_steps * tpot
        energy = (
            float(self.step_power_w(b * input_tokens, b * prompt_pairs, 0.0, 0.0)) * prefill_all_s
            + float(self.step_power_w(0.0, 0.0, b, b * mean_ctx)) * decode_steps * tpot
        )
        out_tokens = b * output_tokens
        memory = (
            self.weight_memory_gb
            + b
            * (input_tokens + output_tokens)
            * (self.kv_bytes_per_token * max(1.0, self.tp / self.model.num_kv_heads))
            / self.tp
            / 1e9
        )
        return Prediction(
            batch=batch,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            ttft_s=ttft,
            tpot_s=tpot,
            e2e_s=e2e,
            output_tokens_per_s=out_tokens / cycle_s,
            tokens_per_j=out_tokens / energy if energy > 0 else float("nan"),
            energy_j_per_output_token=energy / out_tokens,
            memory_gb=memory,
            power_w=energy / cycle_s,
            kv_capacity_tokens=self.kv_capacity_tokens,
            assumptions=self.assumptions(),
        )

    def assumptions(self) -> tuple[str, ...]:
        """Everything this model's figures rest on that is not a sourced device figure."""
        out = [
            f"efficiency {self.efficiency.source}: compute {self.efficiency.compute_fraction:.2f}, "
            f"memory {self.efficiency.memory_fraction:.2f}, step overhead "
            f"{self.efficiency.step_overhead_s * 1e3:.2f} ms",
            f"KV cache may use {MEMORY_UTILIZATION:.0%} of card memory minus weights",
        ]
        if self.request_overhead_s:
            out.append(
                f"per-request overhead {self.request_overhead_s * 1e3:.1f} ms (front end and "
                "hops, outside the iterations) added to each request's TTFT and end-to-end time"
            )
        if self.device.tdp_w is None:
            out.append(f"{self.device.device_id}: no power figure; energy is not modelled (0 W)")
        elif self.device.idle_w is None:
            out.append(f"idle power = {IDLE_POWER_FRACTION:.0%} of TDP (no sourced idle figure)")
        for name in self.device.assumed:
            out.append(
                f"{self.device.device_id}.{name} = {getattr(self.device, name)} from user catalog "
                f"({', '.join(self.device.assumption_sources)}), not a sourced figure"
            )
        for name in self.model.assumed:
            out.append(f"{self.model.model_id}.{name} from user catalog")
        if self.lora is not None:
            out.append(
                f"LoRA r={self.lora.rank} on {'/'.join(self.lora.target_modules)} "
                f"(max_loras {self.lora.max_loras}): its FLOPs on every token, its weights read "
                "every step (an upper bound; the roofline, no measured LoRA kernel figure)"
            )
        return tuple(out)


def _smallest_fitting_tp(
    model: Model, device: Device, precision: Precision, kvb: float, memory_utilization: float
) -> int | None:
    assert device.memory_gb is not None
    weights = (
        model.num_layers * model.layer_params * precision.weight_bytes + model.embedding_params * 2
    )
    kv_tok = model.kv_elements_per_token() * kvb
    for tp in (1, 2, 4, 8, 16, 32, 64):
        if model.num_attention_heads % tp:
            continue
        free = (device.memory_gb * memory_utilization - weights / tp / 1e9) * 1e9 * tp
        if free / (kv_tok * max(1.0, tp / model.num_kv_heads)) >= _MIN_KV_TOKENS:
            return tp
    return None
