"""What a router sees: a snapshot of the replicas, plain or kept incrementally (one replica at a time).

A caller that knows which replica changed (the simulator after each replica event, a gateway
after each request it sends or sees finish) keeps a :class:`ReplicaIndex` instead of rebuilding a
snapshot per request, and passes it as ``RoutingSnapshot.index``. It gives each model's healthy
candidates in snapshot order and views a policy answers from with the replica its scan would
pick, ties included: :class:`MinView` (keys in a float column per group, kept by one write per
update; the least is one argmin in C), :class:`ColumnView` (several numbers per replica, for
scores no ordering holds) and :class:`LeastView` (lazy heaps, O(log n), any comparable key).
The policies use the first two: per update a few float writes whatever the pool's size, per
request a vector pass (0.4 us at 1,200 replicas) instead of Python per replica. Pure; no clock.
"""

from __future__ import annotations

import bisect
import heapq
import math
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from npucenter.policy.routing.types import ReplicaState, RouteRequest

__all__ = ["ColumnView", "LeastView", "MinView", "ReplicaIndex", "RoutingSnapshot", "candidates"]

#: keys are compared with < and ==: a tuple of numbers or one number (no NaN).
Key = Any
#: where a healthy replica goes in a view: (its group, its key)
PlaceFn = Callable[[ReplicaState], tuple[Hashable, Key]]
#: a healthy replica's group and its numbers in a column view (always the same count)
RowFn = Callable[[ReplicaState], tuple[Hashable, tuple[float, ...]]]


class LeastView:
    """Healthy replicas ordered by ``(key, position)`` within each group (``place(state)``).

    NOTE(routing): a scan that keeps the first replica with the strictly smallest key picks the
    least ``(key, position)``. Per group the view keeps a heap of the distinct keys in use and,
    per key, a heap of the positions holding it. An update only pushes (a replica that moves
    leaves a stale entry behind, recognised by its stamp and dropped when it surfaces, and heaps
    are rebuilt when stale entries outnumber live ones), so updates and queries cost O(log n).
    """

    def __init__(
        self, place: PlaceFn, states: Sequence[ReplicaState], *, scored: bool = True
    ) -> None:
        self._place = place
        self._scored = scored  # False: least() only, one heap of (key, position) per group
        self._where: list[tuple[Hashable, Key] | None] = [None] * len(states)
        self._stamp = [0] * len(states)  # bumped whenever a replica moves
        self._groups: dict[Hashable, _Group | _Entries] = {}
        self._group_keys: tuple[Hashable, ...] = ()
        for pos, state in enumerate(states):
            self.update(pos, state)

    def update(self, pos: int, state: ReplicaState) -> None:
        """Replica ``pos`` now has ``state`` (an unhealthy replica leaves the view)."""
        new = self._place(state) if state.healthy else None
        old = self._where[pos]
        if new == old:
            return  # most updates of a busy replica move no key
        if old is not None:
            self._groups[old[0]].leave(old[1])
        stamp = self._stamp[pos] + 1
        self._stamp[pos] = stamp
        self._where[pos] = new
        if new is not None:
            group = self._groups.get(new[0])
            if group is None:
                group = _Group(self._stamp) if self._scored else _Entries(self._stamp)
                self._groups[new[0]] = group
                self._group_keys = tuple(self._groups)
            group.join(new[1], pos, stamp)

    def groups(self) -> tuple[Hashable, ...]:
        """Every group a replica was ever placed in (some may be empty now)."""
        return self._group_keys

    def least(self, group: Hashable) -> tuple[Key, int] | None:
        """The least ``(key, position)`` of ``group``, or None when it has no healthy replica."""
        g = self._groups.get(group)
        if g is None:
            return None
        if isinstance(g, _Entries):
            return g.least()
        key = g.least_key()
        return None if key is None else (key, g.least_position(key))

    def least_shifted(self, group: Hashable, shift: float) -> tuple[float, int] | None:
        """The least ``(key + shift, position)`` of ``group`` (float keys), rounding included.

        Adding ``shift`` keeps the order of keys but may make neighbouring keys equal: every
        distinct key whose shifted value equals the least one is looked at. They sit at the top
        of the heap of keys, so a walk from its root that stops below a larger value finds them.
        """
        return self.least_scored(group, lambda key: key + shift)

    def least_scored(
        self, group: Hashable, score: Callable[[Any], float]
    ) -> tuple[float, int] | None:
        """The least ``(score(key), position)`` of ``group`` for a ``score`` that never
        decreases as the key grows (rounding may make the scores of neighbouring keys equal:
        those are all looked at, one per distinct key, found at the top of the heap of keys by
        a walk from its root that stops below a larger score)."""
        g = self._groups.get(group)
        if g is None:
            return None
        if isinstance(g, _Entries):
            raise TypeError("least_scored needs a view made with scored=True")
        first = g.least_key()
        if first is None:
            return None
        best = score(first)
        best_pos = g.least_position(first)
        keys, count = g.keys, g.count
        n = len(keys)
        if (n < 2 or score(keys[1]) != best) and (n < 3 or score(keys[2]) != best):
            return best, best_pos  # the usual case: no other key ties once scored
        stack = [1, 2]
        while stack:
            i = stack.pop()
            if i >= len(keys):
                continue
            key = keys[i]
            if score(key) != best:
                continue  # this key and all below it in the heap score higher
            if key != first and key in count:
                best_pos = min(best_pos, g.least_position(key))
            stack.append(2 * i + 1)
            stack.append(2 * i + 2)
        return best, best_pos


def _float_cells(column: npt.NDArray[np.float64]) -> Any:
    """A float64 column's buffer, its items written as Python floats (~20 ns, numpy's ~80 ns)."""
    return memoryview(column)  # type: ignore[arg-type]  # an ndarray is a buffer


class _MinGroup:
    """One group of a :class:`MinView`: a column of keys, one slot per replica that joined it."""

    __slots__ = ("cells", "column", "count", "ordered", "positions", "slot_of")

    def __init__(self) -> None:
        self.column: npt.NDArray[np.float64] = np.full(8, math.inf)  # slot -> key (+inf: out)
        self.cells: Any = _float_cells(self.column)
        self.positions: list[int] = []  # slot -> position
        self.slot_of: dict[int, int] = {}  # position -> slot (kept when it leaves: it may return)
        self.count = 0  # replicas in the group now
        self.ordered = True  # slots in ascending position order (argmin's first = least position)

    def slot(self, pos: int) -> int:
        """``pos``'s slot, given one at the end (the column grown by doubling) on first use."""
        slot = self.slot_of.get(pos)
        if slot is None:
            slot = len(self.positions)
            if self.positions and pos < self.positions[-1]:
                self.ordered = False
            self.positions.append(pos)
            self.slot_of[pos] = slot
            if slot == len(self.column):
                column = np.full(2 * slot, math.inf)
                column[:slot] = self.column
                self.column, self.cells = column, _float_cells(column)
        return slot


class MinView:
    """Healthy replicas' keys (real numbers), a float column per group: the least is an argmin.

    NOTE(routing): a scan that keeps the first replica with the strictly smallest key picks the
    least ``(key, position)``. Each group (``place(state)``'s first part) keeps its replicas'
    keys in a float64 column, one slot per replica in the order they joined (the pool's order
    when the view is made), +inf in the slot of one that left (unhealthy, or another group).
    An update writes one float (no heap, no allocation) and a query is one ``argmin`` in C
    over the group (0.4 us at 1,200 replicas, 0.9 us at 10,000 here), whose first least slot
    is the least position while slots are in position order (else equal keys are compared by
    position). Memory is one slot per replica and group it was ever in. A key the column
    cannot tell from "absent" (+inf) is kept aside and queries answer by a scan in Python while
    any is present (same results, only slower). Keys must not be NaN (no scan orders them
    either); an int key is exact below 2**53.
    """

    def __init__(self, place: PlaceFn, states: Sequence[ReplicaState]) -> None:
        self._place = place
        n = len(states)
        self._where: list[Hashable | None] = [None] * n  # each position's group
        self._in: list[_MinGroup | None] = [None] * n  # ... and that group's column
        self._slot = [-1] * n  # ... and its slot there
        self._groups: dict[Hashable, _MinGroup] = {}
        self._odd: dict[int, Key] = {}  # position -> its key, where the column holds +inf
        self._group_keys: tuple[Hashable, ...] = ()
        for pos, state in enumerate(states):
            self.update(pos, state)

    def update(self, pos: int, state: ReplicaState) -> None:
        """Replica ``pos`` now has ``state`` (an unhealthy replica leaves the view)."""
        if state.healthy:
            group, key = self._place(state)
        else:
            group, key = None, math.inf
        if group != self._where[pos]:
            self._move(pos, group)
            if group is None:
                return
        elif group is None:
            return
        g = self._in[pos]
        assert g is not None
        if key < math.inf:
            g.cells[self._slot[pos]] = key
            if self._odd and pos in self._odd:
                del self._odd[pos]
        else:  # +inf (or a NaN): the column says "absent", the key waits aside
            g.cells[self._slot[pos]] = math.inf
            self._odd[pos] = key

    def _move(self, pos: int, new: Hashable | None) -> None:
        old = self._in[pos]
        if old is not None:
            old.cells[self._slot[pos]] = math.inf
            old.count -= 1
            self._odd.pop(pos, None)
        self._where[pos] = new
        if new is None:
            self._in[pos], self._slot[pos] = None, -1
            return
        g = self._groups.get(new)
        if g is None:
            g = self._groups[new] = _MinGroup()
            self._group_keys = tuple(self._groups)
        g.count += 1
        self._in[pos], self._slot[pos] = g, g.slot(pos)

    @property
    def num_odd(self) -> int:
        """Replicas whose key is +inf or NaN (queries scan while any is present)."""
        return len(self._odd)

    def groups(self) -> tuple[Hashable, ...]:
        """Every group a replica was ever placed in (some may be empty now)."""
        return self._group_keys

    def least(self, group: Hashable) -> tuple[float, int] | None:
        """The least ``(key, position)`` of ``group`` (key as a float), or None when it has no
        healthy replica."""
        return self._least(group, None)

    def least_shifted(self, group: Hashable, shift: float) -> tuple[float, int] | None:
        """The least ``(key + shift, position)`` of ``group``, rounding included (the sums are
        the same IEEE additions a scan makes, so keys that the shift makes equal tie)."""
        return self._least(group, lambda keys: keys + shift)

    def least_scored(
        self, group: Hashable, score: Callable[[Any], Any]
    ) -> tuple[float, int] | None:
        """The least ``(score(key), position)`` of ``group``. ``score`` is applied to the
        group's column (a numpy array) and must act element by element with the float
        operations it does on one key, and map +inf to +inf (any non-decreasing arithmetic)."""
        return self._least(group, score)

    def _least(
        self, group: Hashable, score: Callable[[Any], Any] | None
    ) -> tuple[float, int] | None:
        g = self._groups.get(group)
        if g is None or not g.count:
            return None
        if self._odd:
            return self._least_scan(group, g, score)
        column = g.column[: len(g.positions)]
        values = column if score is None else score(column)
        slot = int(values.argmin())
        value = float(values[slot])
        if value == math.inf or value != value:  # an overflowed score, or absent: look closer
            return self._least_scan(group, g, score)
        if g.ordered:
            return value, g.positions[slot]
        positions = g.positions  # slots out of position order: the least position among ties
        return value, min(positions[int(s)] for s in np.flatnonzero(values == value))

    def _least_scan(
        self, group: Hashable, g: _MinGroup, score: Callable[[Any], Any] | None
    ) -> tuple[float, int] | None:
        """The same answer by a scan of the group in Python (keys kept aside are in play)."""
        odd, where, best = self._odd, self._where, None
        for slot, pos in enumerate(g.positions):
            if where[pos] != group or self._slot[pos] != slot:
                continue
            key = odd[pos] if pos in odd else float(g.column[slot])
            value = float(key if score is None else score(key))
            if best is None or (value, pos) < best:
                best = (value, pos)
        return best


class ColumnView:
    """Healthy replicas' numbers as numpy columns, per group: a scan done in C, not in Python.

    NOTE(routing): for a policy whose choice no single ordering holds (a score that combines
    several numbers with a per-request weight, such as prefix affinity's load relative to the
    busiest candidate, or the larger of two pressures), the view keeps each replica's numbers
    in one row of a float array, written on each update (``row(state)``, the very floats the
    policy's scan computes). A request then costs a few vector operations over the group's
    rows, evaluated in the scan's order of operations (IEEE doubles, no fused operations), so
    the argmin/argmax is the scan's choice, ties (first in snapshot order) included. A replica
    that joins or leaves a group (its health or model changed) flips one flag in the group's
    mask; the group's member positions are rebuilt from it (one ``flatnonzero`` in C) on its
    next query, so a flip costs no Python per replica.
    """

    def __init__(self, row: RowFn, states: Sequence[ReplicaState], width: int) -> None:
        self._row = row
        n = len(states)
        self.values: npt.NDArray[np.float64] = np.zeros((width, n))  # one row per number
        # each row's buffer, written one float at a time (numpy's item assignment costs more)
        self._cells = [_float_cells(self.values[k]) for k in range(width)]
        self._group: list[Hashable | None] = [None] * n
        # per group, which positions are in it: a flag per replica, written on a move
        self._masks: dict[Hashable, npt.NDArray[np.bool_]] = {}
        self._members: dict[Hashable, tuple[npt.NDArray[np.intp], npt.NDArray[np.float64] | None]]
        self._members = {}
        self._dirty: set[Hashable] = set()
        for pos, state in enumerate(states):
            self.update(pos, state)

    def update(self, pos: int, state: ReplicaState) -> None:
        """Replica ``pos`` now has ``state`` (an unhealthy replica leaves its group)."""
        if state.healthy:
            group, numbers = self._row(state)
            if len(numbers) == 3:  # the policies' width, without a loop
                c0, c1, c2 = self._cells
                c0[pos], c1[pos], c2[pos] = numbers
            else:
                for cells, number in zip(self._cells, numbers, strict=True):
                    cells[pos] = number
        else:
            group = None
        old = self._group[pos]
        if group != old:
            self._group[pos] = group
            if old is not None:
                self._masks[old][pos] = False
                self._dirty.add(old)
            if group is not None:
                mask = self._masks.get(group)
                if mask is None:
                    mask = self._masks[group] = np.zeros(len(self._group), dtype=np.bool_)
                mask[pos] = True
                self._dirty.add(group)

    def members(self, group: Hashable) -> npt.NDArray[np.intp]:
        """Positions of the group's healthy replicas, ascending (snapshot order)."""
        return self._member_entry(group)[0]

    def columns(self, group: Hashable) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.float64]]:
        """(positions, their numbers: one row per number, a column per member) of ``group``.

        When the group holds every position (one model per pool, all healthy) the numbers are
        the view's own array, not a copy: read them, never write them.
        """
        members, everyone = self._member_entry(group)
        if everyone is not None:
            return members, self.values
        # take() copies the same floats as values[:, members], several times faster (C loop)
        return members, self.values.take(members, axis=1)

    def _member_entry(
        self, group: Hashable
    ) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.float64] | None]:
        if self._dirty:
            for g in self._dirty:
                self._members.pop(g, None)
            self._dirty.clear()
        entry = self._members.get(group)
        if entry is None:
            # only a group a replica joined or left since its last query is rebuilt, in C
            mask = self._masks.get(group)
            members = np.empty(0, np.intp) if mask is None else np.flatnonzero(mask)
            everyone = self.values if len(members) == len(self._group) else None
            entry = self._members[group] = (members, everyone)
        return entry


class _Entries:
    """One group of a view that only answers least(): a heap of (key, position, stamp)."""

    __slots__ = ("heap", "live", "stamp")

    def __init__(self, stamp: list[int]) -> None:
        self.stamp = stamp  # the view's: an entry is live while its stamp is the position's
        self.heap: list[tuple[Key, int, int]] = []
        self.live = 0

    def join(self, key: Key, pos: int, stamp: int) -> None:
        self.live += 1
        heapq.heappush(self.heap, (key, pos, stamp))
        if len(self.heap) > 2 * self.live + 64:
            live = [e for e in self.heap if self.stamp[e[1]] == e[2]]
            heapq.heapify(live)
            self.heap = live

    def leave(self, key: Key) -> None:
        self.live -= 1

    def least(self) -> tuple[Key, int] | None:
        heap, stamp = self.heap, self.stamp
        while heap and stamp[heap[0][1]] != heap[0][2]:
            heapq.heappop(heap)
        return (heap[0][0], heap[0][1]) if heap else None


class _Group:
    """One group of a view: a heap of distinct keys and, per key, a heap of (position, stamp)."""

    __slots__ = ("count", "keys", "members", "stamp")

    def __init__(self, stamp: list[int]) -> None:
        self.stamp = stamp  # the view's: an entry (position, stamp) is live while they agree
        self.keys: list[Key] = []  # heap; a key no replica holds (not in count) is stale
        self.members: dict[Key, list[tuple[int, int]]] = {}
        self.count: dict[Key, int] = {}  # key -> replicas holding it now

    def join(self, key: Key, pos: int, stamp: int) -> None:
        held = self.count.get(key, 0) + 1
        self.count[key] = held
        if held == 1:
            bucket = self.members[key] = [(pos, stamp)]
            heapq.heappush(self.keys, key)
            if len(self.keys) > 2 * len(self.count) + 16:
                self.keys = list(self.count)
                heapq.heapify(self.keys)
            return
        bucket = self.members[key]
        heapq.heappush(bucket, (pos, stamp))
        if len(bucket) > 2 * held + 8:
            live = [(p, s) for p, s in bucket if self.stamp[p] == s]
            heapq.heapify(live)
            self.members[key] = live

    def leave(self, key: Key) -> None:
        held = self.count[key] - 1
        if held:
            self.count[key] = held
        else:
            del self.count[key]
            del self.members[key]

    def least_key(self) -> Key | None:
        keys, count = self.keys, self.count
        while keys and keys[0] not in count:
            heapq.heappop(keys)
        return keys[0] if keys else None

    def least_position(self, key: Key) -> int:
        bucket, stamp = self.members[key], self.stamp
        while stamp[bucket[0][0]] != bucket[0][1]:
            heapq.heappop(bucket)
        return bucket[0][0]


class ReplicaIndex:
    """Replica states by position (the snapshot's order), kept current one replica at a time.

    ``states`` is the snapshot's ``replicas``: read it, never write it; call :meth:`update`.
    Views are made on first use by the policy that needs them and kept current from then on.
    """

    def __init__(self, states: Sequence[ReplicaState]) -> None:
        self.states: list[ReplicaState] = list(states)
        self._views: dict[str, LeastView] = {}
        self._mins: dict[str, MinView] = {}
        self._columns: dict[str, ColumnView] = {}
        self._members: dict[str, list[int]] | None = None  # model -> healthy positions
        self._position: dict[str, int] | None = None  # replica id -> position

    def __len__(self) -> int:
        return len(self.states)

    def update(self, pos: int, state: ReplicaState) -> None:
        """Replica ``pos`` now has ``state``."""
        old = self.states[pos]
        self.states[pos] = state
        members = self._members
        if members is not None and (old.healthy != state.healthy or old.model_id != state.model_id):
            if old.healthy:  # leaves its model's list (ascending: found by bisection)
                held = members[old.model_id]
                del held[bisect.bisect_left(held, pos)]
            if state.healthy:
                bisect.insort(members.setdefault(state.model_id, []), pos)
        if old.replica_id != state.replica_id:
            self._position = None
        for view in self._views.values():
            view.update(pos, state)
        for least in self._mins.values():
            least.update(pos, state)
        for columns in self._columns.values():
            columns.update(pos, state)

    def position(self, replica_id: str) -> int | None:
        """The position of the replica with this id (None: not in the index)."""
        if self._position is None:
            self._position = {s.replica_id: p for p, s in enumerate(self.states)}
        return self._position.get(replica_id)

    def members(self, model_id: str) -> list[int]:
        """Positions of the model's healthy replicas, in snapshot order (do not modify; the
        list is kept current in place by :meth:`update`, so read it before the next update).

        Made on first use; from then on a replica whose health or model changes is removed
        from and inserted into the ascending lists by bisection (no Python per replica).
        """
        if self._members is None:
            members: dict[str, list[int]] = {}
            for pos, state in enumerate(self.states):
                if state.healthy:
                    members.setdefault(state.model_id, []).append(pos)
            self._members = members
        return self._members.get(model_id, [])

    def view(self, name: str, place: PlaceFn, *, scored: bool = True) -> LeastView:
        """The view registered as ``name``, made from the current states on first use.

        One name must always come with the same ``place`` (a policy's own name). A view that
        is only asked for :meth:`LeastView.least` may say ``scored=False`` (cheaper updates).
        """
        view = self._views.get(name)
        if view is None:
            view = self._views[name] = LeastView(place, self.states, scored=scored)
        return view

    def min_view(self, name: str, place: PlaceFn) -> MinView:
        """The :class:`MinView` registered as ``name`` (real-number keys), made from the
        current states on first use; one name always comes with the same ``place``."""
        view = self._mins.get(name)
        if view is None:
            view = self._mins[name] = MinView(place, self.states)
        return view

    def columns(self, name: str, row: RowFn, width: int) -> ColumnView:
        """The column view registered as ``name`` (``width`` numbers per replica), made from
        the current states on first use; one name always comes with the same ``row``."""
        columns = self._columns.get(name)
        if columns is None:
            columns = self._columns[name] = ColumnView(row, self.states, width)
        return columns


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
