"""The capacity planner end to end on the shipped Gwangju example (target: a verified plan < 60 s).

Runs exactly what ``npucenter plan --spec examples/plans/gwangju.yaml`` runs, in process: trace
statistics, simulator-backed profiles (bisection on rate), the MILP for the plan and the three
baselines, verification by simulation with re-solves, the Pareto front and the sensitivity table.
Also times one bare MILP solve. Writes ``bench/results/plan.json``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result

from npucenter.catalog import default_catalog
from npucenter.plan.planner import plan_capacity, spec_catalog
from npucenter.plan.profile import CachedProfile
from npucenter.plan.simulate import CenterVerifier, SimProfile
from npucenter.plan.spec import parse_plan_spec
from npucenter.plan.traffic import resolve_traffic

TARGET_S = 60.0
SPEC = Path(__file__).resolve().parents[1] / "examples" / "plans" / "gwangju.yaml"


def main() -> int:
    started = time.perf_counter()
    spec = parse_plan_spec(yaml.safe_load(SPEC.read_text(encoding="utf-8")))
    cat = spec_catalog(spec, default_catalog())
    traffic = resolve_traffic(spec)
    sim_profile = SimProfile(cat, spec, traffic=traffic)
    verifier = CenterVerifier(cat, spec)
    t_plan = time.perf_counter()
    result = plan_capacity(
        spec,
        catalog=cat,
        traffic=traffic,
        profile=CachedProfile(sim_profile),
        verifier=verifier,
        profile_source=sim_profile.describe(),
        verifier_source=verifier.describe(),
    )
    wall_s = time.perf_counter() - started
    plan = result.plan
    alloc = plan.allocation
    ok = plan.verified and wall_s < TARGET_S
    doc = {
        "spec": str(SPEC.relative_to(SPEC.parents[2])),
        "target_s": TARGET_S,
        "wall_s": wall_s,
        "plan_s": time.perf_counter() - t_plan,
        "verified": plan.verified,
        "passed": ok,
        "rounds": plan.rounds,
        "profile_simulations": sim_profile.num_simulations,
        "verification_simulations": verifier.num_simulations,
        "verifier": verifier.describe(),
        "candidates": len(result.profiles),
        "servers": dict(alloc.servers) if alloc else {},
        "npu_share": alloc.npu_share if alloc else None,
        "cost_per_hour": alloc.cost_usd_per_hour if alloc else None,
        "power_w": alloc.power_w if alloc else None,
        "slo_attainment": dict(plan.verification.slo_attainment) if plan.verification else {},
        "baselines": {
            name: {
                "verified": out.verified,
                "cost_per_hour": out.allocation.cost_usd_per_hour if out.allocation else None,
                "npu_share": out.allocation.npu_share if out.allocation else None,
            }
            for name, out in result.baselines.items()
        },
        "comparison": list(result.comparison),
    }
    path = write_result("plan", doc)
    print(
        f"plan gwangju: verified={plan.verified} in {wall_s:.1f} s (target < {TARGET_S:.0f} s), "
        f"{sim_profile.num_simulations} profile + {verifier.num_simulations} verification sims, "
        f"{doc['cost_per_hour']:.2f} USD/h, NPU share {doc['npu_share']:.0%} -> {path}"
        if alloc
        else f"plan gwangju: no feasible fleet ({plan.reason}) in {wall_s:.1f} s -> {path}"
    )
    for line in result.comparison[:3]:
        print(f"  {line}")
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
