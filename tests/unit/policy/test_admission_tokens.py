"""Unit tests of the token side of a tenant's quota: TokenBudget (the gateway's request admission)."""

from __future__ import annotations

import math

import pytest

from npucenter.errors import InvalidConfigError, QuotaExceededError, RateLimitedError
from npucenter.policy.admission import DEFAULT_TOKEN_BURST_S, TenantQuota, TokenBudget


def q(rate: float | None = 100.0, burst: float | None = None) -> TenantQuota:
    return TenantQuota(tenant="lab", tokens_per_s=rate, burst_tokens=burst)


def test_a_new_budget_is_full_at_the_burst() -> None:
    budget = TokenBudget.for_quota(q(100.0), now_s=0.0)
    assert budget.burst_tokens == 100.0 * DEFAULT_TOKEN_BURST_S
    assert budget.level_tokens == budget.burst_tokens
    assert TokenBudget.for_quota(q(100.0, burst=250.0), now_s=0.0).level_tokens == 250.0


def test_admit_takes_tokens_and_refuses_when_empty() -> None:
    budget = TokenBudget.for_quota(q(100.0, burst=300.0), now_s=0.0)
    first = budget.admit(200.0, now_s=0.0)
    assert first.admitted and first.budget.level_tokens == pytest.approx(100.0)
    second = first.budget.admit(150.0, now_s=0.0)
    assert not second.admitted
    assert second.retry_after_s == pytest.approx(0.5)  # 50 tokens short at 100 tokens/s
    assert second.budget.level_tokens == pytest.approx(100.0)  # a refusal takes nothing


def test_the_bucket_refills_at_the_rate_up_to_the_burst() -> None:
    budget = TokenBudget.for_quota(q(10.0, burst=50.0), now_s=0.0).admit(50.0, now_s=0.0).budget
    assert budget.refilled(2.0).level_tokens == pytest.approx(20.0)
    assert budget.refilled(100.0).level_tokens == pytest.approx(50.0)
    assert budget.refilled(-5.0).level_tokens == pytest.approx(0.0)  # time never runs back


def test_retry_after_is_enough_to_be_admitted() -> None:
    budget = TokenBudget.for_quota(q(7.0, burst=40.0), now_s=0.0).admit(33.0, now_s=0.0).budget
    refused = budget.admit(30.0, now_s=1.0)
    assert not refused.admitted
    later = refused.budget.admit(30.0, now_s=1.0 + refused.retry_after_s + 1e-9)
    assert later.admitted


def test_a_request_larger_than_the_burst_can_never_pass() -> None:
    budget = TokenBudget.for_quota(q(10.0, burst=100.0), now_s=0.0)
    verdict = budget.admit(101.0, now_s=0.0)
    assert not verdict.admitted and math.isinf(verdict.retry_after_s)
    with pytest.raises(QuotaExceededError) as err:
        budget.require(101.0, now_s=0.0)
    assert not isinstance(err.value, RateLimitedError)
    assert (err.value.tenant, err.value.resource, err.value.requested) == ("lab", "tokens", 101.0)


def test_require_raises_rate_limited_with_retry_after() -> None:
    budget = TokenBudget.for_quota(q(10.0, burst=100.0), now_s=0.0).require(90.0, now_s=0.0)
    with pytest.raises(RateLimitedError) as err:
        budget.require(30.0, now_s=0.0)
    assert err.value.retryable
    assert err.value.retry_after_s == pytest.approx(2.0)
    assert err.value.available == pytest.approx(10.0)


def test_settle_refunds_or_charges_the_difference() -> None:
    budget = TokenBudget.for_quota(q(1.0, burst=1000.0), now_s=0.0).require(600.0, now_s=0.0)
    refunded = budget.settle(estimated_tokens=600.0, actual_tokens=100.0, now_s=0.0)
    assert refunded.level_tokens == pytest.approx(900.0)
    charged = budget.settle(estimated_tokens=600.0, actual_tokens=1500.0, now_s=0.0)
    assert charged.level_tokens == pytest.approx(-500.0)  # a debt: the next request waits
    assert not charged.admit(1.0, now_s=0.0).admitted


def test_unmetered_tenant_is_always_admitted() -> None:
    budget = TokenBudget.for_quota(q(None), now_s=0.0)
    assert not budget.metered
    assert budget.admit(10**12, now_s=0.0).admitted
    assert budget.require(10**12, now_s=1.0) == budget


def test_zero_rate_admits_nothing() -> None:
    budget = TokenBudget.for_quota(q(0.0), now_s=0.0)
    verdict = budget.admit(1.0, now_s=100.0)
    assert not verdict.admitted and math.isinf(verdict.retry_after_s)


def test_negative_tokens_are_rejected() -> None:
    with pytest.raises(InvalidConfigError):
        TokenBudget.for_quota(q(), now_s=0.0).admit(-1.0, now_s=0.0)
