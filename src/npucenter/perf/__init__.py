"""Performance model: memory, step time, latency, throughput and power of any model on any device.

Pure core. ``build_perf_model`` is the entry point every other layer uses (see docs/perf-api.md).
"""

from __future__ import annotations

from npucenter.catalog.catalog import Catalog, default_catalog
from npucenter.catalog.precision import Precision
from npucenter.perf.calibration import (
    CalibrationReport,
    calibrate,
    engine_precision,
    fitted_efficiencies,
    validate,
)
from npucenter.perf.model import (
    MEMORY_UTILIZATION,
    Efficiency,
    PerfModel,
    Prediction,
)
from npucenter.perf.power import IDLE_POWER_FRACTION, card_power_w, idle_power_w
from npucenter.perf.profiles import measured_efficiency

__all__ = [
    "IDLE_POWER_FRACTION",
    "MEMORY_UTILIZATION",
    "CalibrationReport",
    "Efficiency",
    "PerfModel",
    "PerfModelCache",
    "Prediction",
    "build_perf_model",
    "calibrate",
    "card_power_w",
    "default_precision",
    "fitted_efficiencies",
    "idle_power_w",
    "validate",
]


def default_precision(catalog: Catalog, device: str) -> Precision:
    """The precision a device serves LLMs in by default: FP8 where supported, else 16-bit."""
    return engine_precision(catalog, device)


def build_perf_model(
    catalog: Catalog | None = None,
    *,
    model: str,
    device: str,
    precision: str | Precision | None = None,
    tp: int = 1,
    efficiency: Efficiency | None = None,
) -> PerfModel:
    """The performance model of ``model`` on ``tp`` cards of ``device``.

    Efficiency factors come from the calibration on published measurements (the device's own
    fit; for a device without rows, its profile measured on a machine (``perf.profiles``), else
    the all-device fit) unless ``efficiency`` is given.

    Raises:
        NotFoundError: unknown model or device id.
        MissingFigureError: the device lacks a sourced figure the model needs.
        NotSupportedError: the device does not support the precision.
        ModelDoesNotFitError: weights plus a minimal KV cache exceed the cards' memory.

    Example:
        >>> pm = build_perf_model(model="llama-3.1-8b", device="h100", precision="fp8")
        >>> pm.predict(1024, 256, batch=8).ttft_s > 0
        True
    """
    cat = catalog or default_catalog()
    dev = cat.device(device)
    mod = cat.model(model)
    prec = Precision.parse(precision) if precision is not None else default_precision(cat, device)
    if efficiency is None:
        shared, per_device = fitted_efficiencies()
        # no published rows for the device: a profile measured on a machine, else the shared fit
        efficiency = per_device.get(dev.device_id) or measured_efficiency(dev.device_id) or shared
    return PerfModel(mod, dev, prec, tp, efficiency)


class PerfModelCache:
    """Performance models of one catalog by (model, device, precision, tp), each built once.

    The simulator, the planner's profiles and its verifiers ask for the same few models many
    times; building one runs the calibration lookup, so they share this memo.
    """

    def __init__(self, catalog: Catalog, *, efficiency: Efficiency | None = None) -> None:
        self.catalog = catalog
        self.efficiency = efficiency  # None: the calibrated factors; else these for every model
        self._models: dict[tuple[str, str, str | None, int], PerfModel] = {}

    def get(self, model: str, device: str, precision: str | None, tp: int) -> PerfModel:
        """The model for this key (raises what :func:`build_perf_model` raises)."""
        key = (model, device, precision, tp)
        pm = self._models.get(key)
        if pm is None:
            pm = build_perf_model(
                self.catalog,
                model=model,
                device=device,
                precision=precision,
                tp=tp,
                efficiency=self.efficiency,
            )
            self._models[key] = pm
        return pm
