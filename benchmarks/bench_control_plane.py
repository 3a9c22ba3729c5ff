"""The control plane under a synthetic load, in process (FastAPI TestClient, SQLite in a temp dir).

64 servers (512 cards: 40 RNGD, 12 ATOM, 12 H100 servers of 8), 20 tenants in 2 cohorts with
nominal quotas summing to the fleet, then 400 job submissions, each followed by the admission
cycle the API runs after every change. Reports submit latency (p50/p95, which includes that
cycle), one explicit cycle over the resulting store, and list endpoints. The load is synthetic
(seeded) and describes no real center. ``--postgres URL`` runs it against PostgreSQL instead.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result
from fastapi.testclient import TestClient

from npucenter.api import create_app
from npucenter.settings import Settings

ADMIN = "npc_bench_admin_key_0123456789"
FLEET = {"rngd": 40, "atom": 12, "h100": 12}
NUM_TENANTS = 20
NUM_JOBS = 400
TARGET_SUBMIT_P95_S = 0.5  # an interactive bound for one submission including its cycle


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--postgres", default=None, help="PostgreSQL URL (default: SQLite).")
    parser.add_argument("--jobs", type=int, default=NUM_JOBS)
    args = parser.parse_args()
    rng = random.Random(6)
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=Path(tmp), database_url=args.postgres or "", admin_key=ADMIN)
        app = create_app(settings)
        with TestClient(app, headers={"Authorization": f"Bearer {ADMIN}"}) as api:
            for device, n in FLEET.items():
                for i in range(n):
                    api.post(
                        "/api/servers",
                        json={"name": f"{device}-{i}", "device_type": device, "num_cards": 8},
                    ).raise_for_status()
            tenants = [f"t{i:02d}" for i in range(NUM_TENANTS)]
            for i, name in enumerate(tenants):
                kind = ("company", "university", "research_institute")[i % 3]
                api.post("/api/tenants", json={"name": name, "kind": kind}).raise_for_status()
                for device, n in FLEET.items():
                    api.put(
                        "/api/quotas",
                        json={
                            "tenant": name,
                            "device_type": device,
                            "nominal_cards": n * 8 // NUM_TENANTS,
                            "cohort": f"c{i % 2}",
                            "priority_class": "production" if kind == "company" else "research",
                        },
                    ).raise_for_status()
            submit_s = []
            for j in range(args.jobs):
                body = {
                    "name": f"job{j}",
                    "kind": rng.choice(["finetune", "preprocess", "benchmark"]),
                    "device_type": rng.choice(list(FLEET)),
                    "num_cards": rng.choice([1, 2, 4, 8]),
                    "image": "img",
                    "tenant": rng.choice(tenants),
                }
                dt, resp = _timed(lambda body=body: api.post("/api/jobs", json=body))
                resp.raise_for_status()
                submit_s.append(dt)
            cycle_s, report = _timed(lambda: api.post("/api/admission/cycle").json())
            list_jobs_s, jobs = _timed(lambda: api.get("/api/jobs").json())
            list_servers_s, _ = _timed(lambda: api.get("/api/servers").json())
            list_quotas_s, _ = _timed(lambda: api.get("/api/quotas").json())
        app.state.control.db.dispose()
    states: dict[str, int] = {}
    for job in jobs:
        states[job["state"]] = states.get(job["state"], 0) + 1
    p50 = statistics.median(submit_s)
    p95 = statistics.quantiles(submit_s, n=20)[-1]
    result = {
        "backend": "postgresql" if args.postgres else "sqlite",
        "num_cards": 8 * sum(FLEET.values()),
        "num_tenants": NUM_TENANTS,
        "num_jobs": args.jobs,
        "submit_p50_s": p50,
        "submit_p95_s": p95,
        "target_submit_p95_s": TARGET_SUBMIT_P95_S,
        "meets_target": p95 < TARGET_SUBMIT_P95_S,
        "cycle_s": cycle_s,
        "cycle_num_pending": report["num_still_pending"],
        "list_jobs_s": list_jobs_s,
        "list_servers_s": list_servers_s,
        "list_quotas_s": list_quotas_s,
        "job_states": states,
    }
    path = write_result("control_plane", result)
    print(
        f"control plane ({result['backend']}, {result['num_cards']} cards, {args.jobs} jobs): "
        f"submit p50 {p50 * 1e3:.1f} ms, p95 {p95 * 1e3:.1f} ms "
        f"(target < {TARGET_SUBMIT_P95_S * 1e3:.0f} ms: {'ok' if result['meets_target'] else 'MISSED'}); "
        f"cycle {cycle_s * 1e3:.1f} ms with {report['num_still_pending']} pending; "
        f"list jobs {list_jobs_s * 1e3:.1f} ms, servers {list_servers_s * 1e3:.1f} ms, "
        f"quotas {list_quotas_s * 1e3:.1f} ms; states {states} -> {path}"
    )


if __name__ == "__main__":
    main()
