"""Energy and cost of held cards: the card's modelled power and the center's own tariff.

NOTE(control): a ledger row for held cards (``job``, ``replica``, ``preemption``) carries
``energy_j = device_s * power_w(card)`` and ``cost_usd = device_s / 3600 * tariff(card)``.
Power is measured where the runner could read it (telemetry of the job's cards, passed in as
``energy_j``), else modelled as the perf model does: ``idle + (TDP - idle) * busy_fraction``
with idle the catalog's ``idle_w`` or ``IDLE_POWER_FRACTION`` of TDP; a held card is taken as
fully busy by default (a tenant holds the whole card). A device with no sourced TDP (ATOM) has
no modelled power: its rows carry 0 J. The tariff is the operator's price list (settings or the
fleet file), never package data; a device it does not price leaves ``cost_usd`` empty.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache

from npucenter.catalog import default_catalog
from npucenter.errors import InvalidConfigError, NpuCenterError

__all__ = ["CardRates"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class CardRates:
    """Power and price of one held card per device type.

    ``usd_per_device_hour`` is keyed by canonical catalog id (aliases are resolved by
    :meth:`from_tariff`); ``default_usd_per_device_hour`` prices every other device (None:
    unpriced).
    """

    usd_per_device_hour: Mapping[str, float] = field(default_factory=dict)
    default_usd_per_device_hour: float | None = None
    busy_fraction: float = 1.0  # 0-1: how busy a held card is assumed to be

    def __post_init__(self) -> None:
        if not 0.0 <= self.busy_fraction <= 1.0:
            raise InvalidConfigError("busy_fraction", self.busy_fraction, "must be in 0-1")
        prices = dict(self.usd_per_device_hour)
        if self.default_usd_per_device_hour is not None:
            prices["default"] = self.default_usd_per_device_hour
        for device, price in prices.items():
            if not price >= 0:
                raise InvalidConfigError(f"tariff.{device}", price, "must be >= 0 USD per hour")

    @classmethod
    def from_tariff(cls, tariff: Mapping[str, float], *, busy_fraction: float = 1.0) -> CardRates:
        """Rates from a price list keyed by device id or alias (``"default"`` for the rest).

        Raises NotFoundError when a key names no catalog device.
        """
        prices = {k: float(v) for k, v in tariff.items() if k.lower() != "default"}
        default = next((float(v) for k, v in tariff.items() if k.lower() == "default"), None)
        catalog = default_catalog()
        return cls(
            usd_per_device_hour={catalog.device(k).device_id: v for k, v in prices.items()},
            default_usd_per_device_hour=default,
            busy_fraction=busy_fraction,
        )

    def power_w(self, device_type: str) -> float:
        """Modelled power of one held card (W); 0 when the catalog has no sourced TDP."""
        tdp_w, idle_w = _tdp_and_idle_w(device_type)
        return idle_w + (tdp_w - idle_w) * self.busy_fraction

    def cost_usd(self, device_type: str, device_s: float) -> float | None:
        """The price of ``device_s`` device-seconds of ``device_type`` (None: not priced)."""
        rate = self.usd_per_device_hour.get(device_type, self.default_usd_per_device_hour)
        return None if rate is None else rate * device_s / 3600.0

    @property
    def is_priced(self) -> bool:
        """Whether any device has a price."""
        return bool(self.usd_per_device_hour) or self.default_usd_per_device_hour is not None


@lru_cache(maxsize=64)
def _tdp_and_idle_w(device_type: str) -> tuple[float, float]:
    from npucenter.perf import IDLE_POWER_FRACTION

    try:
        device = default_catalog().device(device_type)
    except NpuCenterError:
        return 0.0, 0.0
    if device.tdp_w is None:
        log.warning("%s has no sourced TDP: its held-card ledger rows carry 0 J", device_type)
        return 0.0, 0.0
    tdp = float(device.tdp_w)
    idle = float(device.idle_w) if device.idle_w is not None else IDLE_POWER_FRACTION * tdp
    return tdp, idle
