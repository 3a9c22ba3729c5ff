"""The door guard and the wait estimate decide when to shed."""

from __future__ import annotations

import asyncio
import time

import pytest

from npucenter.clock import FakeClock
from npucenter.errors import CapacityUnavailableError
from npucenter.gateway.shedding import DoorGuard, WaitEstimator


def test_the_wait_estimate_is_the_place_times_the_recent_service_interval() -> None:
    w = WaitEstimator(max_expected_wait_s=3.0)
    assert w.expected_wait_s("m", 10) == 0.0  # no rate yet: never refuses blind
    w.served("m", 0.0)
    w.served("m", 0.5)
    assert w.expected_wait_s("m", 4) == pytest.approx(2.0)
    w.check("m", 4)
    with pytest.raises(CapacityUnavailableError) as err:
        w.check("m", 7)
    assert err.value.details["retry_after_s"] >= 1
    assert w.expected_wait_s("other", 100) == 0.0


def test_slots_freed_in_bursts_give_the_mean_interval_not_the_last_gaps() -> None:
    # 16 slots free together every 40 ms: the mean interval is 2.5 ms, whatever the bursts
    w = WaitEstimator(max_expected_wait_s=0.5)
    w.served("m", 0.0, measure=False)
    for burst in range(1, 41):
        for _ in range(16):
            w.served("m", burst * 0.04)
        # sampled within and at the end of bursts alike: within 20 % of the truth
        assert w.expected_wait_s("m", 200) == pytest.approx(0.5, rel=0.2)
    with pytest.raises(CapacityUnavailableError):
        w.check("m", 250)


def test_a_new_busy_period_does_not_count_the_idle_time_before_it() -> None:
    w = WaitEstimator(max_expected_wait_s=10.0, min_gaps=2)
    w.served("m", 0.0)
    w.served("m", 0.1)
    w.served("m", 0.2)
    w.served("m", 50.0, measure=False)  # the queue was empty for 50 s
    assert w.expected_wait_s("m", 1) == pytest.approx(0.1)
    w.served("m", 50.4)  # one slow gap does not replace what the last busy period measured
    assert w.expected_wait_s("m", 1) == pytest.approx(0.25)  # (0.1 + 0.4) / 2


def test_the_door_refuses_beyond_its_bound_and_counts() -> None:
    door = DoorGuard(max_inflight=2, max_loop_lag_s=0)
    assert door.refusal() is None
    door.inflight = 2
    refused = door.refusal()
    assert isinstance(refused, CapacityUnavailableError) and door.shed == 1
    door.inflight = 1
    assert door.refusal() is None


async def test_a_late_event_loop_sheds_until_it_catches_up() -> None:
    # The probes run on this event loop; their lateness is read from a clock the test moves, so
    # a loaded machine's own hiccups (tens of ms) cannot pass for, or hide, the lateness made here.
    clock = _CountingClock()
    door = DoorGuard(
        max_inflight=100, max_loop_lag_s=0.05, probe_interval_s=0.01, window=3, now_s=clock.now_s
    )
    assert door.refusal() is None  # starts the probe
    await clock.probes(3)  # on time
    clock.advance(0.12)  # one long step: one late probe is no overload
    await clock.probes(1)
    assert door.loop_lag_s == 0.0 and door.refusal() is None
    for _ in range(3):  # late again and again: the CPU is saturated
        clock.advance(0.08)
        await clock.probes(1)
    assert door.loop_lag_s == pytest.approx(0.07)  # 80 ms between probes due 10 ms apart
    assert door.refusal() is not None
    await clock.probes(3)  # on time again
    assert door.refusal() is None
    door.close()


class _CountingClock(FakeClock):
    """A fake clock that counts its reads: the door reads it once per probe (and at the start)."""

    def __init__(self) -> None:
        super().__init__(100.0)
        self.reads = 0

    def now_s(self) -> float:
        self.reads += 1
        return super().now_s()

    async def probes(self, n: int) -> None:
        """Return once ``n`` more probes have fired on the running loop (10 s at most)."""
        until = self.reads + n
        deadline = time.monotonic() + 10
        while self.reads < until:
            assert time.monotonic() < deadline, "the probe stopped firing"
            await asyncio.sleep(0.001)


def test_a_door_used_from_a_new_event_loop_probes_that_loop() -> None:
    door = DoorGuard(max_inflight=100, max_loop_lag_s=0.05, probe_interval_s=0.01)

    async def first() -> None:
        door.refusal()
        door.loop_lag_s = 9.0  # as if the old loop had been late when it closed

    asyncio.run(first())

    async def second() -> bool:
        refused = door.refusal() is not None
        door.close()
        return refused

    assert asyncio.run(second()) is False
