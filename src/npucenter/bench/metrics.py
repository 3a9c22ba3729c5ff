"""Summary metrics of a run: latency distributions, throughput, goodput under an SLO, accuracy.

Pure functions over :class:`RequestRecord` rows. Failed and dropped requests count as SLO misses
(goodput never flatters); token throughput uses the server's usage counts. ``vllm_fields`` adds the
field names of ``vllm bench serve`` so existing dashboards can read our JSON.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from npucenter.bench.record import RequestRecord
from npucenter.errors import InvalidConfigError

__all__ = ["SLO", "distribution", "peak_concurrency", "summarize", "vllm_fields"]

_PCTS = (50, 90, 95, 99)


@dataclass(frozen=True, slots=True, kw_only=True)
class SLO:
    """Per-request latency limits; a request is good when it succeeds and meets every limit set."""

    ttft_s: float | None = None
    tpot_s: float | None = None
    e2e_s: float | None = None

    def __post_init__(self) -> None:
        for name in ("ttft_s", "tpot_s", "e2e_s"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise InvalidConfigError(f"slo.{name}", value, "must be > 0")

    @property
    def is_set(self) -> bool:
        """True when at least one limit is given."""
        return any(v is not None for v in (self.ttft_s, self.tpot_s, self.e2e_s))

    def met_by(self, rec: RequestRecord) -> bool:
        """Whether ``rec`` succeeded within every limit (a failed request never meets it)."""
        if not rec.ok:
            return False
        if self.ttft_s is not None and (rec.ttft_s is None or rec.ttft_s > self.ttft_s):
            return False
        tpot = rec.tpot_s
        if self.tpot_s is not None and tpot is not None and tpot > self.tpot_s:
            return False
        return not (self.e2e_s is not None and (rec.e2e_s is None or rec.e2e_s > self.e2e_s))

    def to_dict(self) -> dict[str, float | None]:
        """JSON-able limits."""
        return {"ttft_s": self.ttft_s, "tpot_s": self.tpot_s, "e2e_s": self.e2e_s}


def distribution(values: Iterable[float]) -> dict[str, float | None]:
    """mean, std, min, max, p50, p90, p95, p99 and count of ``values`` (None when empty)."""
    arr = np.fromiter(values, dtype=float)
    if arr.size == 0:
        keys = ["mean", "std", "min", "max", *[f"p{p}" for p in _PCTS]]
        return {**dict.fromkeys(keys), "count": 0}
    pcts = np.percentile(arr, _PCTS)
    out: dict[str, float | None] = {
        "mean": float(arr.mean()),
        "std": float(arr.std()),
        "min": float(arr.min()),
        "max": float(arr.max()),
    }
    out.update({f"p{p}": float(v) for p, v in zip(_PCTS, pcts, strict=True)})
    out["count"] = int(arr.size)
    return out


def peak_concurrency(records: Sequence[RequestRecord]) -> int:
    """Most requests in flight at once (from start and end stamps)."""
    events: list[tuple[float, int]] = []
    for r in records:
        if r.start_s is not None and r.end_s is not None:
            events.append((r.start_s, 1))
            events.append((r.end_s, -1))
    events.sort(key=lambda e: (e[0], e[1]))
    peak = cur = 0
    for _, d in events:
        cur += d
        peak = max(peak, cur)
    return peak


def summarize(
    records: Sequence[RequestRecord],
    *,
    slo: SLO | None = None,
    target_rate_rps: float | None = None,
    open_loop: bool = True,
) -> dict[str, Any]:
    """The ``summary`` object of a result from its request records."""
    slo = slo or SLO()
    sent = [r for r in records if r.start_s is not None]
    ok = [r for r in records if r.ok]
    ends = [e for r in sent if (e := r.end_s) is not None]
    first = min((r.start_s for r in sent if r.start_s is not None), default=0.0)
    duration_s = max(ends, default=first) - first
    per_s = (1.0 / duration_s) if duration_s > 0 else 0.0
    total_in = sum(r.prompt_tokens or 0 for r in ok)
    total_out = sum(r.output_tokens for r in ok)
    good = sum(1 for r in records if slo.met_by(r)) if slo.is_set else len(ok)
    errors = Counter(r.error or "unknown" for r in records if not r.ok)
    out: dict[str, Any] = {
        "requests": len(records),
        "sent": len(sent),
        "completed": len(ok),
        "errors": len(records) - len(ok),
        "dropped": errors.get("dropped", 0),
        "errors_by_kind": dict(sorted(errors.items())),
        "duration_s": duration_s,
        "target_rate_rps": target_rate_rps,
        **_rate_accuracy(sent, open_loop),
        "request_throughput_rps": len(ok) * per_s,
        "steady_request_throughput_rps": _steady_throughput(sent, ok),
        "total_input_tokens": total_in,
        "total_output_tokens": total_out,
        "total_reasoning_tokens": sum(r.reasoning_tokens for r in ok),
        "input_tokens_per_s": total_in * per_s,
        "output_tokens_per_s": total_out * per_s,
        "total_tokens_per_s": (total_in + total_out) * per_s,
        "input_token_error_fraction": _token_error(ok, "input"),
        "output_token_error_fraction": _token_error(ok, "output"),
        "usage_reported_fraction": (sum(r.usage_reported for r in ok) / len(ok)) if ok else None,
        "slo": slo.to_dict(),
        "good_requests": good,
        "goodput_rps": good * per_s,
        "slo_attainment_fraction": (good / len(records)) if records else None,
        "max_concurrent_requests": peak_concurrency(sent),
        "mean_concurrency": sum(r.e2e_s or 0.0 for r in sent) * per_s,
        "ttft_s": distribution(r.ttft_s for r in ok if r.ttft_s is not None),
        "tpot_s": distribution(t for r in ok if (t := r.tpot_s) is not None),
        "itl_s": distribution(x for r in ok for x in r.itl_s),
        "e2e_s": distribution(r.e2e_s for r in ok if r.e2e_s is not None),
    }
    return out


def vllm_fields(summary: dict[str, Any], scenario: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ``vllm bench serve`` result fields derivable from our ``summary`` (ms latencies)."""
    scenario = scenario or {}
    out: dict[str, Any] = {
        "num_prompts": summary["requests"],
        "request_rate": scenario.get("rate_rps") or "inf",
        "burstiness": scenario.get("burstiness", 1.0),
        "max_concurrency": scenario.get("concurrency") or scenario.get("max_concurrency"),
        "duration": summary["duration_s"],
        "completed": summary["completed"],
        "failed": summary["errors"],
        "total_input_tokens": summary["total_input_tokens"],
        "total_output_tokens": summary["total_output_tokens"],
        "request_throughput": summary["request_throughput_rps"],
        "request_goodput": summary["goodput_rps"],
        "output_throughput": summary["output_tokens_per_s"],
        "total_token_throughput": summary["total_tokens_per_s"],
        "max_concurrent_requests": summary["max_concurrent_requests"],
    }
    for ours, theirs in (
        ("ttft_s", "ttft"),
        ("tpot_s", "tpot"),
        ("itl_s", "itl"),
        ("e2e_s", "e2el"),
    ):
        dist = summary[ours]
        out[f"mean_{theirs}_ms"] = _ms(dist["mean"])
        out[f"median_{theirs}_ms"] = _ms(dist["p50"])
        out[f"std_{theirs}_ms"] = _ms(dist["std"])
        for p in (90, 95, 99):
            out[f"p{p}_{theirs}_ms"] = _ms(dist[f"p{p}"])
    return out


def _ms(value: float | None) -> float | None:
    return None if value is None else value * 1000.0


def _rate_accuracy(sent: Sequence[RequestRecord], open_loop: bool) -> dict[str, Any]:
    """Achieved vs scheduled send rate and scheduling lag (the generator's own accuracy)."""
    out: dict[str, Any] = {
        "scheduled_rate_rps": None,
        "achieved_rate_rps": None,
        "rate_error_fraction": None,
        "lag_s": distribution(r.lag_s for r in sent if r.lag_s is not None),
    }
    if len(sent) < 2:
        return out
    starts = sorted(r.start_s for r in sent if r.start_s is not None)
    span = starts[-1] - starts[0]
    out["achieved_rate_rps"] = (len(starts) - 1) / span if span > 0 else None
    if open_loop:
        sched = sorted(r.scheduled_s for r in sent)
        sched_span = sched[-1] - sched[0]
        if sched_span > 0 and out["achieved_rate_rps"]:
            out["scheduled_rate_rps"] = (len(sched) - 1) / sched_span
            out["rate_error_fraction"] = out["achieved_rate_rps"] / out["scheduled_rate_rps"] - 1
    return out


def _steady_throughput(sent: Sequence[RequestRecord], ok: Sequence[RequestRecord]) -> float | None:
    """Completions per second inside the send window once the pipeline has filled.

    NOTE(bench): under overload an open-loop run's queue grows, so completions over the whole run
    (including the drain) understate capacity and ramp-up overstates it. Counting completions
    between ``first send + warm-up`` and ``last send`` measures the server's service rate; the
    warm-up is the larger of 20 % of the window and the median e2e latency.
    """
    starts = [r.start_s for r in sent if r.start_s is not None]
    if len(starts) < 2 or not ok:
        return None
    t_first, t_last = min(starts), max(starts)
    e2e_med = float(np.median([r.e2e_s for r in ok if r.e2e_s is not None]))
    t_a = t_first + max(0.2 * (t_last - t_first), e2e_med)
    if t_last - t_a < 0.25 * (t_last - t_first) or t_last <= t_a:
        return None
    n = sum(1 for r in ok if (e := r.end_s) is not None and t_a <= e <= t_last)
    return n / (t_last - t_a)


def _token_error(ok: Sequence[RequestRecord], which: str) -> float | None:
    errs: list[float] = []
    for r in ok:
        if which == "input":
            if r.prompt_tokens is None or not r.target_input_tokens:
                continue
            errs.append(abs(r.prompt_tokens - r.target_input_tokens) / r.target_input_tokens)
        elif r.usage_reported and r.target_output_tokens:
            errs.append(abs(r.output_tokens - r.target_output_tokens) / r.target_output_tokens)
    return float(np.mean(errs)) if errs else None
