"""Token buckets shared by several gateway processes: each leases slices from the database.

NOTE(gateway): with several gateways behind a load balancer, a tenant's bucket lives in the
shared store (:mod:`npucenter.store.coordination`). A gateway takes from it a *lease*, at least
what the request needs and up to ``lease_s`` seconds of the tenant's rate, and admits requests
out of what it holds; a request's unused estimate goes back to what the gateway holds (an
overrun becomes a debt there), and what a gateway has not used for ``idle_s`` goes back to the
shared bucket (:meth:`LeaseBook.give_back_idle`, and everything at shutdown). Every token a
gateway admits was taken from the one shared bucket, so across all gateways a tenant gets at
most the bucket's burst plus its rate over time, whatever the number of gateways; what one
gateway holds unused at a moment is at most one lease. A lease is one short database
transaction on the request path (about once per ``lease_s`` per tenant and gateway).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

from npucenter.clock import Clock
from npucenter.errors import QuotaExceededError, RateLimitedError

__all__ = ["DEFAULT_LEASE_S", "LeaseBook", "LeaseGrant", "SharedBuckets"]

#: Seconds of a tenant's rate one lease takes when the request needs less.
DEFAULT_LEASE_S = 1.0


@dataclass(frozen=True, slots=True)
class LeaseGrant:
    """What the shared store answered: tokens granted (0: refused) and when to retry."""

    granted: float
    available: float
    retry_after_s: float


class SharedBuckets(Protocol):
    """The shared store of buckets (the database in the live center)."""

    def lease(
        self, bucket: str, *, rate_per_s: float, burst: float, need: float, want: float,
        now_s: float,
    ) -> LeaseGrant: ...  # fmt: skip

    def give_back(self, bucket: str, tokens: float, *, now_s: float) -> None: ...


@dataclass(slots=True)
class _Held:
    tokens: float = 0.0  # leased and not used (negative: a debt to cover first)
    used_s: float = 0.0  # when this gateway last took from it


class LeaseBook:
    """This gateway's leases of shared buckets (one event loop; not thread-safe)."""

    def __init__(
        self, shared: SharedBuckets, clock: Clock, *, lease_s: float = DEFAULT_LEASE_S
    ) -> None:
        self.shared = shared
        self._clock = clock
        self.lease_s = lease_s
        self._held: dict[str, _Held] = {}
        self.num_leases = 0  # database round trips so far (the cost of sharing)

    def require(
        self, tenant: str, kind: str, tokens: float, *, rate_per_s: float, burst: float
    ) -> None:
        """Take ``tokens`` of ``tenant``'s ``kind`` bucket, leasing more when short, or raise.

        Raises:
            RateLimitedError: the shared bucket is short now (retry after the time given).
            QuotaExceededError: ``tokens`` exceeds the burst: it can never be admitted.
        """
        if tokens > burst:
            raise QuotaExceededError(
                tenant,
                kind,
                tokens,
                burst,
                hint="send a shorter request (fewer prompt tokens or a lower max_tokens) "
                "or ask the operator for a larger token burst",
            )
        key = f"{tenant}/{kind}"
        held = self._held.setdefault(key, _Held())
        now_s = self._clock.now_s()
        held.used_s = now_s
        if held.tokens >= tokens:
            held.tokens -= tokens
            return
        need = tokens - held.tokens
        want = max(need, min(burst, rate_per_s * self.lease_s))
        grant = self.shared.lease(
            key, rate_per_s=rate_per_s, burst=burst, need=need, want=want, now_s=now_s
        )
        self.num_leases += 1
        if grant.granted <= 0:
            available = max(0.0, held.tokens + grant.available)
            if math.isinf(grant.retry_after_s):
                raise QuotaExceededError(tenant, kind, tokens, burst)
            raise RateLimitedError(
                tenant, kind, tokens, available, math.ceil(grant.retry_after_s * 10) / 10
            )
        held.tokens += grant.granted - tokens

    def settle(self, tenant: str, kind: str, *, estimated: float, actual: float) -> None:
        """Replace an admitted estimate by the real count (refund kept here, overrun a debt)."""
        held = self._held.get(f"{tenant}/{kind}")
        if held is not None:
            held.tokens += estimated - actual

    def held(self, tenant: str, kind: str) -> float:
        """Tokens this gateway holds of ``tenant``'s ``kind`` bucket (negative: a debt)."""
        held = self._held.get(f"{tenant}/{kind}")
        return held.tokens if held is not None else 0.0

    def collect_idle(self, idle_s: float = 1.0) -> list[tuple[str, float]]:
        """Take out what was not used for ``idle_s`` (and debts), to give back to the buckets.

        Runs on the event loop; the caller hands each (bucket, tokens) to
        ``shared.give_back`` (a database call, fine in a worker thread).
        """
        now_s = self._clock.now_s()
        out = []
        for key, held in self._held.items():
            if held.tokens != 0 and now_s - held.used_s >= idle_s:
                out.append((key, held.tokens))
                held.tokens = 0.0
        return out

    def give_back_idle(self, idle_s: float = 1.0) -> float:
        """Return to the shared buckets what was not used for ``idle_s`` (and debts); the total."""
        now_s = self._clock.now_s()
        items = self.collect_idle(idle_s)
        for key, tokens in items:
            self.shared.give_back(key, tokens, now_s=now_s)
        return sum(tokens for _key, tokens in items)

    def give_back_all(self) -> float:
        """Return everything held (at shutdown)."""
        return self.give_back_idle(idle_s=-math.inf)
