"""What the digital twin predicts for a benchmarked chip, and how far the measurement is from it.

Reads the pure perf model (``npucenter.perf``) for the device and model a result names.

NOTE(bench): the saturation prediction is continuous batching in steady state. With ``B``
sequences always running, each slot takes a new prompt of ``I`` tokens once per ``O`` decode
iterations, so an iteration admits ``j ~ Poisson(B/O)`` whole prompts (one prefill step each, up to
the token budget) while the other ``B - j`` sequences decode. Step time is a roofline (convex in
the tokens), so we average ``step_time(j*I, j*pairs(I), B-j, (B-j)*(I + O/2))`` over ``j`` rather
than plugging in the mean; the replica completes ``B/(O*E[T])`` requests per second. ``B`` is the smallest of ``max_num_seqs``, the KV
capacity in sequences of ``I+O`` tokens and the token budget ``budget/(I/O + 1)``. A virtual
engine run with ``time_scale`` s (real seconds per modelled second) is ``1/time_scale`` as fast.
TTFT at a run's load is ``predict(I, O, batch=mean concurrency)`` plus, with probability
``min(1, mean concurrency)`` that the engine is busy, half an iteration spent waiting for it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from npucenter.errors import InvalidConfigError, NpuCenterError

__all__ = ["TwinTarget", "compare_with_twin", "predict_saturation"]


@dataclass(frozen=True, slots=True, kw_only=True)
class TwinTarget:
    """What the twin needs to know about the endpoint's replica."""

    device: str
    model: str
    tp: int = 1
    precision: str | None = None
    max_num_seqs: int = 256
    max_num_batched_tokens: int = 8192
    time_scale: float = 1.0  # real seconds per modelled second (virtual engines)

    def __post_init__(self) -> None:
        if self.time_scale <= 0:
            raise InvalidConfigError("time_scale", self.time_scale, "must be > 0 to compare")
        if self.max_num_seqs < 1 or self.max_num_batched_tokens < 1:
            raise InvalidConfigError(
                "max_num_seqs/max_num_batched_tokens",
                (self.max_num_seqs, self.max_num_batched_tokens),
                "must be >= 1",
            )

    @classmethod
    def from_result(cls, doc: Mapping[str, Any]) -> TwinTarget | None:
        """The target a result file describes, or None when it names no device."""
        meta = doc.get("target") or {}
        device = meta.get("device") or doc.get("device")
        model = meta.get("catalog_model") or doc.get("model_id")
        if not device or not model:
            return None
        return cls(
            device=str(device),
            model=str(model),
            tp=int(meta.get("tp") or 1),
            precision=meta.get("precision"),
            max_num_seqs=int(meta.get("max_num_seqs") or 256),
            max_num_batched_tokens=int(meta.get("max_num_batched_tokens") or 8192),
            time_scale=float(meta.get("time_scale") or 1.0),
        )


def _perf_model(target: TwinTarget) -> Any:
    from npucenter.catalog import default_catalog
    from npucenter.perf import build_perf_model

    return build_perf_model(
        default_catalog(),
        model=target.model,
        device=target.device,
        precision=target.precision,
        tp=target.tp,
    )


def predict_saturation(
    target: TwinTarget, input_tokens: float, output_tokens: float, perf: Any = None
) -> dict[str, Any]:
    """Predicted steady-state capacity (real seconds, i.e. divided by the time scale)."""
    pm = perf if perf is not None else _perf_model(target)
    n_in, n_out = max(1.0, float(input_tokens)), max(1.0, float(output_tokens))
    kv_fit = pm.max_batch(max(1, round(n_in + n_out)))
    budget_fit = int(target.max_num_batched_tokens / (n_in / n_out + 1.0))
    batch = max(1, min(target.max_num_seqs, kv_fit, budget_fit))
    step_s, energy_j = _mean_iteration(pm, batch, n_in, n_out, target.max_num_batched_tokens)
    rps = batch / (n_out * step_s) / target.time_scale
    low = pm.predict(round(n_in), max(1, round(n_out)), 1)
    return {
        "device": target.device,
        "model": target.model,
        "tp": target.tp,
        "time_scale": target.time_scale,
        "batch": batch,
        "batch_limit": _limit_name(batch, target.max_num_seqs, kv_fit, budget_fit),
        "step_time_s": step_s * target.time_scale,
        "saturation_rps": rps,
        "saturation_output_tokens_per_s": rps * n_out,
        "low_load_ttft_s": low.ttft_s * target.time_scale,
        "low_load_tpot_s": low.tpot_s * target.time_scale,
        "low_load_e2e_s": low.e2e_s * target.time_scale,
        "tokens_per_j_at_saturation": batch / energy_j if energy_j > 0 else None,
        "assumptions": list(pm.assumptions()),
    }


def _limit_name(batch: int, seqs: int, kv: int, budget: int) -> str:
    if batch == seqs:
        return "max_num_seqs"
    if batch == kv:
        return "kv_capacity"
    return "token_budget"


def _mean_iteration(
    pm: Any, batch: int, n_in: float, n_out: float, budget: int
) -> tuple[float, float]:
    """Mean duration (s) and energy (J) of an iteration at saturation (see the module note)."""
    mean_prefills = batch / n_out
    pairs = pm.attn_pairs(n_in, 0.0)
    top = int(mean_prefills + 8 * math.sqrt(mean_prefills) + 8)
    total_p = time_s = energy_j = 0.0
    log_p = -mean_prefills  # log Poisson(0)
    for j in range(top + 1):
        if j > 0:
            log_p += math.log(mean_prefills) - math.log(j)
        p = math.exp(log_p)
        decode = max(0, batch - j)
        args = (min(j * n_in, float(budget)), j * pairs, decode, decode * (n_in + n_out / 2))
        step = float(pm.step_time_s(*args))
        total_p += p
        time_s += p * step
        energy_j += p * step * float(pm.step_power_w(*args))
    return time_s / total_p, energy_j / total_p


def compare_with_twin(doc: Mapping[str, Any]) -> dict[str, Any] | None:
    """Twin prediction vs measurement for a result naming a catalog device and model.

    Returns None when the result names no device; ``{"error": ...}`` when the twin cannot
    predict (unknown id, missing figure, model does not fit).
    """
    target = TwinTarget.from_result(doc)
    if target is None:
        return None
    summary = doc.get("summary") or {}
    scenario = doc.get("scenario") or {}
    n_in = summary.get("total_input_tokens", 0) / max(1, summary.get("completed", 0)) or float(
        scenario.get("input_tokens", 128)
    )
    n_out = summary.get("total_output_tokens", 0) / max(1, summary.get("completed", 0)) or float(
        scenario.get("output_tokens", 128)
    )
    try:
        pm = _perf_model(target)
        pred = predict_saturation(target, n_in, n_out, perf=pm)
        low = _lowest_load_summary(doc) or dict(summary)
        batch = max(1, min(round(low.get("mean_concurrency") or 1.0), pred["batch"]))
        at_load = pm.predict(max(1, round(n_in)), max(1, round(n_out)), batch)
    except NpuCenterError as exc:
        return {"device": target.device, "model": target.model, "error": str(exc)}
    pred["at_load_batch"] = batch
    # an arrival waits on average half of the running iteration when the engine is busy
    busy = min(1.0, float(low.get("mean_concurrency") or 0.0))
    pred["ttft_s_at_load"] = (at_load.ttft_s + 0.5 * busy * at_load.tpot_s) * target.time_scale
    pred["tpot_s_at_load"] = at_load.tpot_s * target.time_scale
    out: dict[str, Any] = {"prediction": pred, "measured": {}, "error_fraction": {}}
    sat = doc.get("saturation") or {}
    if sat.get("saturation_rps"):
        out["measured"]["saturation_rps"] = sat["saturation_rps"]
        out["error_fraction"]["saturation_rps"] = sat["saturation_rps"] / pred["saturation_rps"] - 1
    for key in ("ttft_s", "tpot_s"):
        measured = (low.get(key) or {}).get("p50")
        if measured:
            pkey = f"{key}_at_load"
            out["measured"][pkey] = measured
            out["error_fraction"][pkey] = measured / pred[pkey] - 1
    best = _saturated_summary(doc) if sat else dict(summary)
    tpj = (best or {}).get("output_tokens_per_j")
    if tpj and pred.get("tokens_per_j_at_saturation") and sat:
        out["measured"]["tokens_per_j_at_saturation"] = tpj
        out["error_fraction"]["tokens_per_j_at_saturation"] = (
            tpj / pred["tokens_per_j_at_saturation"] - 1
        )
    return out


def _lowest_load_summary(doc: Mapping[str, Any]) -> dict[str, Any] | None:
    runs = doc.get("runs") or []
    if not runs:
        return None
    return dict(runs[0].get("summary") or {})


def _saturated_summary(doc: Mapping[str, Any]) -> dict[str, Any] | None:
    runs = doc.get("runs") or []
    step = (doc.get("saturation") or {}).get("saturation_step")
    if step is None or step >= len(runs):
        return None
    return dict(runs[step].get("summary") or {})
