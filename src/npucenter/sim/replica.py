"""One engine replica's scheduler, vLLM-v1 style: continuous batching, chunked prefill, paged KV.

Pure: the caller supplies time. :meth:`ReplicaCore.step` runs exactly one engine iteration (the
virtual engine drives it in real time); :meth:`ReplicaCore.advance_until` runs every iteration
that starts at or before a time and skips runs of pure-decode iterations in closed form (the
simulator's fast path). Both give the same per-request token times. Invariant: KV blocks in use
never exceed the replica's blocks, and every added request finishes or is aborted exactly once.
"""

from __future__ import annotations

import heapq
import math
from array import array
from collections import deque
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from npucenter.errors import InvalidConfigError, InvalidRequestError

__all__ = [
    "Completion",
    "ReplicaConfig",
    "ReplicaCore",
    "SeqRequest",
    "StepCostModel",
    "StepResult",
]

_WAITING, _PREFILL, _DECODE, _DONE = 0, 1, 2, 3
_MAX_RUN_STEPS = 4096  # longest decode run evaluated in one vector call


class StepCostModel(Protocol):
    """The part of ``npucenter.perf.PerfModel`` a replica needs (see docs/perf-api.md)."""

    kv_capacity_tokens: int
    idle_power_w: float

    def step_time_s(
        self, prefill_tokens: Any, prefill_attn_pairs: Any, decode_seqs: Any, decode_context: Any
    ) -> Any: ...

    def step_power_w(
        self, prefill_tokens: Any, prefill_attn_pairs: Any, decode_seqs: Any, decode_context: Any
    ) -> Any: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class ReplicaConfig:
    """Scheduler limits of one replica (vLLM's names, without the engine-specific ones)."""

    max_num_seqs: int = 256
    max_num_batched_tokens: int = 8192  # token budget per iteration, prefill chunks included
    block_size_tokens: int = 16
    kv_capacity_tokens: int | None = None  # None: the performance model's capacity
    enable_chunked_prefill: bool = True
    max_model_len_tokens: int | None = None  # None: limited by KV capacity only

    def __post_init__(self) -> None:
        for name in ("max_num_seqs", "max_num_batched_tokens", "block_size_tokens"):
            if getattr(self, name) < 1:
                raise InvalidConfigError(name, getattr(self, name), "must be >= 1")
        if self.max_num_batched_tokens < self.max_num_seqs:
            raise InvalidConfigError(
                "max_num_batched_tokens",
                self.max_num_batched_tokens,
                f"must be >= max_num_seqs ({self.max_num_seqs}) so every decode fits a step",
            )
        if self.kv_capacity_tokens is not None and self.kv_capacity_tokens < self.block_size_tokens:
            raise InvalidConfigError(
                "kv_capacity_tokens", self.kv_capacity_tokens, "must hold at least one block"
            )
        if self.max_model_len_tokens is not None and self.max_model_len_tokens < 2:
            raise InvalidConfigError("max_model_len_tokens", self.max_model_len_tokens, "< 2")


@dataclass(frozen=True, slots=True, kw_only=True)
class SeqRequest:
    """A request as the replica sees it.

    ``num_computed_tokens``/``num_output_tokens`` are non-zero only for a request whose prefill
    ran elsewhere (disaggregated serving): its KV arrives with it and its first token is out.
    """

    request_id: str
    prompt_tokens: int
    max_output_tokens: int
    arrival_s: float
    index: int = -1  # caller's row number, carried into Completion
    num_computed_tokens: int = 0
    num_output_tokens: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class StepResult:
    """The record of one engine iteration."""

    start_s: float
    duration_s: float
    energy_j: float
    emitted: tuple[tuple[str, int], ...]  # (request_id, tokens emitted this step)
    first_token_ids: tuple[str, ...]
    finished_ids: tuple[str, ...]
    preempted_ids: tuple[str, ...]
    num_running: int
    num_waiting: int
    kv_used_tokens: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Completion:
    """A finished request: its first-token and finish times (s) and times it was preempted."""

    request_id: str
    index: int
    first_token_s: float
    finish_s: float
    num_preemptions: int


class _Seq:
    __slots__ = (
        "arrival_s",
        "blocks",
        "computed",
        "d0",
        "dfin",
        "first_token_s",
        "index",
        "max_out",
        "order",
        "out",
        "preemptions",
        "prompt",
        "request_id",
        "residue",
        "state",
    )

    def __init__(self, req: SeqRequest) -> None:
        self.request_id = req.request_id
        self.index = req.index
        self.prompt = req.prompt_tokens
        self.max_out = req.max_output_tokens
        self.arrival_s = req.arrival_s
        self.computed = req.num_computed_tokens  # valid unless DECODE (then c0 at d0)
        self.out = req.num_output_tokens  # valid unless DECODE (then o0 at d0)
        self.blocks = 0  # valid unless DECODE
        self.state = _WAITING
        self.order = -1
        self.d0 = 0
        self.dfin = -1
        self.residue = 0
        self.first_token_s = math.nan
        self.preemptions = 0


class ReplicaCore:
    """The scheduler and clock-free state of one replica (see the module docstring).

    NOTE(sim): Decoding sequences are not touched one by one. The replica counts iterations in
    ``_d``; a sequence that entered decode at ``d0`` with ``c0`` KV tokens and ``o0`` outputs has
    ``c0 + (_d - d0)`` and ``o0 + (_d - d0)`` now, and finishes at iteration ``d0 + max_out - o0``
    (a heap keyed by that count). The decode context sum grows by the number of decoding
    sequences per iteration; a decoding sequence needs a new KV block in the iteration where its
    KV length is a multiple of the block size, so the replica keeps, per residue of
    ``c0 - d0`` modulo the block size, how many sequences have it: the new blocks of iteration
    ``d`` are ``count[-d mod B]`` and those of a run of iterations follow in O(B). A run of pure
    decode iterations (nothing to prefill, nothing admissible, no finish, no KV shortage before
    its end) is therefore evaluated in one vector call of the performance model.
    """

    # slots: one compact object per replica (a national fleet holds thousands of them)
    __slots__ = (
        "_bs",
        "_by_id",
        "_d",
        "_decode_alloc_step",
        "_fin_heap",
        "_free_blocks",
        "_free_s",
        "_n_dec",
        "_next_order",
        "_plan",
        "_prefill",
        "_queued_prefill",
        "_remaining_out",
        "_residues",
        "_running",
        "_s_dec",
        "_s_pre",
        "_waiting",
        "busy_by_bin",
        "busy_s",
        "completions",
        "config",
        "energy_by_bin",
        "energy_j",
        "kv_capacity_tokens",
        "max_model_len_tokens",
        "num_output_tokens",
        "num_preemptions",
        "num_steps",
        "perf",
        "record_completions",
        "timeline_bin_s",
        "total_blocks",
    )

    def __init__(
        self,
        perf: StepCostModel,
        config: ReplicaConfig | None = None,
        *,
        record_completions: bool = False,
    ) -> None:
        self.config = config or ReplicaConfig()
        self._bs = self.config.block_size_tokens
        self._bind(perf)
        self._waiting: deque[_Seq] = deque()
        self._running: dict[int, _Seq] = {}  # admission order -> seq (prefill and decode)
        self._prefill: dict[int, _Seq] = {}  # the running seqs still prefilling, same order
        self._by_id: dict[str, _Seq] = {}
        self._next_order = 0
        self._d = 0  # iterations run
        self._n_dec = 0
        self._s_dec = 0  # sum of KV tokens of decoding seqs
        self._s_pre = 0  # sum of KV tokens of prefilling seqs
        self._residues = [0] * self._bs
        self._fin_heap: list[tuple[int, int, _Seq]] = []
        self._queued_prefill = 0
        self._remaining_out = 0
        self._free_s = 0.0  # when the current iteration ends (the replica is free)
        self._plan: _DecodeRun | None = None
        self._decode_alloc_step = -1  # iteration whose decode blocks are already allocated
        self.record_completions = record_completions
        self.completions: list[Completion] = []
        # running totals
        self.energy_j = 0.0
        self.busy_s = 0.0
        self.num_steps = 0
        self.num_output_tokens = 0
        self.num_preemptions = 0
        self.timeline_bin_s = 60.0
        # per timeline bin, as C doubles (no float object per bin to allocate, free and chase)
        self.energy_by_bin: array[float] = array("d")
        self.busy_by_bin: array[float] = array("d")

    def rebind(self, perf: StepCostModel) -> None:
        """Serve at ``perf``'s speed from now on (a replica admitted again on another device
        type); its KV capacity follows. Only an empty replica (stopped: nothing in flight)."""
        if self._by_id:
            raise ValueError("a replica with requests in flight keeps its device")
        self._bind(perf)
        self._plan = None

    def _bind(self, perf: StepCostModel) -> None:
        """Take ``perf``'s speed and the KV capacity it (or the config) gives; all blocks free."""
        self.perf = perf
        cfg = self.config
        capacity = (
            cfg.kv_capacity_tokens
            if cfg.kv_capacity_tokens is not None
            else int(perf.kv_capacity_tokens)
        )
        self.total_blocks = capacity // self._bs
        self.kv_capacity_tokens = self.total_blocks * self._bs
        self.max_model_len_tokens = (
            min(cfg.max_model_len_tokens, self.kv_capacity_tokens)
            if cfg.max_model_len_tokens is not None
            else self.kv_capacity_tokens
        )
        self._free_blocks = self.total_blocks

    # --- read-only state ----------------------------------------------------------------------
    @property
    def num_waiting(self) -> int:
        """Requests waiting for admission (including preempted ones)."""
        return len(self._waiting)

    @property
    def num_running(self) -> int:
        """Requests admitted (prefilling or decoding)."""
        return len(self._running)

    @property
    def kv_used_blocks(self) -> int:
        """KV blocks allocated now."""
        return self.total_blocks - self._free_blocks

    @property
    def kv_used_fraction(self) -> float:
        """KV blocks in use / blocks of the replica."""
        return (self.total_blocks - self._free_blocks) / self.total_blocks

    @property
    def kv_used_tokens(self) -> int:
        """Tokens whose KV is held."""
        return self._s_dec + self._s_pre

    @property
    def queued_prefill_tokens(self) -> int:
        """Prompt (and recompute) tokens not yet prefilled."""
        return self._queued_prefill

    @property
    def outstanding_tokens(self) -> int:
        """Tokens still to process: not-yet-prefilled prompt tokens plus outputs still to come."""
        return self._queued_prefill + self._remaining_out

    @property
    def has_work(self) -> bool:
        """True while any request is running or waiting."""
        return bool(self._running or self._waiting)

    # --- requests -----------------------------------------------------------------------------
    def add(self, request: SeqRequest) -> None:
        """Queue a request (FCFS). Raises InvalidRequestError if it can never fit this replica."""
        need = request.prompt_tokens + request.max_output_tokens
        if request.prompt_tokens < 1 or request.max_output_tokens < 1:
            raise InvalidRequestError(
                f"request {request.request_id!r} needs prompt_tokens >= 1 and "
                "max_output_tokens >= 1",
                details={"request_id": request.request_id},
            )
        if need > self.max_model_len_tokens:
            raise InvalidRequestError(
                f"request {request.request_id!r} needs {need} tokens of context; this replica "
                f"holds at most {self.max_model_len_tokens}",
                hint="shorten the prompt or max_tokens, or use a replica with more KV memory",
                details={"request_id": request.request_id, "context_tokens": need},
            )
        if not self.config.enable_chunked_prefill and need - 1 > self.config.max_num_batched_tokens:
            raise InvalidRequestError(
                f"request {request.request_id!r} needs up to {need - 1} tokens in one iteration "
                f"(prefill or recompute) but max_num_batched_tokens is "
                f"{self.config.max_num_batched_tokens} and chunked prefill is off",
                hint="enable chunked prefill or raise max_num_batched_tokens",
                details={"request_id": request.request_id, "context_tokens": need},
            )
        if not (
            0 <= request.num_output_tokens < request.max_output_tokens
            and 0
            <= request.num_computed_tokens
            <= request.prompt_tokens + request.num_output_tokens
        ):
            raise InvalidRequestError(
                f"request {request.request_id!r} has inconsistent computed/output token counts",
                details={"request_id": request.request_id},
            )
        if request.request_id in self._by_id:
            raise InvalidRequestError(
                f"request {request.request_id!r} is already on this replica",
                details={"request_id": request.request_id},
            )
        seq = _Seq(request)
        if not self.has_work:
            self._free_s = max(self._free_s, request.arrival_s)
        self._by_id[seq.request_id] = seq
        self._waiting.append(seq)
        self._queued_prefill += seq.prompt + seq.out - seq.computed
        self._remaining_out += seq.max_out - seq.out
        self._plan = None

    def abort(self, request_id: str) -> bool:
        """Drop a request wherever it is; True if it was here."""
        seq = self._by_id.pop(request_id, None)
        if seq is None:
            return False
        if seq.state == _WAITING:
            self._waiting.remove(seq)
            self._queued_prefill -= seq.prompt + seq.out - seq.computed
        elif seq.state == _PREFILL:
            self._release(seq)
            self._queued_prefill -= seq.prompt + seq.out - seq.computed
        else:
            self._release(seq)
        self._remaining_out -= seq.max_out - seq.out
        seq.state = _DONE
        self._plan = None
        return True

    def evict(self) -> list[tuple[int, float]]:
        """Abort every request here (the replica is stopped); returns each one's caller
        ``index`` and first-token time (NaN: none yet), in arrival order."""
        seqs = sorted(self._by_id.values(), key=lambda q: (q.arrival_s, q.index))
        for seq in seqs:
            self.abort(seq.request_id)
        return [(seq.index, seq.first_token_s) for seq in seqs]

    # --- one iteration (the virtual engine) ---------------------------------------------------
    def step(self, now_s: float) -> StepResult | None:
        """Run exactly one iteration starting at ``now_s``; ``None`` when there is nothing to do."""
        if not self.has_work:
            return None
        self._free_s = now_s
        decode_ids = [s.request_id for s in self._running.values() if s.state == _DECODE]
        out = self._single_step(collect=True)
        if out is None:
            return None
        duration, energy, firsts, finished, preempted, prefill_emits = out
        emitted = tuple((rid, 1) for rid in decode_ids if rid not in preempted) + tuple(
            (rid, 1) for rid in prefill_emits
        )
        return StepResult(
            start_s=now_s,
            duration_s=duration,
            energy_j=energy,
            emitted=emitted,
            first_token_ids=tuple(firsts),
            finished_ids=tuple(finished),
            preempted_ids=tuple(preempted),
            num_running=len(self._running),
            num_waiting=len(self._waiting),
            kv_used_tokens=self.kv_used_tokens,
        )

    # --- the fast path (the simulator) --------------------------------------------------------
    def advance_until(self, t_s: float, *, inclusive: bool = False) -> None:
        """Run every iteration that starts before ``t_s`` (or at it, if ``inclusive``).

        A request added at ``t_s`` after ``advance_until(t_s)`` joins an iteration starting at
        ``t_s``, as it would with :meth:`step`. Results equal one-step-at-a-time stepping.
        """
        while (self._running or self._waiting) and (
            self._free_s < t_s or (inclusive and self._free_s == t_s)
        ):
            run = self._current_plan()
            if run is None:
                if self._single_step(collect=False) is None:
                    break  # nothing can run (add() refuses requests that could cause this)
                continue
            m = run.count_until(t_s, inclusive=inclusive)
            self._apply_run(run, m)
            if m < run.k:  # stopped by t_s: keep the rest of the run
                run.consume(m)
                run.d = self._d
                return
            self._plan = None

    def next_event_s(self) -> float | None:
        """When the simulator should next call ``advance_until(t, inclusive=True)``: the start
        of the next iteration that changes the counts of running or waiting requests."""
        if not (self._running or self._waiting):
            return None
        run = self._current_plan()
        if run is None:
            return self._free_s
        return run.start(run.k - 1)

    # --- internals: planning ------------------------------------------------------------------
    def _current_plan(self) -> _DecodeRun | None:
        run = self._plan
        if run is not None and run.d == self._d:
            return run
        self._plan = None
        k = self._decode_run_length()
        if k <= 0:
            return None
        self._plan = _DecodeRun.plan(self.perf, self._d, self._free_s, k, self._n_dec, self._s_dec)
        return self._plan

    def _decode_run_length(self) -> int:
        """Iterations from now that are pure decode and change nothing but token counts."""
        if self._prefill or self._n_dec == 0:
            return 0
        if self._waiting and self._head_admissible():
            return 0
        heap = self._fin_heap
        while heap and heap[0][2].dfin != heap[0][0]:
            heapq.heappop(heap)
        k_fin = heap[0][0] - self._d
        k_kv = self._steps_until_kv_short(self._free_blocks)
        return min(k_fin, k_kv, _MAX_RUN_STEPS)

    def _head_admissible(self) -> bool:
        cfg = self.config
        if len(self._running) >= cfg.max_num_seqs:
            return False
        budget = cfg.max_num_batched_tokens - self._n_dec
        if budget <= 0:
            return False
        head = self._waiting[0]
        need = head.prompt + head.out - head.computed
        if not cfg.enable_chunked_prefill and need > budget:
            return False
        chunk = min(need, budget)
        free_after_decode = self._free_blocks - self._residues[(-self._d) % self._bs]
        return self._blocks_for(head.computed + chunk) - head.blocks <= free_after_decode

    def _steps_until_kv_short(self, free: int) -> int:
        """How many iterations from now can allocate their decode blocks from ``free``."""
        bs, d, res, n = self._bs, self._d, self._residues, self._n_dec
        full_cycles = free // n
        remaining = free - full_cycles * n
        m = 0
        for j in range(bs):
            need = res[(-(d + j)) % bs]
            if need > remaining:
                break
            remaining -= need
            m += 1
        return full_cycles * bs + m

    def _blocks_over(self, k: int) -> int:
        """New decode blocks allocated over the next ``k`` iterations."""
        bs, d, res = self._bs, self._d, self._residues
        total = (k // bs) * self._n_dec
        for j in range(k % bs):
            total += res[(-(d + j)) % bs]
        return total

    def _apply_run(self, run: _DecodeRun, k: int) -> None:
        if k <= 0:
            return
        n = self._n_dec
        self._free_blocks -= self._blocks_over(k)
        self._d += k
        self._s_dec += n * k
        self._remaining_out -= n * k
        self.num_output_tokens += n * k
        self.num_steps += k
        start = run.start(0)
        end = run.start(k)
        self._account(start, end, end - start, run.energy(k))
        self._free_s = end
        self._pop_finished(end)

    # --- internals: one scheduled iteration ---------------------------------------------------
    def _single_step(
        self, *, collect: bool
    ) -> tuple[float, float, list[str], list[str], list[str], list[str]] | None:
        self._plan = None
        preempted: list[str] = []
        self._allocate_decode_blocks(preempted)
        budget = self.config.max_num_batched_tokens - self._n_dec
        chunks: list[tuple[_Seq, int]] = []
        budget = self._schedule_prefilling(chunks, budget, preempted)
        if not preempted:
            self._admit_waiting(chunks, budget)
        n = self._n_dec
        if n == 0 and not chunks:
            return None  # nothing can run (cannot happen for requests add() accepted)
        prefill_tokens = 0
        pairs = 0.0
        for seq, chunk in chunks:
            prefill_tokens += chunk
            pairs += chunk * seq.computed + chunk * (chunk + 1) / 2.0
        ctx = float(self._s_dec + n)
        duration = float(self.perf.step_time_s(float(prefill_tokens), pairs, float(n), ctx))
        power = float(self.perf.step_power_w(float(prefill_tokens), pairs, float(n), ctx))
        start = self._free_s
        end = start + duration
        # decode progress
        self._d += 1
        self._s_dec += n
        self._remaining_out -= n
        self.num_output_tokens += n
        self.num_steps += 1
        firsts: list[str] = []
        finished: list[str] = []
        prefill_emits: list[str] = []
        for seq, chunk in chunks:
            self._finish_chunk(seq, chunk, end, firsts, finished, prefill_emits, collect)
        self._account(start, end, duration, power * duration)
        self._free_s = end
        finished.extend(self._pop_finished(end, collect=collect))
        return duration, power * duration, firsts, finished, preempted, prefill_emits

    def _allocate_decode_blocks(self, preempted: list[str]) -> None:
        need = self._residues[(-self._d) % self._bs]
        while need > self._free_blocks:
            self._preempt_last(preempted)
            need = self._residues[(-self._d) % self._bs]
        self._free_blocks -= need
        self._decode_alloc_step = self._d

    def _schedule_prefilling(
        self, chunks: list[tuple[_Seq, int]], budget: int, preempted: list[str]
    ) -> int:
        chunked = self.config.enable_chunked_prefill
        for seq in list(self._prefill.values()):
            if budget <= 0:
                break
            if seq.state != _PREFILL:
                continue  # preempted while making room for an earlier one
            need = seq.prompt + seq.out - seq.computed
            chunk = min(need, budget) if chunked else need
            if chunk > budget:
                break
            extra = self._blocks_for(seq.computed + chunk) - seq.blocks
            while extra > self._free_blocks and seq.state == _PREFILL:
                self._preempt_last(preempted)
            if seq.state != _PREFILL:
                break
            self._free_blocks -= extra
            seq.blocks += extra
            chunks.append((seq, chunk))
            budget -= chunk
        return budget

    def _admit_waiting(self, chunks: list[tuple[_Seq, int]], budget: int) -> None:
        cfg = self.config
        waiting = self._waiting
        while waiting and budget > 0 and len(self._running) < cfg.max_num_seqs:
            seq = waiting[0]
            need = seq.prompt + seq.out - seq.computed
            if need > budget and not cfg.enable_chunked_prefill:
                break
            chunk = min(need, budget)
            extra = self._blocks_for(seq.computed + chunk) - seq.blocks
            if extra > self._free_blocks:
                break
            waiting.popleft()
            self._free_blocks -= extra
            seq.blocks += extra
            seq.state = _PREFILL
            seq.order = self._next_order
            self._next_order += 1
            self._running[seq.order] = seq
            self._prefill[seq.order] = seq
            self._s_pre += seq.computed
            chunks.append((seq, chunk))
            budget -= chunk

    def _finish_chunk(
        self,
        seq: _Seq,
        chunk: int,
        end: float,
        firsts: list[str],
        finished: list[str],
        prefill_emits: list[str],
        collect: bool,
    ) -> None:
        seq.computed += chunk
        self._s_pre += chunk
        self._queued_prefill -= chunk
        if seq.computed < seq.prompt + seq.out:
            return
        seq.out += 1
        self._remaining_out -= 1
        self.num_output_tokens += 1
        if collect:
            prefill_emits.append(seq.request_id)
        if seq.out == 1:
            seq.first_token_s = end
            if collect:
                firsts.append(seq.request_id)
        del self._prefill[seq.order]
        self._s_pre -= seq.computed
        if seq.out >= seq.max_out:
            del self._running[seq.order]
            self._free_blocks += seq.blocks
            self._complete(seq, end)
            if collect:
                finished.append(seq.request_id)
            return
        seq.state = _DECODE
        seq.d0 = self._d
        seq.residue = (seq.computed - self._d) % self._bs
        self._residues[seq.residue] += 1
        self._n_dec += 1
        self._s_dec += seq.computed
        seq.dfin = self._d + seq.max_out - seq.out
        heapq.heappush(self._fin_heap, (seq.dfin, seq.order, seq))

    def _pop_finished(self, end: float, *, collect: bool = False) -> list[str]:
        heap = self._fin_heap
        done: list[str] = []
        while heap and heap[0][0] <= self._d:
            dfin, _, seq = heapq.heappop(heap)
            if seq.dfin != dfin or seq.state != _DECODE:
                continue
            self._release(seq)
            seq.out = seq.max_out
            self._complete(seq, end)
            if collect:
                done.append(seq.request_id)
        return done

    def _complete(self, seq: _Seq, end: float) -> None:
        seq.state = _DONE
        seq.dfin = -1
        self._by_id.pop(seq.request_id, None)
        if self.record_completions:
            self.completions.append(
                Completion(
                    request_id=seq.request_id,
                    index=seq.index,
                    first_token_s=seq.first_token_s,
                    finish_s=end,
                    num_preemptions=seq.preemptions,
                )
            )

    def _release(self, seq: _Seq) -> None:
        """Take a running seq out of every aggregate and free its blocks; syncs computed/out."""
        del self._running[seq.order]
        if seq.state == _PREFILL:
            del self._prefill[seq.order]
            self._s_pre -= seq.computed
            self._free_blocks += seq.blocks
        else:
            steps = self._d - seq.d0
            computed = seq.computed + steps
            seq.out += steps
            seq.computed = computed
            blocks = self._blocks_for(computed)
            if self._decode_alloc_step == self._d and computed % self._bs == 0:
                blocks += 1  # this iteration's block was already allocated
            self._free_blocks += blocks
            self._n_dec -= 1
            self._s_dec -= computed
            self._residues[seq.residue] -= 1
            seq.dfin = -1
        seq.blocks = 0

    def _preempt_last(self, preempted: list[str]) -> None:
        """Recompute-preempt the most recently admitted running request (vLLM v1's choice)."""
        order = next(reversed(self._running))
        seq = self._running[order]
        was_decoding = seq.state == _DECODE
        self._release(seq)
        # a decoding seq's next token was not queued; now its whole context is
        self._queued_prefill += seq.computed + (1 if was_decoding else 0)
        seq.computed = 0
        seq.state = _WAITING
        seq.preemptions += 1
        self.num_preemptions += 1
        self._waiting.appendleft(seq)
        preempted.append(seq.request_id)

    def _blocks_for(self, tokens: int) -> int:
        return -(-tokens // self._bs)

    def _account(self, start: float, end: float, busy: float, energy: float) -> None:
        self.energy_j += energy
        self.busy_s += busy
        width = self.timeline_bin_s
        first = int(start // width)
        last = int(end // width)
        need = last + 1 - len(self.energy_by_bin)
        if need > 0:
            self.energy_by_bin.extend([0.0] * need)
            self.busy_by_bin.extend([0.0] * need)
        if first == last or end <= start:
            self.energy_by_bin[first] += energy
            self.busy_by_bin[first] += busy
            return
        span = end - start
        for b in range(first, last + 1):
            lo = max(start, b * width)
            hi = min(end, (b + 1) * width)
            share = (hi - lo) / span
            self.energy_by_bin[b] += energy * share
            self.busy_by_bin[b] += busy * share


class _DecodeRun:
    """``k`` pure-decode iterations starting at ``s0`` when the iteration counter is ``d``.

    NOTE(sim): With ``n`` sequences decoding, iteration ``j`` reads ``C + n·j`` context tokens.
    A roofline step time is the max of two functions linear in context, so it is linear in ``j``
    unless the run crosses the compute/memory ridge; the same holds for energy (power × time is
    idle·time plus a share of busy time). The run checks linearity at its midpoint (a convex
    piecewise-linear function meets its chord there only if it has no kink inside) and then uses
    closed forms: start(j) = s0 + j·t0 + dt·j(j-1)/2 and energy(m) = m·e0 + de·m(m-1)/2. A run that
    crosses the ridge falls back to explicit per-iteration arrays (one vector call).
    """

    __slots__ = ("d", "de", "dt", "e0", "energies", "k", "s0", "starts", "t0")

    def __init__(self, d: int, k: int, s0: float) -> None:
        self.d = d
        self.k = k
        self.s0 = s0
        self.t0 = self.dt = self.e0 = self.de = 0.0
        self.starts: np.ndarray | None = None  # cumulative start times when not linear
        self.energies: np.ndarray | None = None  # cumulative energies when not linear

    @classmethod
    def plan(cls, perf: StepCostModel, d: int, s0: float, k: int, n: int, s_dec: int) -> _DecodeRun:
        run = cls(d, k, s0)
        ctx0 = float(s_dec + n)
        nf = float(n)

        def point(j: int) -> tuple[float, float]:
            ctx = ctx0 + nf * j
            t = float(perf.step_time_s(0.0, 0.0, nf, ctx))
            return t, t * float(perf.step_power_w(0.0, 0.0, nf, ctx))

        t_first, e_first = point(0)
        if k == 1:
            run.t0, run.e0 = t_first, e_first
            return run
        t_last, e_last = point(k - 1)
        run.t0, run.e0 = t_first, e_first
        run.dt = (t_last - t_first) / (k - 1)
        run.de = (e_last - e_first) / (k - 1)
        if k >= 3:
            mid = (k - 1) // 2
            t_mid, e_mid = point(mid)
            if abs(t_mid - (t_first + run.dt * mid)) > 1e-9 * t_last or abs(
                e_mid - (e_first + run.de * mid)
            ) > 1e-9 * max(e_last, 1e-300):
                run._explicit(perf, ctx0, nf)
        return run

    def _explicit(self, perf: StepCostModel, ctx0: float, nf: float) -> None:
        ctx = ctx0 + nf * np.arange(self.k, dtype=np.float64)
        durations = np.asarray(perf.step_time_s(0.0, 0.0, nf, ctx), dtype=np.float64)
        powers = np.asarray(perf.step_power_w(0.0, 0.0, nf, ctx), dtype=np.float64)
        acc = np.empty(self.k + 1, dtype=np.float64)
        acc[0] = self.s0
        acc[1:] = durations
        self.starts = np.cumsum(acc)
        acc[0] = 0.0
        acc[1:] = durations * powers
        self.energies = np.cumsum(acc)

    def start(self, j: int) -> float:
        """Start time of iteration ``j`` (``j == k``: the end of the run)."""
        if self.starts is not None:
            return float(self.starts[j])
        return self.s0 + j * self.t0 + self.dt * (j * (j - 1) / 2.0)

    def energy(self, m: int) -> float:
        """Energy of the first ``m`` iterations (J)."""
        if self.energies is not None:
            return float(self.energies[m])
        return m * self.e0 + self.de * (m * (m - 1) / 2.0)

    def count_until(self, t_s: float, *, inclusive: bool) -> int:
        """How many of the run's iterations start before ``t_s`` (or at it, if ``inclusive``)."""
        if self.starts is not None:
            if inclusive:
                return int(np.searchsorted(self.starts[: self.k], t_s, side="right"))
            return int(np.searchsorted(self.starts[: self.k], t_s, side="left"))
        last = self.start(self.k - 1)
        if last < t_s or (inclusive and last == t_s):
            return self.k
        gap = t_s - self.s0
        if gap <= 0:
            return 1 if inclusive and gap == 0 else 0
        a = self.dt / 2.0
        b = self.t0 - a
        if a > 1e-300:
            j = int((-b + math.sqrt(b * b + 4.0 * a * gap)) / (2.0 * a))
        else:
            j = int(gap / self.t0) if self.t0 > 0 else self.k
        m = min(self.k, max(0, j + 1))

        def before(start: float) -> bool:
            return start < t_s or (inclusive and start == t_s)

        while m < self.k and before(self.start(m)):
            m += 1
        while m > 0 and not before(self.start(m - 1)):
            m -= 1
        return m

    def consume(self, m: int) -> None:
        """Drop the first ``m`` iterations (they have been applied)."""
        if self.starts is not None and self.energies is not None:
            self.starts = self.starts[m:]
            self.energies = self.energies[m:] - self.energies[m]
            self.s0 = float(self.starts[0])
        else:
            self.s0 = self.start(m)
            self.t0 += m * self.dt
            self.e0 += m * self.de
        self.k -= m
