"""Side-by-side comparison of devices for one model and workload shape (pure)."""

from __future__ import annotations

from dataclasses import dataclass

from npucenter.catalog.catalog import Catalog
from npucenter.catalog.precision import Precision
from npucenter.errors import InvalidConfigError, ModelDoesNotFitError, NpuCenterError
from npucenter.perf.model import PerfModel, Prediction

__all__ = [
    "ComparisonRow",
    "best_batch_under_tpot",
    "compare_devices",
    "resolve_batch",
    "smallest_tp_model",
    "throughput_latency_curve",
]

DEFAULT_MAX_NUM_SEQS = 256  # vLLM's default --max-num-seqs


@dataclass(frozen=True, slots=True, kw_only=True)
class ComparisonRow:
    """One device's best operating point, or why it has none."""

    device_id: str
    kind: str
    tp: int | None
    precision: str | None
    prediction: Prediction | None
    reason: str = ""

    @property
    def tokens_per_s_per_card(self) -> float | None:
        """Aggregate output tokens/s divided by the cards of the replica."""
        if self.prediction is None or self.tp is None:
            return None
        return self.prediction.output_tokens_per_s / self.tp


def resolve_batch(
    pm: PerfModel, input_tokens: int, output_tokens: int, batch: int | str, max_num_seqs: int
) -> int:
    """``batch`` as an int; ``"max"`` = the largest batch fitting KV memory (≤ max_num_seqs)."""
    if isinstance(batch, str):
        if batch.strip().lower() != "max":
            raise InvalidConfigError("batch", batch, "use a positive integer or 'max'")
        return max(1, min(pm.max_batch(input_tokens + output_tokens), max_num_seqs))
    return batch


def best_batch_under_tpot(
    pm: PerfModel,
    input_tokens: int,
    output_tokens: int,
    tpot_limit_s: float,
    max_num_seqs: int = DEFAULT_MAX_NUM_SEQS,
) -> Prediction | None:
    """The highest-throughput batch whose TPOT stays within ``tpot_limit_s`` (None if none).

    TPOT never falls as batch grows, so the largest batch under the limit is found by bisection.
    """
    hi = min(pm.max_batch(input_tokens + output_tokens), max_num_seqs)
    if hi < 1 or pm.tpot_s(1, input_tokens + output_tokens / 2) > tpot_limit_s:
        return None
    lo = 1
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if pm.tpot_s(mid, input_tokens + output_tokens / 2) <= tpot_limit_s:
            lo = mid
        else:
            hi = mid - 1
    return pm.predict(input_tokens, output_tokens, lo)


def throughput_latency_curve(
    pm: PerfModel, input_tokens: int, output_tokens: int, max_num_seqs: int = DEFAULT_MAX_NUM_SEQS
) -> list[Prediction]:
    """Predictions at batch 1, 2, 4, … up to the largest batch that fits (and the cap itself).

    Each point trades latency (TTFT, TPOT) for aggregate throughput; the last point is the
    replica's saturation throughput for these lengths.
    """
    top = min(pm.max_batch(input_tokens + output_tokens), max_num_seqs)
    batches: list[int] = []
    b = 1
    while b < top:
        batches.append(b)
        b *= 2
    if top >= 1:
        batches.append(top)
    return [pm.predict(input_tokens, output_tokens, batch) for batch in batches]


def compare_devices(
    catalog: Catalog,
    *,
    model: str,
    input_tokens: int,
    output_tokens: int,
    tpot_limit_s: float,
    precision: str | None = None,
    max_num_seqs: int = DEFAULT_MAX_NUM_SEQS,
) -> list[ComparisonRow]:
    """Every catalog device at the smallest TP that fits and its best batch under the TPOT limit."""
    from npucenter.perf import default_precision

    mod = catalog.model(model)
    rows = []
    for dev in catalog.devices:
        try:
            prec = (
                Precision.parse(precision)
                if precision
                else default_precision(catalog, dev.device_id)
            )
            pm = smallest_tp_model(catalog, mod.model_id, dev.device_id, prec)
            pred = best_batch_under_tpot(
                pm, input_tokens, output_tokens, tpot_limit_s, max_num_seqs
            )
            reason = "" if pred else f"TPOT at batch 1 exceeds {tpot_limit_s * 1e3:g} ms"
            rows.append(
                ComparisonRow(
                    device_id=dev.device_id,
                    kind=dev.kind,
                    tp=pm.tp,
                    precision=prec.value,
                    prediction=pred,
                    reason=reason,
                )
            )
        except NpuCenterError as exc:
            rows.append(
                ComparisonRow(
                    device_id=dev.device_id,
                    kind=dev.kind,
                    tp=None,
                    precision=None,
                    prediction=None,
                    reason=str(exc),
                )
            )
    return rows


def smallest_tp_model(
    catalog: Catalog, model_id: str, device_id: str, prec: Precision
) -> PerfModel:
    """The perf model at the smallest tensor-parallel degree on which the model fits."""
    from npucenter.perf import build_perf_model

    try:
        return build_perf_model(catalog, model=model_id, device=device_id, precision=prec, tp=1)
    except ModelDoesNotFitError as exc:
        if exc.min_tp is None:
            raise
        return build_perf_model(
            catalog, model=model_id, device=device_id, precision=prec, tp=exc.min_tp
        )
