"""µs per routing decision against the number of replicas: a scan of the snapshot vs the index.

Synthetic (seeded) and describing no real center: one model served by N replicas, 80 % RNGD
(NPU) and 20 % H100 (GPU), with the catalog's performance models. Each decision first changes
one random replica's state (what a replica step does in the twin, or a request starting or
ending in the gateway), then routes one request:

- ``scan`` (before): the caller builds the snapshot tuple of every replica, the policy filters
  and scans it (what ``sim.Center`` and the gateway did per request);
- ``index`` (after): ``ReplicaIndex.update`` of the changed replica, then ``policy.route`` of a
  snapshot carrying the index (what the twin does since the index landed, and the gateway).

Both runs make the same decisions (checked). A last row times the live gateway's pool the same
way (a request taken and one released per decision). Target (issue 18): per-decision cost at 1,200
replicas within 1.3x of 12 for the indexed policies. Prefix affinity and slo-aware with a TPOT
limit (scores no ordering holds) answer from the index's column views: still a pass over the
model's candidates, but vector operations on float columns the replicas keep current, not
Python per replica.

A "flip" case (run first; ``--flip-only`` runs only it) times what the live gateway does under
load, where "healthy" means "has a free slot": one replica's health alternates, then one request
is routed on the index (round-robin, and the two column-view policies), at 1,200 and 10,000
replicas. It prints a digest of the picks: run it against another tree's ``src`` (PYTHONPATH)
to compare before/after, same digests meaning the same decisions.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result

from npucenter.catalog import default_catalog
from npucenter.clock import FakeClock
from npucenter.gateway.pool import Replica, ReplicaEndpoint, UpstreamPool
from npucenter.gateway.routing import make_router
from npucenter.perf import build_perf_model
from npucenter.policy.routing import (
    PerfEstimator,
    ReplicaIndex,
    ReplicaState,
    RouteRequest,
    RoutingContext,
    RoutingSnapshot,
    make_routing_policy,
)

SIZES = (12, 1_200, 10_000)
POLICIES = (
    ("least-outstanding-tokens", False),
    ("least-requests", False),
    ("round-robin", False),
    ("npu-first", False),
    ("slo-aware", False),  # TTFT limit only: indexed
    ("slo-aware", True),  # TTFT and TPOT limits: column views (a vector scan)
    ("prefix-affinity", False),
)
TARGET_RATIO = 1.3


def _ids(n: int) -> list[tuple[str, str]]:
    return [(f"r{i:05d}", "gpu" if i % 5 == 4 else "npu") for i in range(n)]


def _random_state(rng: random.Random, rid: str, kind: str) -> ReplicaState:
    running = rng.randrange(0, 64)
    return ReplicaState(
        replica_id=rid,
        model_id="llama-3.1-8b",
        device_id="rngd" if kind == "npu" else "h100-sxm",
        device_kind=kind,
        num_running=running,
        num_waiting=rng.randrange(0, 4),
        outstanding_tokens=running * rng.randrange(50, 400),
        queued_prefill_tokens=rng.choice((0, 0, rng.randrange(1, 8000))),
        kv_used_fraction=rng.random(),
    )


def _run(
    name: str, with_tpot: bool, n: int, num_decisions: int, indexed: bool, seed: int
) -> tuple[float, list[str | None]]:
    catalog = default_catalog()
    npu = build_perf_model(catalog, model="llama-3.1-8b", device="rngd")
    gpu = build_perf_model(catalog, model="llama-3.1-8b", device="h100-sxm")
    ids = _ids(n)
    estimator = PerfEstimator({rid: npu if kind == "npu" else gpu for rid, kind in ids})
    context = RoutingContext(
        estimator=estimator, ttft_slo_s=0.5, tpot_slo_s=0.1 if with_tpot else None
    )
    policy = make_routing_policy(name, context)
    rng = random.Random(seed)
    states = [_random_state(rng, rid, kind) for rid, kind in ids]
    index = ReplicaIndex(states)
    live = RoutingSnapshot(now_s=0.0, replicas=index.states, index=index)
    changes = [rng.randrange(n) for _ in range(num_decisions)]
    new_states = [_random_state(rng, *ids[i]) for i in changes]
    states = list(states)
    requests = [
        RouteRequest(
            request_id=str(k),
            model_id="llama-3.1-8b",
            prompt_tokens=rng.randrange(16, 4096),
            max_output_tokens=256,
            prefix_hashes=(rng.randrange(8),),
        )
        for k in range(num_decisions)
    ]
    chosen: list[str | None] = []
    # warm caches and build the policy's views outside the timed loop; the same policy object
    # is timed (a fresh one would build its views, kept under its own name, in the loop). Both
    # modes make this same call, so their policies start from the same state.
    policy.route(live, requests[0])
    start = time.process_time()  # CPU time: other load on a shared machine does not count
    for k in range(num_decisions):
        if indexed:
            index.update(changes[k], new_states[k])
            snapshot = RoutingSnapshot(now_s=float(k), replicas=index.states, index=index)
            decision = policy.route(snapshot, requests[k])
        else:
            states[changes[k]] = new_states[k]
            snapshot = RoutingSnapshot(now_s=float(k), replicas=tuple(states))
            decision = policy.route(snapshot, requests[k])
        chosen.append(decision.replica_id)
    elapsed = time.process_time() - start
    return elapsed / num_decisions * 1e6, chosen


def _gateway(n: int, num_decisions: int, indexed: bool, seed: int) -> tuple[float, list[str]]:
    """The live gateway's pool: a request taken (routed, slot held) and one released per
    decision, least-outstanding-tokens; ``indexed``: ``PolicyRouter.pick`` on the pool's
    index, else the scan it replaced (the free replicas listed, then a snapshot of them)."""
    clock = FakeClock()
    pool = UpstreamPool(
        clock,
        [
            ReplicaEndpoint(
                replica_id=rid,
                base_url="http://127.0.0.1:9",
                model_id="llama-3.1-8b",
                device_kind=kind,
                max_inflight=8,
            )
            for rid, kind in _ids(n)
        ],
    )
    router = make_router("least-outstanding-tokens", clock)
    rng = random.Random(seed)
    held: list[tuple[Replica, int]] = []
    chosen: list[str] = []
    start = time.process_time()
    for k in range(num_decisions):
        request = RouteRequest(
            request_id=str(k),
            model_id="llama-3.1-8b",
            prompt_tokens=rng.randrange(16, 4096),
            max_output_tokens=256,
        )
        if indexed:
            replica = router.pick(pool, request)
        else:
            free = [r for r in pool.replicas("llama-3.1-8b") if r.has_slot()]
            replica = router.choose(free, request) if free else None
        if replica is not None:
            tokens = request.prompt_tokens + 256
            replica.inflight += 1
            replica.outstanding_tokens += tokens
            held.append((replica, tokens))
            chosen.append(replica.replica_id)
        if held and (len(held) > n * 4 or rng.random() < 0.5):
            done, tokens = held.pop(rng.randrange(len(held)))
            done.inflight -= 1
            done.outstanding_tokens -= tokens
    elapsed = time.process_time() - start
    return elapsed / num_decisions * 1e6, chosen


FLIP_SIZES = (1_200, 10_000)
FLIP_POLICIES = (
    ("round-robin", False),  # ReplicaIndex.members
    ("slo-aware", True),  # column view's members
    ("prefix-affinity", False),  # column view's members
)


def _flip(name: str, with_tpot: bool, n: int, num_decisions: int, seed: int) -> tuple[float, str]:
    """One replica's health alternates (a slot taken and freed in the gateway), then one request
    is routed on the index: µs per flip + decision, and a digest of the picks."""
    catalog = default_catalog()
    npu = build_perf_model(catalog, model="llama-3.1-8b", device="rngd")
    gpu = build_perf_model(catalog, model="llama-3.1-8b", device="h100-sxm")
    ids = _ids(n)
    estimator = PerfEstimator({rid: npu if kind == "npu" else gpu for rid, kind in ids})
    context = RoutingContext(
        estimator=estimator, ttft_slo_s=0.5, tpot_slo_s=0.1 if with_tpot else None
    )
    policy = make_routing_policy(name, context)
    rng = random.Random(seed)
    index = ReplicaIndex([_random_state(rng, rid, kind) for rid, kind in ids])
    flipped = rng.randrange(n)
    up = index.states[flipped]
    down = dataclasses.replace(up, healthy=False)
    requests = [
        RouteRequest(
            request_id=str(k),
            model_id="llama-3.1-8b",
            prompt_tokens=rng.randrange(16, 4096),
            max_output_tokens=256,
            prefix_hashes=(rng.randrange(8),),
        )
        for k in range(num_decisions)
    ]
    policy.route(RoutingSnapshot(now_s=0.0, replicas=index.states, index=index), requests[0])
    chosen: list[str | None] = []
    start = time.process_time()
    for k in range(num_decisions):
        index.update(flipped, down if k % 2 == 0 else up)
        snapshot = RoutingSnapshot(now_s=float(k), replicas=index.states, index=index)
        chosen.append(policy.route(snapshot, requests[k]).replica_id)
    elapsed = time.process_time() - start
    digest = hashlib.sha256("\n".join(str(c) for c in chosen).encode()).hexdigest()[:12]
    return elapsed / num_decisions * 1e6, digest


def _flip_rows(decisions: int, repeats: int, seed: int) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for name, with_tpot in FLIP_POLICIES:
        label = name + (" (TTFT+TPOT limits)" if with_tpot else "")
        row: dict[str, object] = {"policy": label + " [flip]"}
        for n in FLIP_SIZES:
            count = decisions if n <= 1_200 else max(200, decisions // 10)
            runs = [_flip(name, with_tpot, n, count, seed) for _ in range(repeats)]
            row[f"flip_us_{n}"] = round(min(us for us, _ in runs), 2)
            row[f"picks_sha_{n}"] = runs[0][1]
        rows.append(row)
        print(
            f"{row['policy']:42s} flip+decision µs "
            + " ".join(
                f"{n}: {row[f'flip_us_{n}']:>8} ({row[f'picks_sha_{n}']})" for n in FLIP_SIZES
            )
        )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--decisions", type=int, default=3000, help="decisions per measurement")
    parser.add_argument("--repeats", type=int, default=3, help="best of this many runs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--flip-only",
        action="store_true",
        help="only the flip case (run it against another tree's src to compare, picks by digest)",
    )
    args = parser.parse_args()
    flips = _flip_rows(args.decisions, args.repeats, args.seed)
    if args.flip_only:
        return 0
    rows: list[dict[str, object]] = []
    ok = True
    for name, with_tpot in POLICIES:
        label = name + (" (TTFT+TPOT limits)" if with_tpot else "")
        row: dict[str, object] = {"policy": label}
        for n in SIZES:
            decisions = args.decisions if n <= 1_200 else max(200, args.decisions // 10)
            for mode in ("scan", "index"):
                best = float("inf")
                picks: list[str | None] = []
                for _ in range(args.repeats):
                    us, picks = _run(name, with_tpot, n, decisions, mode == "index", args.seed)
                    best = min(best, us)
                row[f"{mode}_us_{n}"] = round(best, 2)
                row[f"_{mode}_picks_{n}"] = picks
            if row[f"_scan_picks_{n}"] != row[f"_index_picks_{n}"]:
                print(f"DECISIONS DIFFER: {label} at {n} replicas", file=sys.stderr)
                ok = False
        for n in SIZES:
            del row[f"_scan_picks_{n}"], row[f"_index_picks_{n}"]
        row["index_ratio_1200_vs_12"] = round(
            float(row["index_us_1200"]) / float(row["index_us_12"]),
            2,  # type: ignore[arg-type]
        )
        row["scan_ratio_1200_vs_12"] = round(
            float(row["scan_us_1200"]) / float(row["scan_us_12"]),
            2,  # type: ignore[arg-type]
        )
        rows.append(row)
        print(
            f"{label:42s} scan µs {row['scan_us_12']:>8} {row['scan_us_1200']:>9} "
            f"{row['scan_us_10000']:>9} | index µs {row['index_us_12']:>6} "
            f"{row['index_us_1200']:>6} {row['index_us_10000']:>6} "
            f"(x{row['index_ratio_1200_vs_12']} 12->1,200)"
        )
    gateway: dict[str, object] = {"policy": "least-outstanding-tokens (gateway pool)"}
    for n in SIZES:
        decisions = args.decisions if n <= 1_200 else max(200, args.decisions // 10)
        picks = {}
        for mode in ("scan", "index"):
            best = min(
                _gateway(n, decisions, mode == "index", args.seed)[0] for _ in range(args.repeats)
            )
            gateway[f"{mode}_us_{n}"] = round(best, 2)
            picks[mode] = _gateway(n, min(decisions, 300), mode == "index", args.seed)[1]
        if picks["scan"] != picks["index"]:
            print(f"DECISIONS DIFFER: gateway pool at {n} replicas", file=sys.stderr)
            ok = False
    gateway["index_ratio_1200_vs_12"] = round(
        float(gateway["index_us_1200"]) / float(gateway["index_us_12"]),  # type: ignore[arg-type]
        2,
    )
    print(
        f"{gateway['policy']:42s} scan µs {gateway['scan_us_12']:>8} "
        f"{gateway['scan_us_1200']:>9} {gateway['scan_us_10000']:>9} | index µs "
        f"{gateway['index_us_12']:>6} {gateway['index_us_1200']:>6} "
        f"{gateway['index_us_10000']:>6} (x{gateway['index_ratio_1200_vs_12']} 12->1,200)"
    )
    rows.append(gateway)
    path = write_result(
        "routing",
        {
            "what": "µs per routing decision (one replica state change + one route), "
            "scan of a snapshot vs ReplicaIndex; columns are replica counts",
            "sizes": list(SIZES),
            "target_ratio_1200_vs_12": TARGET_RATIO,
            "decisions_per_measurement": args.decisions,
            "same_decisions": ok,
            "rows": rows,
            "flip_rows": flips,
            "flip_what": "µs per flip + decision: one replica's health alternates, then one "
            "request is routed on the index (picks_sha: digest of the picks)",
            "measured_on": "this machine: CPU time of the benchmark process, best of repeats",
        },
    )
    print(f"wrote {path}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
