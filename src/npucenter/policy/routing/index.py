"""What a router sees: a snapshot of the replicas, plain or kept incrementally (one replica at a time).

A caller that knows which replica changed (the simulator after each replica event, a gateway
after each request it sends or sees finish) keeps a :class:`ReplicaIndex` instead of rebuilding a
snapshot per request, and passes it as ``RoutingSnapshot.index``. It gives each model's healthy
candidates in snapshot order and ordered views: the least element of a view is the replica a
policy's scan would pick, ties included, in O(log n) instead of O(n). Pure; no clock.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

from sortedcontainers import SortedList

from npucenter.policy.routing.types import ReplicaState, RouteRequest

__all__ = ["LeastView", "ReplicaIndex", "RoutingSnapshot", "candidates"]

#: (key, position) entries are compared as tuples; a key is a tuple of numbers or one number.
Key = Any
#: where a healthy replica goes in a view: (its group, its key)
PlaceFn = Callable[[ReplicaState], tuple[Hashable, Key]]


class LeastView:
    """Healthy replicas sorted by ``(key, position)`` within each group (``place(state)``).

    NOTE(routing): a scan that keeps the first replica with the strictly smallest key picks
    the least ``(key, position)``; this view holds those pairs in one sorted list per group and
    replaces a replica's pair whenever its state changes. Keys must be totally ordered (no NaN).
    """

    def __init__(self, place: PlaceFn, states: Sequence[ReplicaState]) -> None:
        self._place = place
        self._lists: dict[Hashable, SortedList] = {}
        self._entry: list[tuple[Hashable, tuple[Any, int]] | None] = [None] * len(states)
        for pos, state in enumerate(states):
            self.update(pos, state)

    def update(self, pos: int, state: ReplicaState) -> None:
        """Replace replica ``pos``'s entry (an unhealthy replica leaves the view)."""
        old = self._entry[pos]
        if not state.healthy:
            if old is not None:
                self._lists[old[0]].remove(old[1])
                self._entry[pos] = None
            return
        group, key = self._place(state)
        item = (key, pos)
        if old is not None:
            if old[0] == group and old[1] == item:
                return  # same place: most updates of a busy replica move no key
            self._lists[old[0]].remove(old[1])
        items = self._lists.get(group)
        if items is None:
            items = self._lists[group] = SortedList()
        items.add(item)
        self._entry[pos] = (group, item)

    def groups(self) -> list[Hashable]:
        """The groups with at least one healthy replica, in no particular order."""
        return [g for g, items in self._lists.items() if items]

    def least(self, group: Hashable) -> tuple[Any, int] | None:
        """The least ``(key, position)`` of ``group``, or None when it has no healthy replica."""
        items = self._lists.get(group)
        if not items:
            return None
        key, pos = items[0]
        return key, pos

    def least_shifted(self, group: Hashable, shift: float) -> tuple[float, int] | None:
        """The least ``(key + shift, position)`` of ``group`` (float keys), rounding included.

        Adding ``shift`` keeps the order of keys but may make neighbouring keys equal, so the
        pairs whose shifted key equals the least one are all looked at (one per distinct key).
        """
        return self.least_scored(group, lambda key: key + shift)

    def least_scored(
        self, group: Hashable, score: Callable[[Any], float]
    ) -> tuple[float, int] | None:
        """The least ``(score(key), position)`` of ``group`` for a ``score`` that never
        decreases as the key grows (rounding may make the scores of neighbouring keys equal:
        those are all looked at, one per distinct key)."""
        items = self._lists.get(group)
        if not items:
            return None
        key, best_pos = items[0]
        best = score(key)
        n = len(items)
        i = items.bisect_right((key, n + len(self._entry)))
        while i < n:
            key, pos = items[i]
            if score(key) != best:
                break
            best_pos = min(best_pos, pos)  # the first pair of a distinct key has its least position
            i = items.bisect_right((key, n + len(self._entry)))
        return best, best_pos


class ReplicaIndex:
    """Replica states by position (the snapshot's order), kept current one replica at a time.

    ``states`` is the snapshot's ``replicas``: read it, never write it; call :meth:`update`.
    Views are made on first use by the policy that needs them and kept current from then on.
    """

    def __init__(self, states: Sequence[ReplicaState]) -> None:
        self.states: list[ReplicaState] = list(states)
        self._views: dict[str, LeastView] = {}
        self._members: dict[str, list[int]] | None = None  # model -> healthy positions

    def __len__(self) -> int:
        return len(self.states)

    def update(self, pos: int, state: ReplicaState) -> None:
        """Replica ``pos`` now has ``state``."""
        old = self.states[pos]
        self.states[pos] = state
        if old.healthy != state.healthy or old.model_id != state.model_id:
            self._members = None
        for view in self._views.values():
            view.update(pos, state)

    def members(self, model_id: str) -> list[int]:
        """Positions of the model's healthy replicas, in snapshot order (do not modify)."""
        if self._members is None:
            members: dict[str, list[int]] = {}
            for pos, state in enumerate(self.states):
                if state.healthy:
                    members.setdefault(state.model_id, []).append(pos)
            self._members = members
        return self._members.get(model_id, [])

    def view(self, name: str, place: PlaceFn) -> LeastView:
        """The view registered as ``name``, made from the current states on first use.

        One name must always come with the same ``place`` (a policy's own name).
        """
        view = self._views.get(name)
        if view is None:
            view = self._views[name] = LeastView(place, self.states)
        return view


@dataclass(frozen=True, slots=True, kw_only=True)
class RoutingSnapshot:
    """Every replica a router may choose from, as of ``now_s``.

    ``index``, when given, is kept by the caller over exactly ``replicas`` (``index.states``);
    policies that can use it answer in O(log n) what their scan of ``replicas`` would answer.
    """

    now_s: float
    replicas: Sequence[ReplicaState]  # read during the call only; a caller may reuse it
    index: ReplicaIndex | None = None


def candidates(snapshot: RoutingSnapshot, request: RouteRequest) -> list[ReplicaState]:
    """The healthy replicas of the request's model, in snapshot order.

    Replicas in ``request.exclude`` are left out unless every candidate is excluded (a retry may
    then go back to one that failed it).
    """
    model_id = request.model_id
    out = [r for r in snapshot.replicas if r.healthy and r.model_id == model_id]
    if request.exclude and out:
        kept = [r for r in out if r.replica_id not in request.exclude]
        return kept or out
    return out
