"""Clocks: time is injected wherever policy or engines need it.

The live center passes :class:`SystemClock`; the simulator and tests pass :class:`FakeClock`.
"""

from __future__ import annotations

import time
from typing import Protocol

__all__ = ["Clock", "FakeClock", "SystemClock"]


class Clock(Protocol):
    """Something that tells the time in seconds (monotonic within one run)."""

    def now_s(self) -> float: ...


class SystemClock:
    """Wall-clock monotonic time (the live center)."""

    def now_s(self) -> float:
        return time.monotonic()


class FakeClock:
    """A clock that only moves when told to (tests, simulation)."""

    def __init__(self, start_s: float = 0.0) -> None:
        self._now_s = start_s

    def now_s(self) -> float:
        return self._now_s

    def advance(self, delta_s: float) -> None:
        if delta_s < 0:
            raise ValueError("a clock never goes back")
        self._now_s += delta_s
