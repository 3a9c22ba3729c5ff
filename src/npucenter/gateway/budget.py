"""Budgets that hold: one counter per tenant serves both enforcement and tracking.

A request *reserves* its estimated tokens (prompt estimate + ``max_tokens``) against the
tenant's token bucket, request bucket and total quota before it is admitted; when it ends,
:meth:`BudgetBook.reconcile` replaces the estimate by the response's real usage. The numbers the
dashboard shows are these same counters, so what is shown is what is enforced.

NOTE(gateway): both buckets are the policy core's pure :class:`TokenBudget` (this module only
keeps them per tenant and reads the clock): the token rate is the tenant quota's ``tokens_per_s``
with its burst, so jobs, replicas and requests are governed by one statement of the tenant's
share; requests per minute is a bucket of ``limit`` refilled at ``limit / 60`` per second, one
token a request. Reconciliation may push the token bucket below zero (a request used
more than it reserved), which then delays the tenant's next requests. One gateway process holds
the counters; several gateway processes share the buckets through ``leases``
(:mod:`npucenter.gateway.lease`: slices leased from the database).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from npucenter.clock import Clock
from npucenter.errors import QuotaExceededError, RateLimitedError
from npucenter.gateway.auth import Principal
from npucenter.gateway.lease import LeaseBook
from npucenter.policy.quota import DEFAULT_TOKEN_BURST_S, TokenBudget

__all__ = ["BudgetBook", "Reservation", "TenantBudgetView"]


@dataclass(slots=True, kw_only=True)
class Reservation:
    """Tokens held for one admitted request until it is reconciled."""

    tenant: str
    estimated_tokens: int
    settled: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class TenantBudgetView:
    """A tenant's counters now (the dashboard's and the usage API's view)."""

    tenant: str
    used_tokens: float  # reconciled tokens (since the quota's start)
    reserved_tokens: float  # held by requests in flight
    token_quota: float | None
    requests_per_min: float | None
    tokens_per_s: float | None
    request_bucket_level: float | None
    token_bucket_level: float | None


class _TenantState:
    __slots__ = ("limits", "requests", "reserved", "tokens", "used")

    def __init__(self, principal: Principal, now_s: float) -> None:
        self.limits = principal.limits
        self.used = float(principal.tokens_used)
        self.reserved = 0.0
        rpm = principal.limits.requests_per_min
        self.requests = (
            TokenBudget.per_minute(principal.tenant, rpm, now_s=now_s) if rpm is not None else None
        )
        self.tokens = _token_budget(principal, now_s)


class BudgetBook:
    """Every tenant's counters (one event loop; not thread-safe)."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._tenants: dict[str, _TenantState] = {}
        # Set when several gateways share the buckets (gateway/lease.py); None: this process's.
        self.leases: LeaseBook | None = None

    def reserve(self, principal: Principal, estimated_tokens: int) -> Reservation:
        """Hold ``estimated_tokens`` and one request for ``principal``'s tenant, or raise.

        Raises:
            RateLimitedError: a per-minute bucket is short now (retryable; ``retry_after_s``).
            QuotaExceededError: the total quota, or a per-minute limit smaller than the request.
        """
        now_s = self._clock.now_s()
        state = self._state(principal, now_s)
        tenant = principal.tenant
        quota = state.limits.token_quota
        if quota is not None:
            available = quota - state.used - state.reserved
            if estimated_tokens > available:
                raise QuotaExceededError(
                    tenant,
                    "tokens",
                    estimated_tokens,
                    max(0.0, available),
                    hint="lower max_tokens, or ask the operator for more quota",
                )
        if self.leases is not None:  # several gateways: slices of buckets in the database
            self._reserve_leased(state, tenant, estimated_tokens)
            state.reserved += estimated_tokens
            return Reservation(tenant=tenant, estimated_tokens=estimated_tokens)
        requests = self._take_request(state, tenant, now_s)
        if state.tokens is not None:
            state.tokens = state.tokens.require(estimated_tokens, now_s=now_s)
        if requests is not None:
            state.requests = requests
        state.reserved += estimated_tokens
        return Reservation(tenant=tenant, estimated_tokens=estimated_tokens)

    def reconcile(self, reservation: Reservation, actual_tokens: int) -> None:
        """Replace the reservation by the request's real usage (0 when it produced nothing)."""
        if reservation.settled:
            return
        reservation.settled = True
        state = self._tenants[reservation.tenant]
        state.reserved -= reservation.estimated_tokens
        state.used += actual_tokens
        if self.leases is not None and state.tokens is not None:
            self.leases.settle(
                reservation.tenant,
                "tokens",
                estimated=reservation.estimated_tokens,
                actual=actual_tokens,
            )
        elif state.tokens is not None:
            state.tokens = state.tokens.settle(
                estimated_tokens=reservation.estimated_tokens,
                actual_tokens=actual_tokens,
                now_s=self._clock.now_s(),
            )

    def view(self, tenant: str) -> TenantBudgetView | None:
        """The tenant's counters, or None if it has not called yet."""
        state = self._tenants.get(tenant)
        if state is None:
            return None
        now_s = self._clock.now_s()
        requests = state.requests.refilled(now_s) if state.requests is not None else None
        tokens = state.tokens.refilled(now_s) if state.tokens is not None else None
        return TenantBudgetView(
            tenant=tenant,
            used_tokens=state.used,
            reserved_tokens=state.reserved,
            token_quota=state.limits.token_quota,
            requests_per_min=state.limits.requests_per_min,
            tokens_per_s=state.limits.tokens_per_s,
            request_bucket_level=requests.level_tokens if requests is not None else None,
            token_bucket_level=tokens.level_tokens if tokens is not None else None,
        )

    def tenants(self) -> list[str]:
        """Tenants seen so far, sorted."""
        return sorted(self._tenants)

    def _reserve_leased(self, state: _TenantState, tenant: str, estimated_tokens: int) -> None:
        assert self.leases is not None
        limits = state.limits
        if limits.requests_per_min is not None:
            rpm = limits.requests_per_min
            self.leases.require(tenant, "requests", 1.0, rate_per_s=rpm / 60.0, burst=rpm)
        if state.tokens is not None:
            try:
                self.leases.require(
                    tenant,
                    "tokens",
                    estimated_tokens,
                    rate_per_s=state.tokens.rate_tokens_per_s,
                    burst=state.tokens.burst_tokens,
                )
            except (QuotaExceededError, RateLimitedError):
                if limits.requests_per_min is not None:  # the request was not made
                    self.leases.settle(tenant, "requests", estimated=1.0, actual=0.0)
                raise

    @staticmethod
    def _take_request(state: _TenantState, tenant: str, now_s: float) -> TokenBudget | None:
        """The request bucket less one request, or raise; ``None`` when requests are unlimited."""
        if state.requests is None:
            return None
        verdict = state.requests.admit(1.0, now_s=now_s)
        if verdict.admitted:
            return verdict.budget
        state.requests = verdict.budget
        if math.isinf(verdict.retry_after_s):
            raise QuotaExceededError(
                tenant,
                "requests/min",
                1,
                verdict.budget.burst_tokens,
                hint="ask the operator for a requests-per-minute limit of at least 1",
            )
        available = max(0.0, verdict.available_tokens)
        raise RateLimitedError(tenant, "requests/min", 1, available, _ceil(verdict.retry_after_s))

    def _state(self, principal: Principal, now_s: float) -> _TenantState:
        state = self._tenants.get(principal.tenant)
        if state is None:
            state = self._tenants[principal.tenant] = _TenantState(principal, now_s)
        elif state.limits is not principal.limits:
            self._apply_limits(state, principal, now_s)
        return state

    @staticmethod
    def _apply_limits(state: _TenantState, principal: Principal, now_s: float) -> None:
        old, limits = state.limits, principal.limits
        state.limits = limits
        rpm = limits.requests_per_min
        if rpm is None:
            state.requests = None
        elif state.requests is None:
            state.requests = TokenBudget.per_minute(principal.tenant, rpm, now_s=now_s)
        elif rpm != state.requests.burst_tokens:  # keep the debt, not the credit
            state.requests = state.requests.relimited(
                rate_tokens_per_s=rpm / 60.0, burst_tokens=rpm, now_s=now_s
            )
        if (limits.tokens_per_s, limits.burst_tokens) != (old.tokens_per_s, old.burst_tokens):
            fresh = _token_budget(principal, now_s)
            if fresh is not None and state.tokens is not None:  # keep the debt, not the credit
                fresh = state.tokens.relimited(
                    rate_tokens_per_s=fresh.rate_tokens_per_s,
                    burst_tokens=fresh.burst_tokens,
                    now_s=now_s,
                )
            state.tokens = fresh


def _token_budget(principal: Principal, now_s: float) -> TokenBudget | None:
    limits = principal.limits
    if limits.tokens_per_s is None:
        return None
    burst = limits.burst_tokens
    if burst is None:
        burst = limits.tokens_per_s * DEFAULT_TOKEN_BURST_S
    return TokenBudget(
        tenant=principal.tenant,
        rate_tokens_per_s=limits.tokens_per_s,
        burst_tokens=burst,
        level_tokens=burst,
        updated_s=now_s,
    )


def _ceil(wait_s: float) -> float:
    return math.ceil(wait_s * 10) / 10
