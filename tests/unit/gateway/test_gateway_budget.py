"""One counter enforces and tracks: reserve before admission, reconcile after."""

from __future__ import annotations

import pytest

from npucenter.clock import FakeClock
from npucenter.errors import QuotaExceededError, RateLimitedError
from npucenter.gateway.auth import Principal, TenantLimits
from npucenter.gateway.budget import BudgetBook
from npucenter.policy.quota import TokenBudget


def _principal(**limits: float) -> Principal:
    return Principal(key_id="k", tenant="acme", limits=TenantLimits(**limits))


def test_quota_counts_reservations_in_flight() -> None:
    book = BudgetBook(FakeClock())
    p = _principal(token_quota=100)
    book.reserve(p, 60)
    with pytest.raises(QuotaExceededError) as info:
        book.reserve(p, 60)
    assert info.value.available == 40
    assert not isinstance(info.value, RateLimitedError)


def test_reconcile_replaces_estimate_with_actual() -> None:
    book = BudgetBook(FakeClock())
    p = _principal(token_quota=100)
    r = book.reserve(p, 80)
    book.reconcile(r, 30)
    view = book.view("acme")
    assert view is not None
    assert view.used_tokens == 30 and view.reserved_tokens == 0
    book.reserve(p, 70)  # 30 used + 70 fits exactly
    with pytest.raises(QuotaExceededError):
        book.reserve(p, 1)


def test_reconcile_twice_counts_once() -> None:
    book = BudgetBook(FakeClock())
    r = book.reserve(_principal(), 10)
    book.reconcile(r, 10)
    book.reconcile(r, 10)
    view = book.view("acme")
    assert view is not None and view.used_tokens == 10


def test_requests_per_minute_refill_and_retry_after() -> None:
    clock = FakeClock()
    book = BudgetBook(clock)
    p = _principal(requests_per_min=2)
    book.reserve(p, 0)
    book.reserve(p, 0)
    with pytest.raises(RateLimitedError) as info:
        book.reserve(p, 0)
    assert info.value.retryable and 0 < info.value.retry_after_s <= 30.0
    clock.advance(info.value.retry_after_s)
    book.reserve(p, 0)


def test_token_rate_debt_delays_next_request() -> None:
    clock = FakeClock()
    book = BudgetBook(clock)
    p = _principal(tokens_per_s=10, burst_tokens=600)
    r = book.reserve(p, 100)
    book.reconcile(r, 600)  # used far more than reserved: bucket now at 0
    with pytest.raises(RateLimitedError) as info:
        book.reserve(p, 50)
    assert info.value.resource == "tokens"
    assert info.value.retry_after_s == pytest.approx(5.0)
    clock.advance(5.0)
    book.reserve(p, 50)


def test_token_rate_burst_defaults_to_ten_seconds_of_rate() -> None:
    book = BudgetBook(FakeClock())
    p = _principal(tokens_per_s=10)
    book.reserve(p, 100)
    with pytest.raises(RateLimitedError):
        book.reserve(p, 1)
    view = book.view("acme")
    assert view is not None and view.token_bucket_level == pytest.approx(0.0)


def test_refund_when_the_response_is_shorter_than_reserved() -> None:
    book = BudgetBook(FakeClock())
    p = _principal(tokens_per_s=1, burst_tokens=100)
    r = book.reserve(p, 100)
    book.reconcile(r, 10)
    view = book.view("acme")
    assert view is not None and view.token_bucket_level == pytest.approx(90.0)
    book.reserve(p, 90)  # the 90 unused tokens were given back
    with pytest.raises(RateLimitedError):
        book.reserve(p, 1)


def test_request_larger_than_the_per_minute_limit_is_not_retryable() -> None:
    book = BudgetBook(FakeClock())
    with pytest.raises(QuotaExceededError) as info:
        book.reserve(_principal(tokens_per_s=1, burst_tokens=100), 101)
    assert not info.value.retryable


def test_initial_usage_counts_against_the_quota() -> None:
    book = BudgetBook(FakeClock())
    p = Principal(key_id="k", tenant="t", limits=TenantLimits(token_quota=100), tokens_used=95)
    with pytest.raises(QuotaExceededError):
        book.reserve(p, 10)


def test_changed_limits_apply_to_the_same_counter() -> None:
    book = BudgetBook(FakeClock())
    book.reserve(_principal(token_quota=100), 50)
    with pytest.raises(QuotaExceededError):
        book.reserve(_principal(token_quota=60), 20)


def test_request_bucket_is_the_policy_token_budget() -> None:
    """Requests per minute and the token rate are one bucket type, the policy core's."""
    clock = FakeClock()
    book = BudgetBook(clock)
    book.reserve(_principal(requests_per_min=6, tokens_per_s=10), 1)
    state = book._tenants["acme"]
    assert isinstance(state.requests, TokenBudget) and isinstance(state.tokens, TokenBudget)
    assert state.requests.rate_tokens_per_s == pytest.approx(0.1)
    assert state.requests.level_tokens == pytest.approx(5.0)


def test_a_lower_request_limit_keeps_the_debt_and_grants_no_credit() -> None:
    clock = FakeClock()
    book = BudgetBook(clock)
    book.reserve(_principal(requests_per_min=60), 0)  # 59 left
    lower = _principal(requests_per_min=10)
    book.reserve(lower, 0)  # capped at 10, then one taken
    view = book.view("acme")
    assert view is not None and view.request_bucket_level == pytest.approx(9.0)
    assert view.requests_per_min == 10


def test_a_request_limit_below_one_a_minute_is_not_retryable() -> None:
    book = BudgetBook(FakeClock())
    with pytest.raises(QuotaExceededError) as info:
        book.reserve(_principal(requests_per_min=0), 0)
    assert info.value.resource == "requests/min" and not info.value.retryable


def test_the_store_principal_is_the_gateway_principal() -> None:
    """One Principal type: the store's key lookup and the gateway's auth share it."""
    from npucenter.policy.principal import Principal as CorePrincipal
    from npucenter.store.repository import Principal as StorePrincipal

    assert Principal is CorePrincipal is StorePrincipal
    admin = Principal(key_id="key-1", tenant="", is_admin=True, scopes=frozenset({"admin"}))
    assert admin.scope == "admin" and _principal().scope == "tenant"
