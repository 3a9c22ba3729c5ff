"""The replica core the virtual engine drives: the simulator's, or a stand-in with its contract.

The contract (``npucenter.sim.replica``): ``ReplicaCore(perf, ReplicaConfig(...))``,
``.add(SeqRequest(request_id, prompt_tokens, max_output_tokens, arrival_s))``, ``.abort(id)``,
``.step(now_s) -> StepResult | None``. :func:`make_replica_core` uses the simulator's core when
it is installed, so the live engine and the twin batch alike; :class:`LocalReplicaCore` is the
stand-in used only when ``npucenter.sim.replica`` is missing.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Protocol

from npucenter.errors import InvalidConfigError

__all__ = [
    "CoreConfig",
    "LocalReplicaCore",
    "ReplicaCoreLike",
    "SeqRequest",
    "StepResult",
    "make_replica_core",
]

log = logging.getLogger(__name__)


class _Perf(Protocol):
    kv_capacity_tokens: int
    idle_power_w: float

    def step_time_s(self, a: float, b: float, c: float, d: float) -> Any: ...
    def step_power_w(self, a: float, b: float, c: float, d: float) -> Any: ...
    @staticmethod
    def attn_pairs(chunk_tokens: Any, prior_context_tokens: Any) -> Any: ...


class ReplicaCoreLike(Protocol):
    """What the engine loop needs from a replica core."""

    def add(self, request: Any) -> None: ...
    def abort(self, request_id: str) -> None: ...
    def step(self, now_s: float) -> Any: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class CoreConfig:
    """Batching limits of one replica (vLLM's ``max_num_seqs`` / ``max_num_batched_tokens``)."""

    max_num_seqs: int = 256
    max_num_batched_tokens: int = 8192
    max_model_len_tokens: int | None = None

    def __post_init__(self) -> None:
        if self.max_num_seqs < 1:
            raise InvalidConfigError("max_num_seqs", self.max_num_seqs, "must be at least 1")
        if self.max_num_batched_tokens < 1:
            raise InvalidConfigError(
                "max_num_batched_tokens", self.max_num_batched_tokens, "must be at least 1"
            )


@dataclass(frozen=True, slots=True, kw_only=True)
class SeqRequest:
    """One sequence to serve (the simulator's contract)."""

    request_id: str
    prompt_tokens: int
    max_output_tokens: int
    arrival_s: float


@dataclass(frozen=True, slots=True, kw_only=True)
class StepResult:
    """What one engine iteration did (the simulator's contract)."""

    duration_s: float
    energy_j: float
    emitted: tuple[tuple[str, int], ...]  # (request_id, tokens emitted this step)
    first_token_ids: tuple[str, ...] = ()
    finished_ids: tuple[str, ...] = ()
    preempted_ids: tuple[str, ...] = ()


@dataclass(slots=True)
class _Seq:
    request: SeqRequest
    prefill_target: int  # tokens to prefill: the prompt, or prompt + output after preemption
    computed_tokens: int = 0  # tokens whose KV is in the cache
    generated_tokens: int = 0
    prefilled: bool = False
    first_token_sent: bool = False


@dataclass(slots=True)
class LocalReplicaCore:
    """Continuous batching with chunked prefill and recompute preemption (vLLM V1's policy).

    NOTE(engines): each step first gives every running, fully prefilled sequence one decode
    token, preempting the newest sequences while the KV cache cannot hold the step; the rest of
    the ``max_num_batched_tokens`` budget prefills running then waiting sequences (FCFS) in
    chunks. A sequence whose prefill completes emits its first token in that step.
    """

    perf: _Perf
    config: CoreConfig = field(default_factory=CoreConfig)
    _waiting: deque[_Seq] = field(default_factory=deque)
    _running: list[_Seq] = field(default_factory=list)
    _by_id: dict[str, _Seq] = field(default_factory=dict)

    def add(self, request: SeqRequest) -> None:
        """Queue a request (FCFS)."""
        seq = _Seq(request, prefill_target=request.prompt_tokens)
        self._by_id[request.request_id] = seq
        self._waiting.append(seq)

    def abort(self, request_id: str) -> None:
        """Forget a request; its KV is freed at once. Unknown ids are ignored."""
        seq = self._by_id.pop(request_id, None)
        if seq is None:
            return
        if seq in self._running:
            self._running.remove(seq)
        else:
            self._waiting.remove(seq)

    @property
    def num_running(self) -> int:
        """Sequences holding KV cache."""
        return len(self._running)

    @property
    def num_waiting(self) -> int:
        """Sequences queued without KV cache."""
        return len(self._waiting)

    @property
    def kv_used_tokens(self) -> int:
        """Tokens of KV cache in use."""
        return sum(s.computed_tokens for s in self._running)

    def step(self, now_s: float) -> StepResult | None:
        """Run one iteration at ``now_s``; ``None`` when there is nothing to do."""
        del now_s  # FCFS needs no clock; kept for the contract
        if not self._running and not self._waiting:
            return None
        preempted = self._make_room_for_decodes()
        decodes = [s for s in self._running if s.prefilled]
        budget = self.config.max_num_batched_tokens - len(decodes)
        chunks = self._schedule_prefills(budget)
        if not decodes and not chunks:
            return None
        return self._run(decodes, chunks, preempted)

    def _make_room_for_decodes(self) -> list[str]:
        preempted: list[str] = []
        capacity = self.perf.kv_capacity_tokens
        while self._running:
            need = sum(s.computed_tokens + s.prefilled for s in self._running)
            if need <= capacity or len(self._running) == 1:
                break
            victim = self._running.pop()
            victim.computed_tokens = 0
            victim.prefilled = False
            victim.prefill_target = victim.request.prompt_tokens + victim.generated_tokens
            self._waiting.appendleft(victim)
            preempted.append(victim.request.request_id)
        return preempted

    def _schedule_prefills(self, budget: int) -> list[tuple[_Seq, int]]:
        chunks: list[tuple[_Seq, int]] = []
        free_kv = self.perf.kv_capacity_tokens - sum(s.computed_tokens + 1 for s in self._running)
        for seq in self._running:
            if budget <= 0:
                return chunks
            left = seq.prefill_target - seq.computed_tokens
            if not seq.prefilled and left > 0:
                n = min(left, budget)
                chunks.append((seq, n))
                budget -= n
                free_kv -= n
        while self._waiting and budget > 0 and len(self._running) < self.config.max_num_seqs:
            seq = self._waiting[0]
            if seq.prefill_target + 1 > free_kv and self._running:
                break
            self._waiting.popleft()
            self._running.append(seq)
            n = min(seq.prefill_target, budget)
            chunks.append((seq, n))
            budget -= n
            free_kv -= seq.prefill_target + 1
        return chunks

    def _run(
        self, decodes: list[_Seq], chunks: list[tuple[_Seq, int]], preempted: list[str]
    ) -> StepResult:
        prefill_tokens = sum(n for _, n in chunks)
        pairs = sum(float(self.perf.attn_pairs(n, s.computed_tokens)) for s, n in chunks)
        ctx = sum(s.computed_tokens for s in decodes)
        args = (float(prefill_tokens), pairs, float(len(decodes)), float(ctx))
        duration_s = float(self.perf.step_time_s(*args))
        energy_j = float(self.perf.step_power_w(*args)) * duration_s
        emitted: list[tuple[str, int]] = []
        first: list[str] = []
        finished: list[str] = []
        for seq in decodes:
            seq.computed_tokens += 1
            self._emit(seq, emitted, first, finished)
        for seq, n in chunks:
            seq.computed_tokens += n
            if seq.computed_tokens >= seq.prefill_target:
                seq.prefilled = True
                self._emit(seq, emitted, first, finished)
        return StepResult(
            duration_s=duration_s,
            energy_j=energy_j,
            emitted=tuple(emitted),
            first_token_ids=tuple(first),
            finished_ids=tuple(finished),
            preempted_ids=tuple(preempted),
        )

    def _emit(self, seq: _Seq, emitted: list[Any], first: list[str], finished: list[str]) -> None:
        rid = seq.request.request_id
        seq.generated_tokens += 1
        emitted.append((rid, 1))
        if not seq.first_token_sent:
            seq.first_token_sent = True
            first.append(rid)
        if seq.generated_tokens >= seq.request.max_output_tokens:
            finished.append(rid)
            self._running.remove(seq)
            del self._by_id[rid]


def make_replica_core(perf: Any, config: CoreConfig) -> tuple[ReplicaCoreLike, type]:
    """The simulator's ``ReplicaCore`` (if installed) or :class:`LocalReplicaCore`.

    Returns the core and the request class its ``add`` takes (built with keyword arguments
    ``request_id``, ``prompt_tokens``, ``max_output_tokens``, ``arrival_s``).
    """
    try:
        sim_replica: Any = importlib.import_module("npucenter.sim.replica")
    except ImportError:
        log.info("npucenter.sim.replica not installed; using the engine's stand-in core")
        return LocalReplicaCore(perf, config), SeqRequest
    cfg_cls = sim_replica.ReplicaConfig
    wanted = {
        "max_num_seqs": config.max_num_seqs,
        "max_num_batched_tokens": config.max_num_batched_tokens,
        "max_model_len_tokens": config.max_model_len_tokens,
    }
    names = (
        {f.name for f in dataclasses.fields(cfg_cls)}
        if dataclasses.is_dataclass(cfg_cls)
        else set(wanted)
    )
    cfg = cfg_cls(**{k: v for k, v in wanted.items() if k in names})
    return sim_replica.ReplicaCore(perf, cfg), sim_replica.SeqRequest
