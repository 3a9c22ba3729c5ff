"""Usage rows, totals and the attribution of device time and energy."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from npucenter.clock import FakeClock
from npucenter.errors import InvalidConfigError, InvalidRequestError
from npucenter.metering import InMemoryLedger, PriceBook, ReplicaMeter, UsageRecord, summarize


def _row(tenant: str = "a", service: str = "m", **kw: object) -> UsageRecord:
    return UsageRecord(
        request_id="r", tenant=tenant, key_id="k", service=service, endpoint="/v1/x", **kw
    )  # type: ignore[arg-type]


def test_totals_by_tenant_and_service() -> None:
    ledger = InMemoryLedger()
    ledger.append(
        [
            _row("a", input_tokens=3, output_tokens=4),
            _row("a", "n", output_tokens=1),
            _row("b", status="error"),
        ]
    )
    assert ledger.totals("a").total_tokens == 8
    assert ledger.totals().num_requests == 3 and ledger.totals().num_failed == 1
    groups = summarize(ledger.rows(), by=("tenant", "service"))
    assert groups[("a", "m")].output_tokens == 4 and groups[("a", "n")].output_tokens == 1


def test_bad_rows_are_rejected() -> None:
    with pytest.raises(InvalidRequestError):
        _row(status="maybe")
    with pytest.raises(InvalidRequestError):
        _row(input_tokens=-1)


def test_price_book() -> None:
    prices = PriceBook(usd_per_device_hour={"rngd": 3.6}, default_usd_per_device_hour=7.2)
    assert prices.cost_usd("rngd", 10) == pytest.approx(0.01)
    assert prices.cost_usd("other", 10) == pytest.approx(0.02)
    with pytest.raises(InvalidRequestError):
        PriceBook(default_usd_per_device_hour=-1)


def test_meter_splits_time_among_concurrent_requests() -> None:
    clock = FakeClock()
    meter = ReplicaMeter(tp=2, busy_power_w=100.0, clock=clock)
    a = meter.start()
    clock.advance(1.0)  # a alone: 2 device-s, 100 J
    b = meter.start()
    clock.advance(1.0)  # shared: 1 device-s, 50 J each
    share_a = meter.finish(a)
    clock.advance(2.0)  # b alone
    share_b = meter.finish(b)
    assert share_a.device_s == pytest.approx(3.0) and share_a.energy_j == pytest.approx(150.0)
    assert share_b.device_s == pytest.approx(5.0) and share_b.energy_j == pytest.approx(250.0)
    clock.advance(5.0)  # idle time is charged to nobody
    assert meter.num_active == 0


def test_meter_rejects_bad_config() -> None:
    with pytest.raises(InvalidConfigError):
        ReplicaMeter(tp=0, busy_power_w=1, clock=FakeClock())


@given(st.lists(st.tuples(st.floats(0, 5), st.booleans()), min_size=1, max_size=30))
def test_shares_sum_to_busy_device_time(events: list[tuple[float, bool]]) -> None:
    clock = FakeClock()
    meter = ReplicaMeter(tp=3, busy_power_w=10.0, clock=clock)
    open_marks: list[tuple[float, float]] = []
    busy_s = 0.0
    total = 0.0
    for dt, start in events:
        if open_marks:
            busy_s += dt
        clock.advance(dt)
        if start or not open_marks:
            open_marks.append(meter.start())
        else:
            total += meter.finish(open_marks.pop(0)).device_s
    for mark in open_marks:
        total += meter.finish(mark).device_s
    assert total == pytest.approx(3 * busy_s, rel=1e-9, abs=1e-9)
