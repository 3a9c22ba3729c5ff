"""Deterministic twin runs and a digest of their per-request output (the golden-file test's cases).

``tests/testdata/sim/per_request_digests.json`` holds the digests these cases gave before the
center's snapshots became incremental (see that file's ``made_with``); the test recomputes them.
Regenerate only when a change of per-request output is intended, and say why in the commit:

    PYTHONPATH=src .venv/bin/python tests/unit/sim/sim_digest.py --write
"""

from __future__ import annotations

import copy
import hashlib
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from npucenter.catalog import default_catalog
from npucenter.fleet.spec import FleetSpec, fleet_spec_from_mapping
from npucenter.sim.center import build_center
from npucenter.sim.results import SimResult
from npucenter.workload import (
    EmpiricalLengths,
    FixedLength,
    PoissonArrivals,
    Trace,
    read_azure_trace,
    synthetic_trace,
)

ROOT = Path(__file__).resolve().parents[3]
DIGESTS = ROOT / "tests" / "testdata" / "sim" / "per_request_digests.json"
POLICIES = (
    "round-robin",
    "least-outstanding-tokens",
    "least-requests",
    "npu-first",
    "slo-aware",
    "prefix-affinity",
)


def _fleet(name: str, *, scale: int = 1, **changes: Any) -> FleetSpec:
    data = yaml.safe_load((ROOT / "examples" / "fleets" / f"{name}.yaml").read_text())
    data = copy.deepcopy(data)
    for pool in data["servers"]:
        pool["count"] *= scale
    data.update(changes)
    return fleet_spec_from_mapping(data)


def _trace(num_requests: int, rate_scale: float, seed: int) -> Trace:
    conv = read_azure_trace("conv")
    return synthetic_trace(
        num_requests=num_requests,
        arrivals=PoissonArrivals(rate_rps=conv.mean_rate_rps * rate_scale),
        prompt=EmpiricalLengths.from_array(conv.prompt_tokens),
        output=EmpiricalLengths.from_array(conv.output_tokens),
        rng=np.random.default_rng(seed),
    )


def _mixed() -> FleetSpec:
    return fleet_spec_from_mapping(
        {
            "name": "mixed",
            "servers": [
                {"device": "rngd", "count": 2, "cards_per_server": 8},
                {"device": "h100", "count": 1, "cards_per_server": 8},
            ],
            "services": [
                {"service": "chat", "model": "llama-3.1-8b", "device": "rngd", "replicas": 6},
                {"service": "chat", "model": "llama-3.1-8b", "device": "h100", "role": "prefill"},
                {"service": "chat", "model": "llama-3.1-8b", "device": "h100", "replicas": 2},
                {
                    "service": "chat",
                    "model": "llama-3.1-8b",
                    "device": "rngd",
                    "role": "decode",
                    "replicas": 4,
                },
            ],
            "slo": "mlperf-llama-3.1-8b",
        }
    )


def _reclaim(replicas: int) -> FleetSpec:
    """acme's replicas borrow kaist's H100 cards; kaist's jobs take half back over [100, 150) s."""
    half = replicas // 2
    return fleet_spec_from_mapping(
        {
            "servers": [{"device": "h100", "count": replicas // 8, "cards_per_server": 8}],
            "services": [
                {"model": "llama-3.1-8b", "device": "h100", "replicas": replicas, "tenant": "acme"}
            ],
            "jobs": [
                {
                    "name": f"lora-{k}",
                    "tenant": "kaist",
                    "device": "h100",
                    "cards": 4,
                    "arrival_s": 100.0,
                    "duration_s": 50.0,
                }
                for k in range(half // 4)
            ],
            "tenants": {
                "acme": {"cohort": "c", "priority": "production", "nominal_cards": {"h100": half}},
                "kaist": {"cohort": "c", "priority": "research", "nominal_cards": {"h100": half}},
            },
        }
    )


def _fixed(num_requests: int, rate_rps: float, seed: int) -> Trace:
    return synthetic_trace(
        num_requests=num_requests,
        arrivals=PoissonArrivals(rate_rps=rate_rps),
        prompt=FixedLength(tokens=1000),
        output=FixedLength(tokens=200),
        rng=np.random.default_rng(seed),
    )


def cases() -> Iterator[tuple[str, Callable[[], SimResult]]]:
    """(name, run) of every case: fleets large enough to route among many replicas."""
    cat = default_catalog()

    def run(fleet: FleetSpec, policy: str, trace: Trace) -> Callable[[], SimResult]:
        return lambda: build_center(fleet, cat, policy=policy).run(trace)

    big = _fleet("gwangju-80-20", scale=4)  # 48 replicas of one service
    big_trace = _trace(3000, 4 * 1.5, seed=1)  # 1.5x the conv rate per replica: queues form
    for policy in POLICIES:
        yield f"80-20x4/{policy}", run(big, policy, big_trace)
    disagg = _fleet("disagg-h100-prefill-rngd-decode")
    for policy in ("least-outstanding-tokens", "npu-first"):
        yield f"disagg/{policy}", run(disagg, policy, _trace(1500, 2.0, seed=2))
    disagg8 = _fleet("disagg-h100-prefill-rngd-decode", scale=8)  # 32 prefill, 64 decode
    for policy in ("least-outstanding-tokens", "npu-first"):
        yield f"disagg-x8/{policy}", run(disagg8, policy, _trace(4000, 16.0, seed=6))
    # replicas preempted and readmitted for a job (8: pools scanned; 40: pools indexed)
    yield (
        "reclaim-8/least-outstanding-tokens",
        run(_reclaim(8), "least-outstanding-tokens", _fixed(1200, 6.0, 3)),
    )
    for policy in ("least-outstanding-tokens", "npu-first", "round-robin"):
        yield f"reclaim-40/{policy}", run(_reclaim(40), policy, _fixed(6000, 30.0, 7))
    jobs = _fleet("center-with-jobs")  # jobs beside replicas (no replica preempted)
    for policy in ("least-outstanding-tokens", "npu-first"):
        yield f"jobs/{policy}", run(jobs, policy, _trace(6000, 2.0, seed=3).scale_rate(0.25))
    two = _fleet("two-services")
    split = _trace(3000, 3.0, seed=4)
    split = split.split({s.name: s.traffic_share for s in two.services}, np.random.default_rng(4))
    for policy in ("npu-first", "slo-aware"):
        yield f"two-services/{policy}", run(two, policy, split)
    yield (
        "mixed/least-outstanding-tokens",
        run(_mixed(), "least-outstanding-tokens", _trace(2000, 3.0, 5)),
    )
    # bench_sim's fleet-size points on a short trace: x1 (12 replicas, pools scanned) and x100
    # (1,200 replicas, pools indexed), the same traffic per replica (its four policies)
    for copies, per_replica in ((1, 50), (100, 5)):
        fleet = _fleet("gwangju-80-20", scale=copies)
        trace = _trace(12 * copies * per_replica, float(copies), seed=8)
        for policy in ("npu-first", "least-outstanding-tokens", "slo-aware", "prefix-affinity"):
            yield f"bench-x{copies}/{policy}", run(fleet, policy, trace)


def digest(result: SimResult) -> str:
    """SHA-256 of every per-request output array (replica, token times, preemptions, status)."""
    h = hashlib.sha256()
    for arr in (
        result.replica_index.astype(np.int64),
        result.first_token_s.astype(np.float64),
        result.finish_s.astype(np.float64),
        result.preemptions.astype(np.int64),
        result.rejected.astype(np.bool_),
        result.met_slo.astype(np.bool_),
    ):
        h.update(np.ascontiguousarray(arr).tobytes())
    h.update("\n".join(result.replica_ids).encode())
    return h.hexdigest()


def main(argv: list[str]) -> int:
    out = {name: digest(make()) for name, make in cases()}
    if "--write" in argv:
        import subprocess

        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=ROOT
        ).stdout.strip()
        doc = {
            "made_with": f"tests/unit/sim/sim_digest.py --write at commit {commit}",
            "digests": out,
        }
        DIGESTS.parent.mkdir(parents=True, exist_ok=True)
        DIGESTS.write_text(json.dumps(doc, indent=2) + "\n")
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
