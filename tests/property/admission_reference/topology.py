"""Where a gang fits: free cards per server and interconnect group, and best-fit search per device type.

Working state of one cycle only (built from the snapshot's fleet, never shared between cycles).
A tensor-parallel group is placed inside one interconnect group; whole servers stay free for large
gangs because the server with the fewest free cards that still fits is chosen, lowest id first.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from npucenter.policy.admission.types import Server

__all__ = ["ServerState", "TypeState"]


class ServerState:
    """Free cards of one server, grouped by interconnect."""

    __slots__ = ("free", "free_in_group", "free_total", "group_of", "groups", "server")

    def __init__(self, server: Server) -> None:
        self.server = server
        self.group_of = [server.group_of(i) for i in range(server.num_cards)]
        self.free = [False] * server.num_cards
        self.groups: dict[int, list[int]] = {}
        for index in server.usable_card_indices():
            self.free[index] = True
            self.groups.setdefault(self.group_of[index], []).append(index)
        self.free_in_group = {g: len(cards) for g, cards in self.groups.items()}
        self.free_total = sum(self.free_in_group.values())

    def fits(self, num_cards: int, tp_size: int) -> bool:
        if self.free_total < num_cards:
            return False
        if tp_size == 1:
            return True
        return sum(n // tp_size for n in self.free_in_group.values()) >= num_cards // tp_size

    def pick(self, num_cards: int, tp_size: int) -> tuple[int, ...]:
        """Lowest free cards, each TP group in the tightest interconnect group that holds it."""
        counts = dict(self.free_in_group)
        taken: set[int] = set()
        chosen: list[int] = []
        for _ in range(num_cards // tp_size):
            fitting = [(n, g) for g, n in counts.items() if n >= tp_size]
            _, group = min(fitting)
            picked = [i for i in self.groups[group] if self.free[i] and i not in taken][:tp_size]
            taken.update(picked)
            chosen.extend(picked)
            counts[group] -= tp_size
        return tuple(chosen)

    def take(self, cards: Iterable[int]) -> None:
        for i in cards:
            self.free[i] = False
            self.free_in_group[self.group_of[i]] -= 1
            self.free_total -= 1

    def release(self, cards: Iterable[int]) -> None:
        for i in cards:
            self.free[i] = True
            self.free_in_group[self.group_of[i]] += 1
            self.free_total += 1


class TypeState:
    """All servers of one device type, bucketed by free cards for best-fit search."""

    __slots__ = ("buckets", "capacity", "never_fits", "no_fit", "servers", "total_free")

    def __init__(self, servers: list[ServerState]) -> None:
        self.servers = servers  # sorted by server id; the index is the tie-breaker
        top = max((s.server.num_cards for s in servers), default=0)
        self.buckets: list[set[int]] = [set() for _ in range(top + 1)]
        for i, s in enumerate(servers):
            self.buckets[s.free_total].add(i)
        self.capacity = sum(s.free_total for s in servers)
        self.total_free = self.capacity
        # (num_cards, tp_size) known not to fit now; valid until cards are released
        self.no_fit: set[tuple[int, int]] = set()
        self.never_fits: dict[tuple[int, int], bool] = {}

    def could_ever_fit(self, num_cards: int, tp_size: int) -> bool:
        key = (num_cards, tp_size)
        if key not in self.never_fits:
            self.never_fits[key] = not any(
                sum(len(c) // tp_size for c in s.groups.values()) * tp_size >= num_cards
                for s in self.servers
            )
        return not self.never_fits[key]

    def find(self, num_cards: int, tp_size: int) -> int | None:
        """The best-fit server (fewest free cards that still fit), lowest id first."""
        key = (num_cards, tp_size)
        if key in self.no_fit or self.total_free < num_cards:
            return None
        for free in range(num_cards, len(self.buckets)):
            bucket = self.buckets[free]
            if not bucket:
                continue
            if tp_size == 1:
                return min(bucket)
            for i in sorted(bucket):
                if self.servers[i].fits(num_cards, tp_size):
                    return i
        self.no_fit.add(key)
        return None

    def take(self, index: int, cards: Sequence[int]) -> None:
        s = self.servers[index]
        self.buckets[s.free_total].discard(index)
        s.take(cards)
        self.buckets[s.free_total].add(index)
        self.total_free -= len(cards)

    def release(self, index: int, cards: Sequence[int]) -> None:
        s = self.servers[index]
        self.buckets[s.free_total].discard(index)
        s.release(cards)
        self.buckets[s.free_total].add(index)
        self.total_free += len(cards)
        self.no_fit.clear()
