"""What sharing a tenant's token bucket across gateways costs per request (gateway/lease.py).

Several gateways lease slices of a tenant's bucket from the database; one gateway alone keeps it
in memory. Measured: one lease (a locked read-modify-write of the bucket row, its own
transaction) in wall and CPU time; then ``BudgetBook.reserve`` + ``reconcile`` per request with
the bucket in memory, leased one second of rate at a time (the live center's setting) and
leased on every request (the worst case: ``lease_s`` 0). SQLite in a temporary directory unless
``--database-url`` names another database (PostgreSQL: the live multi-gateway case).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result

from npucenter.gateway.auth import Principal, TenantLimits
from npucenter.gateway.budget import BudgetBook
from npucenter.gateway.lease import LeaseBook
from npucenter.live.leader import DatabaseBuckets, WallClock
from npucenter.store import Database, coordination, upgrade


def _per_request(book: BudgetBook, tenant: str, n: int) -> tuple[float, float]:
    p = Principal(key_id="k", tenant=tenant, limits=TenantLimits(tokens_per_s=100_000.0))
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(n):
        book.reconcile(book.reserve(p, 100), 80)
    return (
        (time.perf_counter() - wall) / n * 1e6,
        (time.process_time() - cpu) / n * 1e6,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--requests", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = args.database_url or f"sqlite:///{Path(tmp) / 'lease.db'}"
        upgrade(url)
        db = Database(url)
        backend = "postgresql" if coordination.is_postgres(url) else "sqlite"
        walls, cpus = [], []
        for _ in range(200):
            w, c = time.perf_counter(), time.process_time()
            coordination.lease(
                db, "bench/tokens", rate_per_s=1e6, burst=1e7, need=1, want=1, now_s=time.time()
            )
            walls.append((time.perf_counter() - w) * 1e6)
            cpus.append((time.process_time() - c) * 1e6)
        rows = {}
        for name, lease_s in (
            ("in_memory", None),
            ("leased_1s", 1.0),
            ("leased_every_request", 0.0),
        ):
            book = BudgetBook(WallClock())
            if lease_s is not None:
                book.leases = LeaseBook(DatabaseBuckets(db), WallClock(), lease_s=lease_s)
            wall_us, cpu_us = _per_request(book, f"t-{name}-{time.time_ns()}", args.requests)
            rows[name] = {
                "wall_us_per_request": round(wall_us, 1),
                "cpu_us_per_request": round(cpu_us, 1),
                "leases": book.leases.num_leases if book.leases is not None else 0,
            }
        db.dispose()
    data = {
        "backend": backend,
        "requests": args.requests,
        "tokens_per_request": 100,
        "tenant_tokens_per_s": 100_000.0,
        "lease_wall_us_median": round(statistics.median(walls), 1),
        "lease_cpu_us_median": round(statistics.median(cpus), 1),
        "per_request": rows,
    }
    path = write_result(f"lease_{backend}", data)
    print(path)
    for name, row in rows.items():
        print(f"{name:22s} {row}")
    print(
        f"one lease: {data['lease_wall_us_median']} us wall, {data['lease_cpu_us_median']} us CPU"
    )


if __name__ == "__main__":
    main()
