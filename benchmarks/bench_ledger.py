"""The usage ledger's cost per gateway request: the old per-row ORM path against journal + bulk.

Before (the gateway's ledger until this change): every buffered row became one ORM object and
one flush, in one transaction per flush batch. After: on the request path, two journal lines
(the reservation before the answer's last bytes, the settlement at its end: one ``os.write``
each); off it, one multi-row INSERT per batch and an fsync of the journal. Rows are synthetic;
SQLite in a temporary directory on this machine (``--database-url`` for another database).
Batches of 200 rows: the gateway's 0.2 s flush at 1,000 requests/s.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result

from npucenter.api.context import ControlPlane
from npucenter.gateway.usage import StoreLedger
from npucenter.metering.journal import UsageJournal
from npucenter.metering.ledger import UsageRecord
from npucenter.settings import Settings
from npucenter.store import Database, upgrade


def _records(prefix: str, n: int, tenant: str) -> list[UsageRecord]:
    return [
        UsageRecord(
            request_id=f"{prefix}-{time.time_ns()}-{i:08d}",
            tenant=tenant,
            key_id="key-1",
            service="llama-3.1-8b",
            endpoint="/v1/chat/completions",
            replica_id="rngd-0-r0",
            device_id="rngd",
            input_tokens=120,
            output_tokens=64,
            device_s=0.41,
            energy_j=61.5,
            cost_usd=0.0001,
            started_at_s=1.7e9 + i,
            duration_s=0.8,
        )
        for i in range(n)
    ]


def _old_append(control: ControlPlane, tenant_id: int, records: list[UsageRecord]) -> None:
    """The per-row path the gateway's ledger used before (one ORM object + flush a row)."""
    with control.tx() as repo:
        for r in records:
            repo.append_usage(
                tenant_id=tenant_id,
                kind="tokens",
                device_type=r.device_id or None,
                device_seconds=r.device_s,
                tokens_in=r.input_tokens,
                tokens_out=r.output_tokens,
                energy_j=r.energy_j,
                cost_usd=r.cost_usd,
                ref=f"{r.endpoint} {r.service} {r.status} {r.request_id} {r.key_id} {r.replica_id}",
                at_s=r.started_at_s,
            )


def _timed(fn: object, *args: object) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    fn(*args)  # type: ignore[operator]
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=200)
    parser.add_argument("--database-url", default="")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = args.database_url or f"sqlite:///{Path(tmp) / 'bench.db'}"
        upgrade(url)
        control = ControlPlane(settings=Settings(data_dir=Path(tmp)), db=Database(url))
        name = f"bench-{time.time_ns()}"  # a tenant of its own (also in a given database)
        with control.tx() as repo:
            tenant_id = repo.create_tenant(name, "company").id
        before = _records("old", args.rows, name)
        after = _records("new", args.rows, name)
        batches_old = [before[i : i + args.batch] for i in range(0, len(before), args.batch)]
        wall_old = cpu_old = 0.0
        for batch in batches_old:
            w, c = _timed(_old_append, control, tenant_id, batch)
            wall_old, cpu_old = wall_old + w, cpu_old + c
        ledger = StoreLedger(control, journal_dir=Path(tmp) / "journal")
        journal = ledger.journal
        assert isinstance(journal, UsageJournal)
        cpu0, wall0 = time.process_time(), time.perf_counter()
        for r in after:  # the request path: reservation + settlement lines
            ledger.record(r, final=False)
            ledger.record(r, final=True)
        cpu_request, wall_request = time.process_time() - cpu0, time.perf_counter() - wall0
        wall_new = cpu_new = 0.0
        for i in range(0, len(after), args.batch):
            w, c = _timed(ledger.append, after[i : i + args.batch])
            wall_new, cpu_new = wall_new + w, cpu_new + c
        with control.tx() as repo:
            stored = len(repo.list_usage(kind="tokens", limit=10 * args.rows))
        control.db.dispose()
    n = args.rows
    result = {
        "database": "sqlite (temporary file)" if not args.database_url else "given URL",
        "rows": n,
        "batch_rows": args.batch,
        "rows_stored": stored,
        "before": {
            "request_path_us_per_request": 0.0,
            "flush_cpu_us_per_row": 1e6 * cpu_old / n,
            "flush_wall_us_per_row": 1e6 * wall_old / n,
        },
        "after": {
            "request_path_cpu_us_per_request": 1e6 * cpu_request / n,
            "request_path_wall_us_per_request": 1e6 * wall_request / n,
            "flush_cpu_us_per_row": 1e6 * cpu_new / n,
            "flush_wall_us_per_row": 1e6 * wall_new / n,
        },
    }
    total_before = result["before"]["flush_cpu_us_per_row"]
    total_after = (
        result["after"]["request_path_cpu_us_per_request"] + result["after"]["flush_cpu_us_per_row"]
    )
    result["cpu_us_per_request"] = {"before": total_before, "after": total_after}
    path = write_result("ledger" if not args.database_url else "ledger-other-database", result)
    print(
        f"ledger, {n} rows in batches of {args.batch} (this machine):\n"
        f"  before: {total_before:8.1f} µs CPU/request (ORM row + flush, off the request path)\n"
        f"  after:  {total_after:8.1f} µs CPU/request = "
        f"{result['after']['request_path_cpu_us_per_request']:.1f} on the request path (2 journal "
        f"lines) + {result['after']['flush_cpu_us_per_row']:.1f} bulk insert\n"
        f"  rows stored: {stored} (expected {2 * n})\n  -> {path}"
    )
    if stored != 2 * n:
        raise SystemExit("rows lost or doubled")


if __name__ == "__main__":
    main()
