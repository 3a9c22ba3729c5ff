"""The usage ledger: one row per metered request (tokens, device-seconds, energy, cost).

Owns the :class:`UsageRecord` value, the :class:`Ledger` seam the gateway writes through, an
in-memory ledger (tests, the embedded default before the store is wired) and the summaries the
dashboard and ``npucenter usage`` show. Rows are append-only; totals are sums of rows.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from npucenter.errors import InvalidRequestError

__all__ = [
    "InMemoryLedger",
    "Ledger",
    "PriceBook",
    "UsageRecord",
    "UsageTotals",
    "summarize",
]

STATUSES = ("ok", "error", "cancelled")


@dataclass(frozen=True, slots=True, kw_only=True)
class UsageRecord:
    """One metered request, as the gateway saw it.

    ``device_s`` and ``energy_j`` are the request's share of its replica (all TP cards) over the
    request's lifetime: the replica's time and energy divided among the requests it ran at once.
    """

    request_id: str
    tenant: str
    key_id: str
    service: str  # the model (service) name the tenant asked for
    endpoint: str  # e.g. "/v1/chat/completions"
    replica_id: str = ""  # "" when no replica ran it (rejected before routing)
    device_id: str = ""  # catalog id of the replica's device
    status: str = "ok"  # "ok" | "error" | "cancelled"
    input_tokens: int = 0
    output_tokens: int = 0
    device_s: float = 0.0
    energy_j: float = 0.0
    cost_usd: float = 0.0
    started_at_s: float = 0.0  # Unix time the gateway received the request
    duration_s: float = 0.0

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise InvalidRequestError(
                f"usage status must be one of {STATUSES}, not {self.status!r}"
            )
        for name in ("input_tokens", "output_tokens", "device_s", "energy_j", "cost_usd"):
            if getattr(self, name) < 0:
                raise InvalidRequestError(f"usage {name} must be >= 0")

    @property
    def total_tokens(self) -> int:
        """Input plus output tokens."""
        return self.input_tokens + self.output_tokens


@dataclass(frozen=True, slots=True, kw_only=True)
class UsageTotals:
    """Sums over a set of usage rows."""

    num_requests: int = 0
    num_failed: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    device_s: float = 0.0
    energy_j: float = 0.0
    cost_usd: float = 0.0

    @property
    def total_tokens(self) -> int:
        """Input plus output tokens."""
        return self.input_tokens + self.output_tokens

    def plus(self, record: UsageRecord) -> UsageTotals:
        """These totals with one more row added."""
        return UsageTotals(
            num_requests=self.num_requests + 1,
            num_failed=self.num_failed + (record.status != "ok"),
            input_tokens=self.input_tokens + record.input_tokens,
            output_tokens=self.output_tokens + record.output_tokens,
            device_s=self.device_s + record.device_s,
            energy_j=self.energy_j + record.energy_j,
            cost_usd=self.cost_usd + record.cost_usd,
        )


class Ledger(Protocol):
    """Where usage rows go. The control plane's store implements it; so does InMemoryLedger."""

    def append(self, records: Sequence[UsageRecord]) -> None:
        """Append rows durably (one transaction per call)."""
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class PriceBook:
    """The center's tariff: what a device-hour of each device costs a tenant.

    This is the operator's price list (a business setting of the fleet file), not a device
    figure; a device without a tariff is metered at ``default_usd_per_device_hour``.
    """

    usd_per_device_hour: Mapping[str, float] = field(default_factory=dict)  # device id -> USD
    default_usd_per_device_hour: float = 0.0

    def __post_init__(self) -> None:
        for device, price in {
            **self.usd_per_device_hour,
            "default": self.default_usd_per_device_hour,
        }.items():
            if price < 0:
                raise InvalidRequestError(f"tariff for {device!r} must be >= 0 USD per device-hour")

    def cost_usd(self, device_id: str, device_s: float) -> float:
        """The price of ``device_s`` device-seconds on ``device_id``."""
        rate = self.usd_per_device_hour.get(device_id, self.default_usd_per_device_hour)
        return rate * device_s / 3600.0


class InMemoryLedger:
    """A thread-safe list of rows (tests; the gateway's fallback when no store is wired)."""

    def __init__(self) -> None:
        self._rows: list[UsageRecord] = []
        self._lock = threading.Lock()

    def append(self, records: Sequence[UsageRecord]) -> None:
        """Append rows."""
        with self._lock:
            self._rows.extend(records)

    def rows(self) -> list[UsageRecord]:
        """A copy of every row, oldest first."""
        with self._lock:
            return list(self._rows)

    def totals(self, tenant: str | None = None) -> UsageTotals:
        """Totals over every row (of one tenant when given)."""
        rows = self.rows()
        if tenant is not None:
            rows = [r for r in rows if r.tenant == tenant]
        return _sum(rows)


def summarize(
    records: Iterable[UsageRecord], by: Sequence[str] = ()
) -> dict[tuple[str, ...], UsageTotals]:
    """Totals grouped by the named fields (e.g. ``("tenant", "service")``); ``()`` -> one group."""
    groups: dict[tuple[str, ...], UsageTotals] = {}
    for record in records:
        key = tuple(str(getattr(record, name)) for name in by)
        groups[key] = groups.get(key, UsageTotals()).plus(record)
    return groups


def _sum(records: Iterable[UsageRecord]) -> UsageTotals:
    totals = UsageTotals()
    for record in records:
        totals = totals.plus(record)
    return totals
