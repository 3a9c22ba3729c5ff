"""Where requests wait: a bounded queue, by priority, fair across tenants within a priority.

NOTE(gateway): start-time fair queueing. Each tenant has a virtual time ``v``; serving an item
of cost ``c`` advances ``v`` by ``c / weight``. Among tenants of the highest waiting priority the
one with the smallest ``v`` goes first; a tenant that starts waiting again has ``v`` lifted to the
queue's virtual now, so idling banks no credit. Cost is the request's estimated tokens, so a
tenant of long requests gets fewer of them, not more tokens.
"""

from __future__ import annotations

from collections import deque
from typing import Generic, TypeVar

from npucenter.errors import CapacityUnavailableError, InvalidConfigError

__all__ = ["FairQueue"]

T = TypeVar("T")


class FairQueue(Generic[T]):
    """A bounded priority + weighted-fair queue of items (pure; one event loop)."""

    def __init__(self, max_queued: int) -> None:
        if max_queued < 0:
            raise InvalidConfigError("max_queued", max_queued, "must be >= 0")
        self.max_queued = max_queued
        self._queues: dict[
            int, dict[str, deque[tuple[float, T]]]
        ] = {}  # priority -> tenant -> items
        self._vtime: dict[str, float] = {}
        self._weight: dict[str, float] = {}
        self._vnow = 0.0
        self._len = 0

    def __len__(self) -> int:
        return self._len

    def push(
        self, item: T, *, tenant: str, priority: int = 0, cost: float = 1.0, weight: float = 1.0
    ) -> None:
        """Queue ``item``; raises CapacityUnavailableError (retryable) when the queue is full."""
        if self._len >= self.max_queued:
            raise CapacityUnavailableError(
                f"the gateway queue is full ({self.max_queued} requests waiting)",
                hint="retry shortly; the fleet is saturated",
                retry_after_s=1.0,
                queued=self._len,
            )
        if not self._waiting_anywhere(tenant):
            self._vtime[tenant] = max(self._vtime.get(tenant, 0.0), self._vnow)
        by_tenant = self._queues.setdefault(priority, {})
        items = by_tenant.get(tenant)
        if items is None:
            items = by_tenant[tenant] = deque()
        self._weight[tenant] = weight if weight > 0 else 1.0
        items.append((cost, item))
        self._len += 1

    def pop(self) -> T | None:
        """The next item to serve, or None when nothing waits."""
        if not self._len:
            return None
        priority = max(p for p, by_tenant in self._queues.items() if by_tenant)
        by_tenant = self._queues[priority]
        tenant = min(by_tenant, key=lambda t: (self._vtime.get(t, 0.0), t))
        items = by_tenant[tenant]
        cost, item = items.popleft()
        if not items:
            del by_tenant[tenant]
        self._len -= 1
        self._vnow = self._vtime.get(tenant, 0.0)
        self._vtime[tenant] = self._vnow + cost / self._weight.get(tenant, 1.0)
        return item

    def remove(self, item: T) -> bool:
        """Take ``item`` out (its waiter gave up); True when it was queued."""
        for by_tenant in self._queues.values():
            for tenant, items in by_tenant.items():
                for entry in items:
                    if entry[1] is item:
                        items.remove(entry)
                        if not items:
                            del by_tenant[tenant]
                        self._len -= 1
                        return True
        return False

    def _waiting_anywhere(self, tenant: str) -> bool:
        return any(tenant in by_tenant for by_tenant in self._queues.values())
