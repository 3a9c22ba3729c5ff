"""Simulation results: per-request records and the summary (latency, goodput, energy, power).

The summary keys are a contract (docs/simulator.md): ``requests``, ``completed``, ``ttft_s``,
``tpot_s``, ``e2e_s`` (``p50``/``p90``/``p99``/``mean``), ``goodput_rps``, ``slo_attainment``,
``energy_j_per_output_token``, ``simulated_s``, ``wall_s`` (filled by the caller that measured
it; the core never reads a clock), plus throughput, utilisation and power over time.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import numpy.typing as npt

from npucenter.fleet.spec import FleetSpec
from npucenter.workload.slo import goodput_rps, latency_summary, meets_slo, slo_attainment
from npucenter.workload.trace import Trace

if TYPE_CHECKING:
    from npucenter.perf import PerfModel
    from npucenter.sim.replica import ReplicaCore


class SimReplica(Protocol):
    """What a result reads of a simulated replica (``sim.center.SimReplica`` is one; a
    protocol here keeps ``results`` below ``center`` with no import back)."""

    @property
    def replica_id(self) -> str: ...
    @property
    def service(self) -> str: ...
    @property
    def device_id(self) -> str: ...
    @property
    def device_kind(self) -> str: ...
    @property
    def role(self) -> str: ...
    @property
    def tp(self) -> int: ...
    @property
    def core(self) -> ReplicaCore: ...
    @property
    def perf(self) -> PerfModel: ...


__all__ = ["SimResult"]

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class SimResult:
    """What one simulation produced. Arrays are per request, in trace order."""

    trace: Trace
    fleet_name: str
    policy: str
    replica_ids: tuple[str, ...]
    replica_kinds: tuple[str, ...]
    replica_index: npt.NDArray[np.int64]  # -1: rejected
    first_token_s: FloatArray
    finish_s: FloatArray
    preemptions: npt.NDArray[np.int64]
    rejected: npt.NDArray[np.bool_]
    met_slo: npt.NDArray[np.bool_]
    simulated_s: float
    summary: dict[str, Any] = field(default_factory=dict)
    num_events: int = 0

    @property
    def completed(self) -> npt.NDArray[np.bool_]:
        """Requests that finished."""
        return np.isfinite(self.finish_s)

    @property
    def ttft_s(self) -> FloatArray:
        """Time to first token per request (NaN if it never got one)."""
        return self.first_token_s - self.trace.arrival_s

    @property
    def tpot_s(self) -> FloatArray:
        """Mean time per output token after the first (NaN for one-token outputs)."""
        out = self.trace.output_tokens.astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(out > 1, (self.finish_s - self.first_token_s) / (out - 1), np.nan)

    @property
    def e2e_s(self) -> FloatArray:
        """Arrival to last token."""
        return self.finish_s - self.trace.arrival_s

    def records(self) -> list[dict[str, Any]]:
        """One JSON-able dict per request (arrival, first token, finish, replica, SLO)."""
        tr = self.trace
        ttft, tpot, e2e = self.ttft_s, self.tpot_s, self.e2e_s
        out = []
        for i in range(len(tr)):
            rep = int(self.replica_index[i])
            out.append(
                {
                    "index": i,
                    "service": tr.service_names[int(tr.service_index[i])],
                    "tenant": tr.tenant_names[int(tr.tenant_index[i])],
                    "arrival_s": float(tr.arrival_s[i]),
                    "prompt_tokens": int(tr.prompt_tokens[i]),
                    "output_tokens": int(tr.output_tokens[i]),
                    "replica_id": self.replica_ids[rep] if rep >= 0 else None,
                    "first_token_s": _num(self.first_token_s[i]),
                    "finish_s": _num(self.finish_s[i]),
                    "ttft_s": _num(ttft[i]),
                    "tpot_s": _num(tpot[i]),
                    "e2e_s": _num(e2e[i]),
                    "preemptions": int(self.preemptions[i]),
                    "status": "rejected" if self.rejected[i] else "completed",
                    "met_slo": bool(self.met_slo[i]),
                }
            )
        return out

    @classmethod
    def build(
        cls,
        *,
        trace: Trace,
        fleet: FleetSpec,
        policy: str,
        replicas: Sequence[SimReplica],
        replica_index: npt.NDArray[np.int64],
        first_token_s: FloatArray,
        finish_s: FloatArray,
        preemptions: npt.NDArray[np.int64],
        rejected: npt.NDArray[np.bool_],
        simulated_s: float,
        timeline_bin_s: float,
        idle_power_unused_w: float,
        unused_cards: dict[str, int],
        assumptions: tuple[str, ...],
        num_events: int,
    ) -> SimResult:
        """Compute the summary from the raw arrays (used by ``Center.run``)."""
        ttft = first_token_s - trace.arrival_s
        out_tok = trace.output_tokens.astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            tpot = np.where(out_tok > 1, (finish_s - first_token_s) / (out_tok - 1), np.nan)
        completed = np.isfinite(finish_s)
        met = np.zeros(len(trace), dtype=bool)
        per_service: dict[str, Any] = {}
        for s_idx, name in enumerate(trace.service_names):
            mask = trace.service_index == s_idx
            if not mask.any():
                continue
            svc = fleet.service(name) if _has_service(fleet, name) else fleet.services[0]
            slo = svc.slo
            met[mask] = meets_slo(ttft[mask], tpot[mask], completed[mask], slo)
            q = 100 * slo.percentile
            ttft_q = _percentile(ttft[mask], q)
            tpot_q = _percentile(tpot[mask], q)
            per_service[svc.name] = {
                "requests": int(mask.sum()),
                "completed": int((completed & mask).sum()),
                "slo": {
                    "name": slo.name,
                    "ttft_s": slo.ttft_s,
                    "tpot_s": slo.tpot_s,
                    "percentile": slo.percentile,
                    "source": slo.source,
                },
                # MLPerf-style verdict: the SLO percentile of TTFT and of TPOT within the limits
                "ttft_s_at_slo_percentile": ttft_q,
                "tpot_s_at_slo_percentile": tpot_q,
                "meets_slo_at_percentile": bool(
                    completed[mask].all()
                    and ttft_q <= slo.ttft_s
                    and (math.isnan(tpot_q) or tpot_q <= slo.tpot_s)
                ),
                "ttft_s": latency_summary(ttft[mask]),
                "tpot_s": latency_summary(tpot[mask]),
                "goodput_rps": goodput_rps(met[mask], simulated_s),
                "slo_attainment": slo_attainment(met[mask]),
            }
        result = cls(
            trace=trace,
            fleet_name=fleet.name,
            policy=policy,
            replica_ids=tuple(r.replica_id for r in replicas),
            replica_kinds=tuple(r.device_kind for r in replicas),
            replica_index=replica_index,
            first_token_s=first_token_s,
            finish_s=finish_s,
            preemptions=preemptions,
            rejected=rejected,
            met_slo=met,
            simulated_s=simulated_s,
            num_events=num_events,
        )
        summary = _summary(
            result, replicas, per_service, simulated_s, timeline_bin_s, idle_power_unused_w
        )
        summary["unused_cards"] = unused_cards
        summary["assumptions"] = list(assumptions)
        result.summary.update(summary)
        return result


def _has_service(fleet: FleetSpec, name: str) -> bool:
    return any(s.name == name for s in fleet.services)


def _percentile(values: FloatArray, q: float) -> float:
    finite = values[np.isfinite(values)]
    return float(np.percentile(finite, q)) if finite.size else math.nan


def _num(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


def _summary(
    res: SimResult,
    replicas: Sequence[SimReplica],
    per_service: dict[str, Any],
    simulated_s: float,
    bin_s: float,
    idle_unused_w: float,
) -> dict[str, Any]:
    tr = res.trace
    completed = res.completed
    out_tokens = int(tr.output_tokens[completed].sum())
    in_tokens = int(tr.prompt_tokens[completed].sum())
    span = simulated_s if simulated_s > 0 else math.nan
    energy_busy = sum(r.core.energy_j for r in replicas)
    energy_idle = sum(r.perf.idle_power_w * max(0.0, simulated_s - r.core.busy_s) for r in replicas)
    energy = energy_busy + energy_idle + idle_unused_w * simulated_s
    util: dict[str, float] = {}
    for kind in ("npu", "gpu"):
        mine = [r for r in replicas if r.device_kind == kind]
        cards = sum(r.tp for r in mine)
        if cards and simulated_s > 0:
            util[kind] = sum(r.core.busy_s * r.tp for r in mine) / (cards * simulated_s)
    return {
        "fleet": res.fleet_name,
        "policy": res.policy,
        "trace": tr.name,
        "requests": len(tr),
        "completed": int(completed.sum()),
        "rejected": int(res.rejected.sum()),
        "preemptions": int(res.preemptions.sum()),
        "output_tokens": out_tokens,
        "tokens_emitted": sum(r.core.num_output_tokens for r in replicas),
        "ttft_s": latency_summary(res.ttft_s),
        "tpot_s": latency_summary(res.tpot_s),
        "e2e_s": latency_summary(res.e2e_s),
        "throughput": {
            "requests_per_s": int(completed.sum()) / span,
            "output_tokens_per_s": out_tokens / span,
            "input_tokens_per_s": in_tokens / span,
        },
        "goodput_rps": goodput_rps(res.met_slo, simulated_s),
        "slo_attainment": slo_attainment(res.met_slo),
        "services": per_service,
        "energy_j": energy,
        "energy_j_per_output_token": energy / out_tokens if out_tokens else math.nan,
        "mean_power_w": energy / span,
        "utilisation": util,
        "replicas": {
            kind: sum(1 for r in replicas if r.device_kind == kind) for kind in ("npu", "gpu")
        },
        "timeline": _timeline(replicas, simulated_s, bin_s, idle_unused_w),
        "per_replica": [
            {
                "replica_id": r.replica_id,
                "service": r.service,
                "role": r.role,
                "device_id": r.device_id,
                "device_kind": r.device_kind,
                "tp": r.tp,
                "busy_fraction": r.core.busy_s / simulated_s if simulated_s > 0 else 0.0,
                "energy_j": r.core.energy_j
                + r.perf.idle_power_w * max(0.0, simulated_s - r.core.busy_s),
                "output_tokens": r.core.num_output_tokens,
                "iterations": r.core.num_steps,
                "preemptions": r.core.num_preemptions,
            }
            for r in replicas
        ],
        "simulated_s": simulated_s,
        "num_events": res.num_events,
        "wall_s": None,
    }


def _timeline(
    replicas: Sequence[SimReplica], simulated_s: float, bin_s: float, idle_unused_w: float
) -> dict[str, Any]:
    nbins = max(1, math.ceil(simulated_s / bin_s)) if simulated_s > 0 else 1
    starts = np.arange(nbins) * bin_s
    widths = np.minimum(bin_s, np.maximum(simulated_s - starts, 1e-12))
    power = {"npu": np.zeros(nbins), "gpu": np.zeros(nbins)}
    busy = {"npu": np.zeros(nbins), "gpu": np.zeros(nbins)}
    cards = {"npu": 0, "gpu": 0}
    for r in replicas:
        e = np.zeros(nbins)
        b = np.zeros(nbins)
        m = min(nbins, len(r.core.energy_by_bin))
        e[:m] = r.core.energy_by_bin[:m]
        b[:m] = r.core.busy_by_bin[:m]
        idle = np.maximum(0.0, widths - b) * r.perf.idle_power_w
        power[r.device_kind] += (e + idle) / widths
        busy[r.device_kind] += b * r.tp
        cards[r.device_kind] += r.tp
    fleet_power = power["npu"] + power["gpu"] + idle_unused_w
    out: dict[str, Any] = {
        "bin_s": bin_s,
        "t_s": starts.tolist(),
        "fleet_power_w": fleet_power.tolist(),
        "npu_power_w": power["npu"].tolist(),
        "gpu_power_w": power["gpu"].tolist(),
    }
    for kind in ("npu", "gpu"):
        if cards[kind]:
            out[f"{kind}_utilisation"] = (busy[kind] / (cards[kind] * widths)).tolist()
    return out
