"""The console's pages against the issue's budget: under 300 ms each with 360 replicas, 200 tenants.

A center in process (SQLite in a temporary directory, this machine): 45 servers of 8 h100 cards,
200 tenants with a quota of 2 cards each, 180 deployments of 2 replicas (360 replicas, placed by
the admission cycle), one queued job per tenant and 20,000 gateway ledger rows (written in bulk
as the gateway writes them: three models and an adapter, one row every 0.5 s); then each page is
fetched through the ASGI app (TestClient: no network) as the admin and as one tenant,
``--repeat`` times; the median and the max milliseconds per page (and the process's CPU milliseconds, every
thread's: what the page costs whatever else the machine runs) are written to
bench/results/bench_console.json, with the machine's load average before and after.

In the same run, the usage totals two ways (``usage_totals``): reading the whole ledger through
``GET /api/usage``'s function and summing in Python (what the usage page and
``/api/usage/summary`` did before) against ``GET /api/usage/summary``'s function (the store's
GROUP BY query).
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result
from fastapi.testclient import TestClient

from npucenter.api import create_app
from npucenter.api.context import RequestContext
from npucenter.api.routes import usage as usage_routes
from npucenter.settings import Settings
from npucenter.store.ledger import RequestUsage
from npucenter.web.console import install_console

ADMIN = "npc_bench_console_admin_key_0123456789"
PAGES = (
    "/console/usage",
    "/console/quotas",
    "/console/keys",
    "/console/deployments",
    "/console/deployments/1",
    "/console/jobs",
    "/console/data",
    "/console/fleet",
    "/console/tenants",
    "/console/queue",
    "/console/twin",
    "/console/results",
)
ADMIN_ONLY = ("/console/tenants",)  # a tenant gets 403 there (deployment 1 is t000's: the tenant's)
# the gateway's services: three models and an adapter (a service name of its own)
SERVICES = ("llama-3.1-8b", "qwen-2.5-7b", "mistral-7b", "llama-3.1-8b:lab-support")


def _populate(client: TestClient, *, tenants: int, servers: int, usage_rows: int) -> str:
    for s in range(servers):
        client.post("/api/servers", json={"name": f"s{s}", "device_type": "h100", "num_cards": 8})
    key = ""
    for t in range(tenants):
        name = f"t{t:03d}"
        client.post("/api/tenants", json={"name": name, "kind": "company"})
        client.put("/api/quotas", json={"tenant": name, "device_type": "h100", "nominal_cards": 2})
        made = client.post("/api/keys", json={"tenant": name}).json()
        key = key or made["key"]
    for d in range(180):
        client.post(
            "/api/deployments",
            json={
                "name": f"d{d}",
                "model": "llama-3.1-8b",
                "device_type": "h100",
                "replicas": 2,
                "tenant": f"t{d:03d}",
            },
        )
    for t in range(tenants):
        client.post(
            "/api/jobs",
            json={
                "name": f"j{t}",
                "kind": "benchmark",
                "device_type": "h100",
                "command": ["true"],
                "tenant": f"t{t:03d}",
            },
        )
    _fill_ledger(client.app, tenants=tenants, rows=usage_rows)  # type: ignore[arg-type]
    return key


def _fill_ledger(app: object, *, tenants: int, rows: int) -> None:
    """``rows`` gateway rows, round-robin over tenants and services, one every 0.5 s, in bulk."""
    control = app.state.control  # type: ignore[attr-defined]
    with control.tx() as repo:
        ids = {t.name: t.id for t in repo.list_tenants()}
        tenant_ids = [ids[f"t{t:03d}"] for t in range(tenants)]
        start_s = control.now_s() - rows * 0.5
        batch = [
            RequestUsage(
                request_id=f"bench-{i}",
                tenant_id=tenant_ids[i % tenants],
                device_type="h100",
                device_seconds=0.2,
                tokens_in=100,
                tokens_out=20,
                energy_j=140.0,
                cost_usd=0.2 * 2.0 / 3600.0,
                ref=f"/v1/chat/completions {SERVICES[i % len(SERVICES)]} 200 bench-{i} k r",
                at_s=start_s + i * 0.5,
            )
            for i in range(rows)
        ]
        repo.append_request_rows(batch)


def _median_ms(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000.0)
    return round(statistics.median(times), 1)


def _usage_totals(app: object, repeat: int) -> dict[str, float]:
    """The admin's usage totals by tenant, kind and model: whole ledger read vs GROUP BY."""
    control = app.state.control  # type: ignore[attr-defined]
    ctx = RequestContext(control=control, principal=control.authenticate(ADMIN))

    def ledger_read() -> object:  # the former way: every row, then Python
        rows = usage_routes.list_usage(tenant=None, kind=None, since_s=None, limit=100_000, ctx=ctx)
        totals: dict[tuple[str, str, str], list[float]] = defaultdict(lambda: [0.0] * 6)
        for r in rows:
            parts = r.ref.split()
            t = totals[(r.tenant, r.kind, parts[1] if len(parts) > 1 else "")]
            for i, v in enumerate(
                (r.tokens_in, r.tokens_out, r.device_seconds, r.energy_j, r.cost_usd or 0.0, 1)
            ):
                t[i] += v
        return totals

    def summary() -> object:
        return usage_routes.usage_summary(by="tenant,kind,model", ctx=ctx)

    return {
        "ledger_read_median_ms": _median_ms(ledger_read, repeat),
        "summary_query_median_ms": _median_ms(summary, repeat),
    }


def _sign_in(app: object, key: str) -> TestClient:
    browser = TestClient(app, base_url="https://testserver", follow_redirects=False)  # type: ignore[arg-type]
    form = browser.get("/console/login").text
    csrf = re.search(r'name="csrf" value="([^"]+)"', form).group(1)  # type: ignore[union-attr]
    browser.post("/console/login", data={"csrf": csrf, "key": key})
    return browser


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tenants", type=int, default=200)
    parser.add_argument("--servers", type=int, default=45)
    parser.add_argument("--usage-rows", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(
            data_dir=Path(tmp), database_url=f"sqlite:///{tmp}/c.db", admin_key=ADMIN
        )
        app = create_app(settings)
        install_console(app)
        api = TestClient(app, headers={"authorization": f"Bearer {ADMIN}"})
        t0 = time.perf_counter()
        tenant_key = _populate(
            api, tenants=args.tenants, servers=args.servers, usage_rows=args.usage_rows
        )
        setup_s = time.perf_counter() - t0
        placed = sum(d["num_placed_replicas"] for d in api.get("/api/deployments").json())
        pages: dict[str, dict[str, float]] = {}
        load_before = os.getloadavg()
        for who, key in (("admin", ADMIN), ("tenant", tenant_key)):
            browser = _sign_in(app, key)
            for path in PAGES:
                if who == "tenant" and path in ADMIN_ONLY:
                    continue
                times, cpu = [], []
                for _ in range(args.repeat):
                    start, start_cpu = time.perf_counter(), time.process_time()
                    response = browser.get(path)
                    times.append((time.perf_counter() - start) * 1000.0)
                    cpu.append((time.process_time() - start_cpu) * 1000.0)  # every thread's
                    assert response.status_code == 200, (path, response.status_code)
                pages[f"{who} {path}"] = {
                    "median_ms": round(statistics.median(times), 1),
                    "max_ms": round(max(times), 1),
                    "cpu_median_ms": round(statistics.median(cpu), 1),
                    "bytes": len(response.content),
                }
                print(
                    f"{who:6} {path:24} median {statistics.median(times):7.1f} ms  "
                    f"max {max(times):7.1f} ms  cpu {statistics.median(cpu):6.1f} ms  "
                    f"{len(response.content):>8,} bytes"
                )
        totals = _usage_totals(app, args.repeat)
        load_after = os.getloadavg()
        print(
            f"usage totals: whole ledger read {totals['ledger_read_median_ms']} ms, "
            f"summary query {totals['summary_query_median_ms']} ms (medians)"
        )
        app.state.control.db.dispose()
    slowest = max(pages, key=lambda k: pages[k]["median_ms"])
    out = write_result(
        "bench_console",
        {
            "tenants": args.tenants,
            "cards": args.servers * 8,
            "replicas_placed": placed,
            "usage_rows": args.usage_rows,
            "setup_s": round(setup_s, 1),
            "pages": pages,
            "slowest_page": {"page": slowest, **pages[slowest]},
            "all_medians_under_300_ms": all(p["median_ms"] < 300 for p in pages.values()),
            "usage_totals": totals,
            "load_average_1m": {
                "before": round(load_before[0], 2),
                "after": round(load_after[0], 2),
            },
            "cpus": os.cpu_count(),
            "note": "measured on this machine (shared CPU), SQLite, in-process ASGI client",
        },
    )
    print(f"{placed} replicas placed; written {out}")


if __name__ == "__main__":
    main()
