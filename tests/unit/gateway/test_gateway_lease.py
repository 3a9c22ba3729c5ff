"""Several gateways, one budget: each leases slices of a shared bucket (gateway/lease.py)."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from npucenter.clock import FakeClock
from npucenter.errors import QuotaExceededError, RateLimitedError
from npucenter.gateway.auth import Principal, TenantLimits
from npucenter.gateway.budget import BudgetBook
from npucenter.gateway.lease import LeaseBook, LeaseGrant
from npucenter.policy.quota import TokenBudget


class MemoryBuckets:
    """The shared store as one TokenBudget per bucket (the database's rule, in memory)."""

    def __init__(self) -> None:
        self.buckets: dict[str, TokenBudget] = {}
        self.taken = 0.0  # every token granted, minus every token given back

    def lease(
        self, bucket: str, *, rate_per_s: float, burst: float, need: float, want: float,
        now_s: float,
    ) -> LeaseGrant:  # fmt: skip
        b = self.buckets.get(bucket) or TokenBudget(
            tenant=bucket, rate_tokens_per_s=rate_per_s, burst_tokens=burst,
            level_tokens=burst, updated_s=now_s,
        )  # fmt: skip
        b = b.refilled(now_s)
        if need > b.level_tokens:
            self.buckets[bucket] = b
            wait = (need - b.level_tokens) / rate_per_s
            return LeaseGrant(granted=0.0, available=b.level_tokens, retry_after_s=wait)
        granted = min(want, b.level_tokens)
        self.buckets[bucket] = replace(b, level_tokens=b.level_tokens - granted)
        self.taken += granted
        return LeaseGrant(granted=granted, available=b.level_tokens, retry_after_s=0.0)

    def give_back(self, bucket: str, tokens: float, *, now_s: float) -> None:
        b = self.buckets[bucket].refilled(now_s)
        self.buckets[bucket] = replace(b, level_tokens=min(b.burst_tokens, b.level_tokens + tokens))
        self.taken -= tokens


def _principal(**limits: float) -> Principal:
    return Principal(key_id="k", tenant="acme", limits=TenantLimits(**limits))


def _gateways(n: int, clock: FakeClock, shared: MemoryBuckets) -> list[BudgetBook]:
    books = []
    for _ in range(n):
        book = BudgetBook(clock)
        book.leases = LeaseBook(shared, clock, lease_s=1.0)
        books.append(book)
    return books


@pytest.mark.parametrize("num_gateways", [1, 2, 4])
def test_tokens_through_many_gateways_stay_within_one_bucket(num_gateways: int) -> None:
    clock, shared = FakeClock(), MemoryBuckets()
    books = _gateways(num_gateways, clock, shared)
    p = _principal(tokens_per_s=10.0, burst_tokens=20.0)
    rng = random.Random(7)
    admitted = 0
    for _ in range(400):  # 40 s of requests of 1-8 tokens spread over the gateways
        clock.advance(0.1)
        book = rng.choice(books)
        tokens = rng.randint(1, 8)
        try:
            r = book.reserve(p, tokens)
        except RateLimitedError:
            continue
        admitted += tokens
        book.reconcile(r, tokens)
    # one bucket: its burst plus its rate over the time, however many gateways
    assert admitted <= 20.0 + 10.0 * 40.0 + 1e-6
    assert admitted >= 0.8 * (10.0 * 40.0)  # and the rate is really served


def test_a_gateway_never_holds_more_than_one_lease_unused() -> None:
    clock, shared = FakeClock(), MemoryBuckets()
    a, b = _gateways(2, clock, shared)
    p = _principal(tokens_per_s=10.0, burst_tokens=100.0)
    a.reserve(p, 1)  # leases 10 tokens (1 s of rate), uses 1
    assert a.leases is not None and a.leases.held("acme", "tokens") == pytest.approx(9.0)
    assert shared.taken == pytest.approx(10.0)
    b.reserve(p, 90)  # what a holds is not b's: 90 left in the bucket
    with pytest.raises(RateLimitedError):
        b.reserve(p, 1)
    clock.advance(2.0)  # a idle for 2 s: its slice goes back
    assert a.leases.give_back_idle(1.0) == pytest.approx(9.0)
    assert a.leases.held("acme", "tokens") == 0.0


def test_unused_estimate_stays_with_the_gateway_and_overrun_is_a_debt() -> None:
    clock, shared = FakeClock(), MemoryBuckets()
    (book,) = _gateways(1, clock, shared)
    p = _principal(tokens_per_s=10.0, burst_tokens=50.0)
    r = book.reserve(p, 30)
    assert book.leases is not None
    book.reconcile(r, 5)  # 25 not used: kept here for the next request
    assert book.leases.held("acme", "tokens") == pytest.approx(25.0)
    r = book.reserve(p, 20)
    book.reconcile(r, 40)  # used 20 more than reserved
    assert book.leases.held("acme", "tokens") == pytest.approx(-15.0)
    with pytest.raises(RateLimitedError):  # the debt is paid before anything else
        book.reserve(p, 10)  # the bucket holds 20; 15 of debt + 10 > 20


def test_more_than_the_burst_is_refused_for_good() -> None:
    clock, shared = FakeClock(), MemoryBuckets()
    (book,) = _gateways(1, clock, shared)
    with pytest.raises(QuotaExceededError) as info:
        book.reserve(_principal(tokens_per_s=10.0, burst_tokens=20.0), 21)
    assert not isinstance(info.value, RateLimitedError)


def test_requests_per_minute_are_shared_too() -> None:
    clock, shared = FakeClock(), MemoryBuckets()
    a, b = _gateways(2, clock, shared)
    p = _principal(requests_per_min=6.0)
    served = 0
    for i in range(20):
        try:
            (a if i % 2 else b).reserve(p, 0)
            served += 1
        except RateLimitedError:
            pass
    assert served == 6  # the burst of one bucket, not one per gateway


def test_a_refused_token_lease_does_not_spend_a_request() -> None:
    clock, shared = FakeClock(), MemoryBuckets()
    (book,) = _gateways(1, clock, shared)
    p = _principal(requests_per_min=2.0, tokens_per_s=1.0, burst_tokens=5.0)
    with pytest.raises(RateLimitedError):
        book.reserve(p, 5)
        book.reserve(p, 5)
    assert book.leases is not None
    book.reserve(p, 0)  # the refused request's request token came back
