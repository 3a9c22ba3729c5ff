"""Share a replica's device time and energy among the requests it runs at once.

NOTE(gateway): a replica of ``tp`` cards running ``n`` requests for ``dt`` seconds spends
``tp * dt`` device-seconds and ``P * dt`` joules (``P`` its power, W); each running request is
charged ``1/n`` of both. Keeping the running integrals ``S(t) = ∫ tp/n dt`` and
``E(t) = ∫ P/n dt`` makes each start and finish O(1): a request is charged ``S(end) - S(start)``.
Idle time is the center's, not a tenant's. Power is piecewise constant between updates.
"""

from __future__ import annotations

from dataclasses import dataclass

from npucenter.clock import Clock
from npucenter.errors import InvalidConfigError

__all__ = ["ReplicaMeter", "Share"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Share:
    """What one request used of its replica."""

    device_s: float
    energy_j: float


class ReplicaMeter:
    """Running device-time and energy integrals of one replica (not thread-safe; one event loop).

    ``busy_power_w`` is the replica's power while it runs requests until a measurement arrives
    through :meth:`set_power_w` (telemetry, or the virtual engine's modelled power).
    """

    __slots__ = ("_active", "_clock", "_e", "_last_s", "_power_w", "_s", "tp")

    def __init__(self, *, tp: int, busy_power_w: float, clock: Clock) -> None:
        if tp < 1:
            raise InvalidConfigError("tp", tp, "must be >= 1")
        if busy_power_w < 0:
            raise InvalidConfigError("busy_power_w", busy_power_w, "must be >= 0")
        self.tp = tp
        self._clock = clock
        self._power_w = busy_power_w
        self._active = 0
        self._s = 0.0  # ∫ tp / n dt
        self._e = 0.0  # ∫ P / n dt
        self._last_s = clock.now_s()

    @property
    def num_active(self) -> int:
        """Requests running on the replica now."""
        return self._active

    @property
    def power_w(self) -> float:
        """The replica's power used for attribution now (W)."""
        return self._power_w

    def set_power_w(self, power_w: float) -> None:
        """A new power reading for the replica (applies from now on)."""
        self._advance()
        self._power_w = max(0.0, power_w)

    def start(self) -> tuple[float, float]:
        """A request starts; returns its mark to pass to :meth:`finish`."""
        self._advance()
        self._active += 1
        return (self._s, self._e)

    def finish(self, mark: tuple[float, float]) -> Share:
        """A request started at ``mark`` ends; returns its share."""
        self._advance()
        self._active = max(0, self._active - 1)
        return Share(device_s=max(0.0, self._s - mark[0]), energy_j=max(0.0, self._e - mark[1]))

    def _advance(self) -> None:
        now_s = self._clock.now_s()
        dt = now_s - self._last_s
        self._last_s = now_s
        if dt > 0 and self._active:
            self._s += self.tp * dt / self._active
            self._e += self._power_w * dt / self._active
