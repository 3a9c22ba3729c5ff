"""The perf model of every replica the fleet may place: each deployment on each type it accepts.

A fungible deployment (``fallback_devices``) has a perf model per device type it lists, so the
twin serves each replica at the speed of the type admission put it on. Pure: no I/O.
"""

from __future__ import annotations

from npucenter.fleet.spec import FleetSpec
from npucenter.perf import PerfModel, PerfModelCache

__all__ = ["fleet_perf_models"]


def fleet_perf_models(fleet: FleetSpec, cache: PerfModelCache) -> dict[tuple[int, str], PerfModel]:
    """(deployment index, device type as admission names it) -> the perf model of its replicas
    there: each device type a deployment accepts, a fungible one's fallbacks at the precision
    its first device type resolves to (as the live center checks them). Raises the perf model's
    errors for a type the model cannot run on."""
    mixes = {s.name: s.adapters for s in fleet.services if s.adapters is not None}
    out: dict[tuple[int, str], PerfModel] = {}
    for index, d in enumerate(fleet.deployments):
        first = cache.get(d.model, d.device, d.precision, d.tp)
        for device in d.devices:
            pm = (
                first
                if device == d.device
                else cache.get(d.model, device, first.precision.value, d.tp)
            )
            if d.service in mixes:  # its requests name adapters: the LoRA term (perf/lora.py)
                pm = pm.with_lora(mixes[d.service].shape())
            out[index, fleet.pool(device).device.lower()] = pm
    return out
