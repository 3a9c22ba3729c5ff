"""Idle power of a card: the one rule the perf model, the twin, the planner and the ledger use.

A card draws its sourced ``idle_w`` when the catalog (or a user catalog) gives one; otherwise
:data:`IDLE_POWER_FRACTION` of its TDP, a model assumption every output that uses it lists; a
card with neither figure has no modelled power (None), and the caller says how it counts it.
Busy power rises linearly from idle to TDP with the busy fraction. Pure.
"""

from __future__ import annotations

from npucenter.catalog.device import Device

__all__ = ["IDLE_POWER_FRACTION", "card_power_w", "idle_power_w"]

# NOTE(perf): no source gives idle power for most cards, so idle power is this fraction of TDP
# unless a (user) catalog supplies ``idle_w``. A model assumption, not a device figure.
IDLE_POWER_FRACTION = 0.20


def idle_power_w(device: Device, *, assumed_fraction: float | None = None) -> float | None:
    """Idle power of one card of ``device`` (W), or None when it has neither idle nor TDP figure.

    ``assumed_fraction`` (a planner spec's ``idle_power_fraction``) replaces the rule: that
    fraction of TDP, even where a sourced idle figure exists.
    """
    if assumed_fraction is not None and device.tdp_w is not None:
        return assumed_fraction * float(device.tdp_w)
    if device.idle_w is not None:
        return float(device.idle_w)
    if device.tdp_w is not None:
        return IDLE_POWER_FRACTION * float(device.tdp_w)
    return None


def card_power_w(device: Device, busy_fraction: float) -> float | None:
    """Power of one card busy ``busy_fraction`` (0-1) of the time: idle + (TDP - idle) * busy.

    None when the device has no sourced TDP.
    """
    if device.tdp_w is None:
        return None
    idle = idle_power_w(device)
    assert idle is not None  # a TDP gives an idle figure
    return idle + (float(device.tdp_w) - idle) * busy_fraction
