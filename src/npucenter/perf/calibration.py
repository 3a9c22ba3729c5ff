"""Calibration: fit per-device efficiency factors to published measurements and report the error.

NOTE(calibration): each measurement row is predicted by the roofline model (:class:`PerfModel`)
under the row's own setting: TP degree = cards used (vendor comparisons with an unstated setup
take the best split of the cards into TP groups × data-parallel replicas), batch as published,
or for "max (offline)" / unstated batches the largest batch that fits in KV memory up to
``OFFLINE_MAX_BATCH``. Per device we fit four factors (compute efficiency, memory efficiency,
fixed step overhead, fixed latency of one all-reduce between cards) by robust least squares on log(predicted / published), pulled weakly toward
a fit shared by all devices, which is also what devices without rows use. The leave-one-out error
refits everything without each row in turn and predicts that row, so it measures prediction, not
memorisation.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache

import numpy as np
import numpy.typing as npt

from npucenter.catalog.catalog import Catalog, Measurement, default_catalog
from npucenter.catalog.device import Device
from npucenter.catalog.model import Model
from npucenter.catalog.precision import Precision
from npucenter.errors import ModelDoesNotFitError, NpuCenterError
from npucenter.perf.model import MEMORY_UTILIZATION, Efficiency, PerfModel
from npucenter.perf.profiles import measured_efficiency

__all__ = [
    "METRICS",
    "OFFLINE_MAX_BATCH",
    "SCENARIO_PREFIX",
    "CalibrationReport",
    "RowResult",
    "ScenarioPredictor",
    "calibrate",
    "engine_precision",
    "fitted_efficiencies",
    "predict_measurement",
    "validate",
]

# TensorRT-LLM's default max_batch_size when building engines (trtllm-build) is 2048.
OFFLINE_MAX_BATCH = 2048
_PRIOR_WEIGHT = 0.25  # strength of the pull toward the all-device fit (per log-unit)
# the fourth factor is the fixed latency of one all-reduce (only multi-card rows inform it):
# with the 20 us prior, short prompts on TP4 came out 19-40 % fast (the low-token regime)
_LOWER = np.array([0.05, 0.05, 0.0, 0.0])
_UPPER = np.array([1.0, 1.0, 0.05, 500e-6])
_START = np.array([0.5, 0.7, 0.003, 20e-6])
# TensorRT-LLM's KvCacheConfig.free_gpu_memory_fraction default: the KV cache gets 90 % of the
# memory left free after the weights (https://nvidia.github.io/TensorRT-LLM/examples/kvcacheconfig.html),
# where vLLM-style reserves take 90 % of the whole card. Used only for a published setup that the
# model's own reserve would refuse.
TRTLLM_FREE_GPU_MEMORY_FRACTION = 0.9

#: Predicts a scenario row (lengths from a distribution, arrivals, limits) by running the twin.
#: Injected by the caller (``npucenter.plan.fidelity.predict_scenario_row``): perf sits below sim.
ScenarioPredictor = Callable[
    [Catalog, Measurement, Efficiency, Precision | None], tuple[float, str]
]
SCENARIO_PREFIX = "mlperf-"  # rows whose scenario is a preset of npucenter.workload.mlperf

# NOTE(calibration): every metric is predicted as itself and its unit must be the one listed
# (a row in other units is refused with a reason, never converted silently). ``ttft_ms`` is the
# batch-1 prompt latency of the "latency_batch1" rows; the mean/p99 metrics are those of a
# serving run. With fixed lengths and a fixed batch every request sees the same steady state,
# so p99 equals the mean; a scenario row (a length distribution) is where they differ.
METRICS: Mapping[str, tuple[str, ...]] = {
    "output_tokens_per_s": ("tokens/s",),
    "output_tokens_per_s_per_device": ("tokens/s/GPU", "tokens/s/device", "tokens/s/card"),
    "ttft_ms": ("ms",),
    "ttft_mean_ms": ("ms",),
    "ttft_p99_ms": ("ms",),
    "tpot_mean_ms": ("ms",),
    "tpot_p99_ms": ("ms",),
}
_LATENCY_METRICS = ("ttft_ms", "ttft_mean_ms", "ttft_p99_ms", "tpot_mean_ms", "tpot_p99_ms")


@dataclass(frozen=True, slots=True, kw_only=True)
class RowResult:
    """Predicted vs published for one measurement row."""

    index: int
    device_id: str
    model: str
    scenario: str
    metric: str
    published: float
    predicted: float | None  # None: the row cannot be predicted (reason says why)
    loo_predicted: float | None
    setting: str  # TP/DP/batch used for the prediction
    reason: str = ""
    note: str = ""  # e.g. the precision a row with none stated was predicted at
    source_url: str = ""

    @property
    def pct_error(self) -> float | None:
        """Signed error of the prediction in percent of the published value."""
        if self.predicted is None:
            return None
        return 100.0 * (self.predicted - self.published) / self.published

    @property
    def loo_pct_error(self) -> float | None:
        """Signed leave-one-out error in percent."""
        if self.loo_predicted is None:
            return None
        return 100.0 * (self.loo_predicted - self.published) / self.published


@dataclass(frozen=True, slots=True, kw_only=True)
class CalibrationReport:
    """The whole calibration: fitted factors per device and the error of every row."""

    rows: tuple[RowResult, ...]
    efficiencies: Mapping[str, Efficiency]
    shared: Efficiency

    @property
    def predicted_rows(self) -> tuple[RowResult, ...]:
        """Rows the model could predict (the others lack lengths or a precision)."""
        return tuple(r for r in self.rows if r.predicted is not None)

    def summary(self) -> dict[str, float | int]:
        """Median and max absolute % error, in-sample and leave-one-out."""
        return _error_summary(self.predicted_rows, rows_total=len(self.rows))

    def per_metric(self) -> dict[str, dict[str, float | int]]:
        """The same summary for each metric on its own."""
        metrics = sorted({r.metric for r in self.rows})  # a metric no row could predict: rows 0
        return {
            m: _error_summary(
                [r for r in self.predicted_rows if r.metric == m],
                rows_total=sum(1 for r in self.rows if r.metric == m),
            )
            for m in metrics
        }

    def to_dict(self) -> dict[str, object]:
        """The JSON document of ``npucenter perf calibrate --json``."""
        return {
            **_json_safe(self.summary()),
            "per_metric": {m: _json_safe(v) for m, v in self.per_metric().items()},
            "per_row": [
                {
                    "index": r.index,
                    "device_id": r.device_id,
                    "model": r.model,
                    "scenario": r.scenario,
                    "metric": r.metric,
                    "published": r.published,
                    "predicted": r.predicted,
                    "pct_error": r.pct_error,
                    "loo_predicted": r.loo_predicted,
                    "loo_pct_error": r.loo_pct_error,
                    "setting": r.setting,
                    "reason": r.reason,
                    "note": r.note,
                    "source_url": r.source_url,
                }
                for r in self.rows
            ],
            "efficiency": {
                dev: {
                    "compute_fraction": e.compute_fraction,
                    "memory_fraction": e.memory_fraction,
                    "step_overhead_s": e.step_overhead_s,
                    "allreduce_latency_s": e.allreduce_latency_s,
                    "source": e.source,
                }
                for dev, e in {"*shared*": self.shared, **self.efficiencies}.items()
            },
        }


def _json_safe(summary: Mapping[str, float | int]) -> dict[str, float | int | None]:
    """NaN (no rows, or no leave-one-out) becomes null: the document stays strict JSON."""
    return {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in summary.items()}


def _error_summary(rows: Sequence[RowResult], *, rows_total: int) -> dict[str, float | int]:
    errs = [abs(r.pct_error) for r in rows if r.pct_error is not None]
    loo = [abs(r.loo_pct_error) for r in rows if r.loo_pct_error is not None]
    return {
        "rows": len(errs),
        "rows_total": rows_total,
        "median_abs_pct_error": float(np.median(errs)) if errs else math.nan,
        "max_abs_pct_error": float(np.max(errs)) if errs else math.nan,
        "loo_median_abs_pct_error": float(np.median(loo)) if loo else math.nan,
        "loo_max_abs_pct_error": float(np.max(loo)) if loo else math.nan,
    }


def engine_precision(catalog: Catalog, device: str) -> Precision:
    """The precision a device's engine serves LLMs in by default: FP8 where supported, else 16-bit."""
    dev = catalog.device(device)
    for choice in (Precision.FP8, Precision.BF16, Precision.FP16, Precision.INT8):
        if choice in dev.precisions:
            return choice
    return Precision.BF16


def predict_measurement(
    catalog: Catalog,
    row: Measurement,
    efficiency: Efficiency,
    *,
    precision: Precision | None = None,
    scenario_predictor: ScenarioPredictor | None = None,
) -> tuple[float, str]:
    """Predict one row's metric as that same metric; returns (value, setting).

    ``precision`` stands in for a row that states none (validation); calibration never guesses.
    Raises NpuCenterError if the row cannot be predicted (the message says why).
    """
    units = METRICS.get(row.metric)
    if units is None:
        raise _Unpredictable(f"metric {row.metric!r} is not modelled (known: {', '.join(METRICS)})")
    if row.unit not in units:
        raise _Unpredictable(
            f"unit {row.unit!r} does not match metric {row.metric} (expects {' or '.join(units)})"
        )
    if not row.precision and precision is None:
        raise _Unpredictable("precision not stated")
    if row.scenario.startswith(SCENARIO_PREFIX) and scenario_predictor is not None:
        # The twin says which of the scenario's lengths are missing and why (its data set).
        return scenario_predictor(catalog, row, efficiency, precision)
    if row.input_tokens is None or row.output_tokens is None:
        raise _Unpredictable("input/output lengths not stated")
    if row.scenario.startswith(SCENARIO_PREFIX):
        raise _Unpredictable(f"scenario row ({row.scenario}): predicted by the twin only")
    model = catalog.model(row.model_name)
    device = catalog.device(row.device_id)
    prec = Precision.parse(row.precision) if row.precision else precision
    assert prec is not None
    splits = [row.num_devices]
    if row.scenario.startswith("vendor"):
        splits = [tp for tp in (1, 2, 4, 8, 16) if row.num_devices % tp == 0]
    latency = row.metric in _LATENCY_METRICS
    best: tuple[float, str] | None = None
    stated = not row.scenario.startswith("vendor")  # the setup ran as published
    for tp in splits:
        memory_note = ""
        try:
            pm = PerfModel(model, device, prec, tp, efficiency)
        except ModelDoesNotFitError:
            engine_util = _engine_memory_utilization(row, model, device, prec, tp)
            if not stated or engine_util is None:
                continue
            try:
                pm = PerfModel(model, device, prec, tp, efficiency, memory_utilization=engine_util)
            except NpuCenterError:
                continue
            memory_note = (
                f" (memory: the model's {MEMORY_UTILIZATION:.0%}-of-card reserve refuses this "
                f"published setup; predicted with TensorRT-LLM's free_gpu_memory_fraction "
                f"{TRTLLM_FREE_GPU_MEMORY_FRACTION} of the memory left after weights)"
            )
        except NpuCenterError:
            continue
        dp = row.num_devices // tp
        value, setting = _predict_metric(pm, row, dp)
        setting += memory_note
        # an unstated split: the vendor ran the best one (highest rate, lowest latency)
        if best is None or (value < best[0] if latency else value > best[0]):
            best = (value, setting)
    if best is None:
        raise _Unpredictable(
            f"{model.model_id} does not fit {row.num_devices} × {device.device_id}"
        )
    return best


def validate(
    measurements: Sequence[Measurement],
    catalog: Catalog | None = None,
    *,
    scenario_predictor: ScenarioPredictor | None = None,
) -> CalibrationReport:
    """Score the fitted model against ``measurements`` without refitting (independent rows).

    Each row is predicted with the efficiency :func:`npucenter.perf.build_perf_model` would use
    for its device; a row without a precision is predicted at :func:`engine_precision` and its
    ``note`` says so. Rows that cannot be predicted carry a ``reason``.
    """
    cat = catalog or default_catalog()
    shared, per_device = fitted_efficiencies()
    results = []
    for i, row in enumerate(measurements):
        predicted: float | None = None
        setting = reason = note = ""
        try:
            dev = cat.device(row.device_id)
            eff = per_device.get(dev.device_id) or measured_efficiency(dev.device_id) or shared
            guess: Precision | None = None
            if not row.precision:
                guess = engine_precision(cat, dev.device_id)
                note = f"precision not stated: predicted at {guess.value} (the engine's default)"
            predicted, setting = predict_measurement(
                cat, row, eff, precision=guess, scenario_predictor=scenario_predictor
            )
        except NpuCenterError as exc:
            reason, note = str(exc), ""
        results.append(
            RowResult(
                index=i,
                device_id=row.device_id,
                model=row.model_name,
                scenario=row.scenario,
                metric=row.metric,
                published=row.value,
                predicted=predicted,
                loo_predicted=None,
                setting=setting,
                reason=reason,
                note=note,
                source_url=row.source_url,
            )
        )
    return CalibrationReport(rows=tuple(results), efficiencies=per_device, shared=shared)


def calibrate(
    catalog: Catalog | None = None,
    *,
    leave_one_out: bool = True,
    scenario_predictor: ScenarioPredictor | None = None,
) -> CalibrationReport:
    """Fit efficiencies to every row of the catalog's measurements and report the errors.

    Scenario rows (``mlperf-*``) are predicted, and fitted, through ``scenario_predictor`` (a
    twin run per evaluation); without one they are reported with a reason.
    """
    cat = catalog or default_catalog()
    rows = list(cat.measurements)
    sp = scenario_predictor
    usable = [i for i, row in enumerate(rows) if _reason_unusable(cat, row, sp) == ""]
    shared, per_device = _fit(cat, rows, usable, sp)
    loo: dict[int, float] = {}
    if leave_one_out:
        for i in usable:
            rest = [j for j in usable if j != i]
            s_i, d_i = _fit(cat, rows, rest, sp)
            eff = d_i.get(rows[i].device_id, s_i)
            loo[i] = predict_measurement(cat, rows[i], eff, scenario_predictor=sp)[0]
    results = []
    for i, row in enumerate(rows):
        reason = _reason_unusable(cat, row, sp)
        predicted: float | None = None
        setting = ""
        if not reason:
            predicted, setting = predict_measurement(
                cat, row, per_device.get(row.device_id, shared), scenario_predictor=sp
            )
        results.append(
            RowResult(
                index=i,
                device_id=row.device_id,
                model=row.model_name,
                scenario=row.scenario,
                metric=row.metric,
                published=row.value,
                predicted=predicted,
                loo_predicted=loo.get(i),
                setting=setting,
                reason=reason,
                source_url=row.source_url,
            )
        )
    return CalibrationReport(rows=tuple(results), efficiencies=per_device, shared=shared)


@cache
def fitted_efficiencies() -> tuple[Efficiency, dict[str, Efficiency]]:
    """(shared, per device) efficiencies fitted on the shipped measurements (cached)."""
    cat = default_catalog()
    rows = list(cat.measurements)
    usable = [i for i, row in enumerate(rows) if _reason_unusable(cat, row) == ""]
    return _fit(cat, rows, usable)


# --- internals -------------------------------------------------------------------------------
class _Unpredictable(NpuCenterError):
    pass


def _predict_metric(pm: PerfModel, row: Measurement, dp: int) -> tuple[float, str]:
    assert row.input_tokens is not None and row.output_tokens is not None
    if row.metric == "ttft_ms":  # batch-1 prompt latency
        return pm.ttft_s(row.input_tokens, 1) * 1e3, f"TP{pm.tp} batch 1"
    cap = pm.max_batch(row.input_tokens + row.output_tokens)
    batch = min(row.batch, cap) if row.batch is not None else min(cap, OFFLINE_MAX_BATCH)
    batch = max(batch, 1)
    pred = pm.predict(row.input_tokens, row.output_tokens, batch)
    setting = f"TP{pm.tp} × DP{dp}, batch {batch}"
    if row.metric.startswith("ttft_"):
        return pred.ttft_s * 1e3, setting + " (fixed lengths: p99 = mean)"
    if row.metric.startswith("tpot_"):
        return pred.tpot_s * 1e3, setting + " (fixed lengths: p99 = mean)"
    total = pred.output_tokens_per_s * dp
    value = total / row.num_devices if row.metric.endswith("_per_device") else total
    return value, setting


def _engine_memory_utilization(
    row: Measurement, model: Model, device: Device, precision: Precision, tp: int
) -> float | None:
    """The share of card memory the row's engine gives weights + KV, where it is known."""
    if not row.engine.lower().startswith("tensorrt") or not device.memory_gb:
        return None
    weights_gb = (
        (
            model.num_layers * model.layer_params * precision.weight_bytes
            + model.embedding_params * 2
        )
        / tp
        / 1e9
    )
    if weights_gb >= device.memory_gb:
        return None
    free = device.memory_gb - weights_gb
    return (weights_gb + TRTLLM_FREE_GPU_MEMORY_FRACTION * free) / device.memory_gb


def _reason_unusable(cat: Catalog, row: Measurement, sp: ScenarioPredictor | None = None) -> str:
    try:
        predict_measurement(cat, row, Efficiency(), scenario_predictor=sp)
    except NpuCenterError as exc:
        return str(exc)
    return ""


def _efficiency(theta: npt.NDArray[np.float64], source: str) -> Efficiency:
    return Efficiency(
        compute_fraction=float(theta[0]),
        memory_fraction=float(theta[1]),
        step_overhead_s=float(theta[2]),
        allreduce_latency_s=float(theta[3]),
        source=source,
    )


def _log_residuals(
    cat: Catalog,
    rows: Sequence[Measurement],
    idx: Iterable[int],
    eff: Efficiency,
    sp: ScenarioPredictor | None = None,
) -> list[float]:
    return [
        math.log(predict_measurement(cat, rows[i], eff, scenario_predictor=sp)[0] / rows[i].value)
        for i in idx
    ]


def _fit_one(
    cat: Catalog,
    rows: Sequence[Measurement],
    idx: Sequence[int],
    prior: npt.NDArray[np.float64] | None,
    sp: ScenarioPredictor | None = None,
) -> npt.NDArray[np.float64]:
    def residuals(theta: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        res = _log_residuals(cat, rows, idx, _efficiency(theta, "fit"), sp)
        if prior is not None:  # per device: pulled toward the shared fit
            scale = np.array([1.0, 1.0, 0.0])
            res.extend(
                _PRIOR_WEIGHT * scale * (np.log(theta[:3] + 1e-9) - np.log(prior[:3] + 1e-9))
            )
            res.append(_PRIOR_WEIGHT * (theta[2] - prior[2]) / 0.002)
            res.append(_PRIOR_WEIGHT * (theta[3] - prior[3]) / 20e-6)
        return np.asarray(res, dtype=np.float64)

    from scipy.optimize import least_squares  # heavy: loaded only when a fit runs

    start = np.clip(prior if prior is not None else _START, _LOWER, _UPPER)
    fit = least_squares(
        residuals, start, bounds=(_LOWER, _UPPER), loss="soft_l1", f_scale=0.3, x_scale=_START
    )
    return np.asarray(fit.x, dtype=np.float64)


def _fit(
    cat: Catalog,
    rows: Sequence[Measurement],
    idx: Sequence[int],
    sp: ScenarioPredictor | None = None,
) -> tuple[Efficiency, dict[str, Efficiency]]:
    shared_theta = _fit_one(cat, rows, idx, None, sp)
    shared = _efficiency(shared_theta, f"shared fit on {len(idx)} rows")
    by_device: dict[str, list[int]] = {}
    for i in idx:
        by_device.setdefault(rows[i].device_id, []).append(i)
    per_device = {}
    for dev, dev_idx in sorted(by_device.items()):
        theta = _fit_one(cat, rows, dev_idx, shared_theta, sp)
        per_device[dev] = _efficiency(theta, f"fitted on {len(dev_idx)} published rows")
    return shared, per_device
