"""The console's pages against the issue's budget: under 300 ms each with 360 replicas, 200 tenants.

A center in process (SQLite in a temporary directory, this machine): 45 servers of 8 h100 cards,
200 tenants with a quota of 2 cards each, 180 deployments of 2 replicas (360 replicas, placed by
the admission cycle), one queued job per tenant and 20,000 usage rows; then each page is fetched
through the ASGI app (TestClient: no network) as the admin and as one tenant, ``--repeat`` times;
the median and the max milliseconds per page are written to bench/results/bench_console.json.
"""

from __future__ import annotations

import argparse
import re
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
from npucenter.web.console import install_console

ADMIN = "npc_bench_console_admin_key_0123456789"
PAGES = (
    "/console/usage",
    "/console/quotas",
    "/console/keys",
    "/console/deployments",
    "/console/jobs",
    "/console/fleet",
    "/console/queue",
    "/console/results",
)


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
    for i in range(usage_rows):
        client.post(
            "/api/usage",
            json={
                "tenant": f"t{i % tenants:03d}",
                "kind": "tokens",
                "tokens_in": 100,
                "tokens_out": 20,
                "ref": f"/v1/chat/completions llama-3.1-8b 200 r{i} k r",
            },
        )
    return key


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
        for who, key in (("admin", ADMIN), ("tenant", tenant_key)):
            browser = _sign_in(app, key)
            for path in PAGES:
                times = []
                for _ in range(args.repeat):
                    start = time.perf_counter()
                    response = browser.get(path)
                    times.append((time.perf_counter() - start) * 1000.0)
                    assert response.status_code == 200, (path, response.status_code)
                pages[f"{who} {path}"] = {
                    "median_ms": round(statistics.median(times), 1),
                    "max_ms": round(max(times), 1),
                    "bytes": len(response.content),
                }
                print(
                    f"{who:6} {path:22} median {statistics.median(times):7.1f} ms  "
                    f"max {max(times):7.1f} ms  {len(response.content):>8,} bytes"
                )
        app.state.control.db.dispose()
    out = write_result(
        "bench_console",
        {
            "tenants": args.tenants,
            "cards": args.servers * 8,
            "replicas_placed": placed,
            "usage_rows": args.usage_rows,
            "setup_s": round(setup_s, 1),
            "pages": pages,
            "note": "measured on this machine (shared CPU), SQLite, in-process ASGI client",
        },
    )
    print(f"{placed} replicas placed; written {out}")


if __name__ == "__main__":
    main()
