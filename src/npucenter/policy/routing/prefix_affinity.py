"""Approximate prefix-affinity routing, scored together with queue depth and KV pressure.

furiosa-llm and vllm-rbln publish no KV-cache events, so the router keeps its own record of which
prompt prefixes it sent where: chained hashes of the prompt's leading blocks
(``RouteRequest.prefix_hashes``, made by :func:`prefix_block_hashes` in the gateway, or synthetic
in the simulator) in a bounded LRU per replica. Its memory depends only on the sequence of
calls, so the live gateway and the simulator replaying the same requests decide alike.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from npucenter.errors import InvalidConfigError
from npucenter.policy.routing.index import ReplicaIndex, RoutingSnapshot, candidates
from npucenter.policy.routing.registry import ROUTING_POLICIES
from npucenter.policy.routing.types import (
    ReplicaState,
    RouteDecision,
    RouteRequest,
    RoutingContext,
    no_replica,
)

__all__ = [
    "PrefixAffinity",
    "PrefixAffinityWeights",
    "PrefixIndex",
    "adapter_block",
    "prefix_block_hashes",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class PrefixAffinityWeights:
    """How the three scores combine, and when affinity yields to load."""

    prefix: float = 2.0  # times the fraction of the prompt's blocks the replica is thought to hold
    queue: float = 1.0  # times the replica's load relative to the busiest candidate
    kv: float = 1.0  # times the replica's KV-cache use fraction
    kv_high_fraction: float = 0.95  # above this, the replica's cached prefixes do not count
    max_blocks_per_replica: int = 16_384  # remembered block hashes per replica (LRU)

    def __post_init__(self) -> None:
        for name in ("prefix", "queue", "kv"):
            if getattr(self, name) < 0:
                raise InvalidConfigError(name, getattr(self, name), "weights must be >= 0")
        if not 0.0 < self.kv_high_fraction <= 1.0:
            raise InvalidConfigError("kv_high_fraction", self.kv_high_fraction, "must be in (0, 1]")
        if self.max_blocks_per_replica < 1:
            raise InvalidConfigError(
                "max_blocks_per_replica", self.max_blocks_per_replica, "must be >= 1"
            )


def adapter_block(name: str, block_chars: int = 256) -> str:
    """One leading block naming a LoRA adapter: its requests' prefix hashes are its own.

    The gateway puts it before an adapter request's prompt and the twin hashes it alone, so
    prefix affinity keeps an adapter's requests where it is loaded, live and simulated alike.
    """
    return f"\0lora:{name}".ljust(block_chars, "\0")[: max(block_chars, 1)]


def prefix_block_hashes(
    text: str, *, block_chars: int = 256, max_blocks: int = 16
) -> tuple[int, ...]:
    """Chained hashes of the full ``block_chars`` blocks at the start of ``text``.

    Block ``i``'s hash covers blocks ``0..i``, so two prompts share hash ``i`` only when they share
    their first ``i + 1`` blocks. Hashes are stable within one process (Python's ``hash``).
    """
    if block_chars < 1:
        raise InvalidConfigError("block_chars", block_chars, "must be >= 1")
    out: list[int] = []
    h = 0
    limit = min(len(text) // block_chars, max_blocks)
    for i in range(limit):
        h = hash((h, text[i * block_chars : (i + 1) * block_chars]))
        out.append(h)
    return tuple(out)


class PrefixIndex:
    """Which replica was last sent which prefix blocks (a bounded LRU per replica)."""

    def __init__(self, max_blocks_per_replica: int = 16_384) -> None:
        self._max = max_blocks_per_replica
        self._blocks: dict[str, OrderedDict[int, None]] = {}  # replica_id -> block hashes
        self._holders: dict[int, set[str]] = {}  # block hash -> replicas thought to hold it

    def matched_blocks(self, replica_id: str, hashes: Sequence[int]) -> int:
        """How many leading blocks of ``hashes`` the replica is thought to hold."""
        blocks = self._blocks.get(replica_id)
        if not blocks:
            return 0
        n = 0
        for h in hashes:
            if h not in blocks:
                break
            n += 1
        return n

    def record(self, replica_id: str, hashes: Sequence[int]) -> None:
        """The replica now holds ``hashes`` (most recently used)."""
        if not hashes:
            return
        blocks = self._blocks.setdefault(replica_id, OrderedDict())
        holders = self._holders
        for h in hashes:
            if h in blocks:
                blocks.move_to_end(h)
            else:
                blocks[h] = None
                holders.setdefault(h, set()).add(replica_id)
        while len(blocks) > self._max:
            self._drop(replica_id, blocks.popitem(last=False)[0])

    def holders(self, block_hash: int) -> frozenset[str] | set[str]:
        """The replicas thought to hold this block (do not modify)."""
        return self._holders.get(block_hash, frozenset())

    def forget(self, replica_id: str) -> None:
        """The replica restarted: its cache is empty."""
        for h in self._blocks.pop(replica_id, ()):
            self._drop(replica_id, h)

    def _drop(self, replica_id: str, block_hash: int) -> None:
        held = self._holders[block_hash]
        held.discard(replica_id)
        if not held:
            del self._holders[block_hash]


@ROUTING_POLICIES.register("prefix-affinity", aliases=("prefix",))
class PrefixAffinity:
    """Highest score wins: ``prefix·match − queue·load − kv·kv_used`` (ties: snapshot order).

    ``match`` is the fraction of the prompt's blocks the replica is thought to hold, ``load`` the
    replica's outstanding tokens (running + waiting requests when no token counts are known)
    relative to the busiest candidate. A replica above ``kv_high_fraction`` KV use gets no
    affinity credit: its cache is about to evict, and piling on would only queue.
    """

    uses_prefix_hashes = True

    def __init__(
        self, context: RoutingContext | None = None, *, weights: PrefixAffinityWeights | None = None
    ) -> None:
        self.weights = weights or PrefixAffinityWeights()
        self.index = PrefixIndex(self.weights.max_blocks_per_replica)

    def route(self, snapshot: RoutingSnapshot, request: RouteRequest) -> RouteDecision:
        """Choose the best-scoring healthy replica and remember its prefixes."""
        if snapshot.index is not None and not request.exclude:
            return self._route_columns(snapshot.index, request)
        cands = candidates(snapshot, request)
        if not cands:
            return no_replica(request)
        by_tokens = any(r.outstanding_tokens for r in cands)
        loads = [_load(r, by_tokens) for r in cands]
        max_load = max(loads) or 1.0
        w = self.weights
        n_blocks = len(request.prefix_hashes)
        best_i, best_score, best_match = 0, float("-inf"), 0
        for i, state in enumerate(cands):
            matched = self.index.matched_blocks(state.replica_id, request.prefix_hashes)
            if state.kv_used_fraction > w.kv_high_fraction:
                matched = 0
            match = matched / n_blocks if n_blocks else 0.0
            score = w.prefix * match - w.queue * loads[i] / max_load - w.kv * state.kv_used_fraction
            if score > best_score:
                best_i, best_score, best_match = i, score, matched
        return self._decide(cands[best_i].replica_id, best_match, request)

    def _decide(self, chosen: str, best_match: int, request: RouteRequest) -> RouteDecision:
        self.index.record(chosen, request.prefix_hashes)
        n_blocks = len(request.prefix_hashes)
        reason = (
            f"prefix affinity: {best_match}/{n_blocks} blocks cached"
            if best_match
            else "prefix affinity: no cached prefix; least loaded"
        )
        return RouteDecision(replica_id=chosen, reason=reason)

    def _route_columns(self, index: ReplicaIndex, request: RouteRequest) -> RouteDecision:
        """The scan's choice from a column view of (outstanding tokens, requests, KV use).

        NOTE(routing): the score weighs load by the busiest candidate's, a per-request factor,
        so no ordering of replicas holds it; the view keeps the numbers as float columns and
        the score is the scan's expression on vectors, in its order of operations (first best
        on ties). Only replicas thought to hold the prompt's first block (the prefix index's
        holders) are looked at one by one, for their matched blocks.
        """
        view = index.columns("prefix-affinity", _row, 3)
        members, rows = view.columns(request.model_id)
        if not len(members):
            return no_replica(request)
        outstanding = rows[0]
        top = float(outstanding.max())  # > 0: some candidate has tokens (any() without a pass)
        if top > 0:
            loads, max_load = outstanding, top
        elif outstanding.any():
            loads, max_load = outstanding, top or 1.0
        else:  # no token counts known: requests stand in
            loads = rows[1]
            max_load = float(loads.max()) or 1.0
        kv_used = rows[2]
        w = self.weights
        hashes = request.prefix_hashes
        n_blocks = len(hashes)
        holders = self.index.holders(hashes[0]) if n_blocks else ()
        if not holders and math.isfinite(w.prefix):
            # no candidate holds the prompt's first block: every match is 0, so the score is
            # (0 - queue·load/max) - kv·kv_used = -(queue·load/max + kv·kv_used) exactly (IEEE
            # negation is exact, rounding symmetric), and its first largest is the first least
            # of the sum (a weight of 1 multiplies exactly: skipped)
            pressure = np.divide(loads if w.queue == 1.0 else w.queue * loads, max_load)
            np.add(pressure, kv_used if w.kv == 1.0 else w.kv * kv_used, out=pressure)
            chosen = index.states[int(members[int(pressure.argmin())])].replica_id
            return self._decide(chosen, 0, request)
        match = np.zeros(len(members))
        matched_at: dict[int, int] = {}
        if n_blocks:
            for rid in holders:
                pos = index.position(rid)
                if pos is None:
                    continue
                i = int(np.searchsorted(members, pos))
                if i == len(members) or members[i] != pos or kv_used[i] > w.kv_high_fraction:
                    continue  # not a candidate, or its cached prefixes do not count
                matched_at[i] = self.index.matched_blocks(rid, hashes)
                match[i] = matched_at[i] / n_blocks
        scores = w.prefix * match - w.queue * loads / max_load - w.kv * kv_used
        best = int(scores.argmax())  # the first of equal best scores
        chosen = index.states[int(members[best])].replica_id
        return self._decide(chosen, matched_at.get(best, 0), request)


def _row(state: ReplicaState) -> tuple[str, tuple[float, float, float]]:
    """A replica's row in prefix affinity's column view, grouped by model."""
    return state.model_id, (
        float(state.outstanding_tokens),
        float(state.num_running + state.num_waiting),
        state.kv_used_fraction,
    )


def _load(state: ReplicaState, by_tokens: bool) -> float:
    if by_tokens:
        return float(state.outstanding_tokens)
    return float(state.num_running + state.num_waiting)
