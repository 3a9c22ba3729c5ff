"""Energy and cost of held cards: the card's modelled power and the center's own tariff.

NOTE(control): a ledger row for held cards (``job``, ``replica``, ``preemption``) carries
``energy_j = device_s * power_w(card)`` and ``cost_usd = device_s / 3600 * tariff(card)``.
Power is measured where the runner could read it (telemetry of the job's cards, passed in as
``energy_j``), else modelled by the perf model's one rule (:func:`npucenter.perf.card_power_w`:
``idle + (TDP - idle) * busy_fraction``, idle the catalog's ``idle_w`` or a fraction of TDP);
a held card is taken as fully busy by default (a tenant holds the whole card). A device with no sourced TDP (ATOM) has
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
        return _card_power_w(device_type, self.busy_fraction)

    def cost_usd(self, device_type: str, device_s: float) -> float | None:
        """The price of ``device_s`` device-seconds of ``device_type`` (None: not priced)."""
        rate = self.usd_per_device_hour.get(device_type, self.default_usd_per_device_hour)
        return None if rate is None else rate * device_s / 3600.0

    @property
    def is_priced(self) -> bool:
        """Whether any device has a price."""
        return bool(self.usd_per_device_hour) or self.default_usd_per_device_hour is not None


@lru_cache(maxsize=256)
def _card_power_w(device_type: str, busy_fraction: float) -> float:
    from npucenter.perf import card_power_w

    try:
        device = default_catalog().device(device_type)
    except NpuCenterError:
        return 0.0
    power = card_power_w(device, busy_fraction)
    if power is None:
        log.warning("%s has no sourced TDP: its held-card ledger rows carry 0 J", device_type)
        return 0.0
    return power
