"""Metering: the usage ledger (tokens, device-seconds, energy, cost) per tenant and service.

The gateway writes one :class:`UsageRecord` per request through the :class:`Ledger` seam; the
control plane's store implements it durably, :class:`InMemoryLedger` in memory.
"""

from npucenter.metering.attribution import ReplicaMeter, Share
from npucenter.metering.ledger import (
    InMemoryLedger,
    Ledger,
    PriceBook,
    UsageRecord,
    UsageTotals,
    summarize,
)

__all__ = [
    "InMemoryLedger",
    "Ledger",
    "PriceBook",
    "ReplicaMeter",
    "Share",
    "UsageRecord",
    "UsageTotals",
    "summarize",
]
