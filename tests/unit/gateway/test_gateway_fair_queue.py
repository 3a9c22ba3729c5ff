"""The gateway queue: bounded, priority first, fair across tenants."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from npucenter.errors import CapacityUnavailableError
from npucenter.gateway.fair_queue import FairQueue


def test_higher_priority_goes_first() -> None:
    q: FairQueue[str] = FairQueue(10)
    q.push("low", tenant="a", priority=0)
    q.push("high", tenant="b", priority=5)
    assert q.pop() == "high"
    assert q.pop() == "low"
    assert q.pop() is None


def test_a_busy_tenant_does_not_starve_another() -> None:
    q: FairQueue[str] = FairQueue(100)
    for i in range(10):
        q.push(f"a{i}", tenant="a", cost=10)
    q.push("b0", tenant="b", cost=10)
    first_two = {q.pop(), q.pop()}
    assert "b0" in first_two


def test_weights_share_service() -> None:
    q: FairQueue[str] = FairQueue(100)
    for i in range(30):
        q.push(f"a{i}", tenant="a", cost=1, weight=2.0)
        q.push(f"b{i}", tenant="b", cost=1, weight=1.0)
    served = [q.pop() for _ in range(30)]
    num_a = sum(1 for s in served if s and s.startswith("a"))
    assert 18 <= num_a <= 22  # about 2:1


def test_full_queue_is_retryable_capacity_error() -> None:
    q: FairQueue[int] = FairQueue(1)
    q.push(1, tenant="a")
    with pytest.raises(CapacityUnavailableError) as info:
        q.push(2, tenant="a")
    assert info.value.retryable


def test_remove_takes_an_item_out() -> None:
    q: FairQueue[object] = FairQueue(5)
    a, b = object(), object()
    q.push(a, tenant="x")
    q.push(b, tenant="y")
    assert q.remove(a) and not q.remove(a)
    assert len(q) == 1 and q.pop() is b


def test_idle_tenant_banks_no_credit() -> None:
    q: FairQueue[str] = FairQueue(100)
    for i in range(20):  # a is served alone for a while
        q.push(f"a{i}", tenant="a")
        assert q.pop() == f"a{i}"
    for i in range(4):
        q.push(f"a{20 + i}", tenant="a")
    for i in range(4):
        q.push(f"b{i}", tenant="b")
    served = [q.pop() for _ in range(4)]
    assert sum(1 for s in served if s and s.startswith("b")) <= 3  # b does not get all four


@given(st.lists(st.tuples(st.sampled_from("abc"), st.integers(0, 2)), max_size=40))
def test_every_item_comes_out_exactly_once(items: list[tuple[str, int]]) -> None:
    q: FairQueue[int] = FairQueue(100)
    for i, (tenant, prio) in enumerate(items):
        q.push(i, tenant=tenant, priority=prio)
    out = []
    while (x := q.pop()) is not None:
        out.append(x)
    assert sorted(out) == list(range(len(items)))
    prios = [items[i][1] for i in out]
    assert prios == sorted(prios, reverse=True)
