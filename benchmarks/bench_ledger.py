"""The usage ledger's cost per gateway request: the old per-row ORM path against journal + bulk.

Before (the gateway's ledger until this change): every buffered row became one ORM object and
one flush, in one transaction per flush batch. After: on the request path, two journal lines
(the reservation before the answer's last bytes, the settlement at its end: one ``os.write``
each); off it, one multi-row INSERT per batch and an fsync of the journal. Rows are synthetic;
SQLite in a temporary directory on this machine (``--database-url`` for another database).
Batches of 200 rows: the gateway's 0.2 s flush at 1,000 requests/s. Then the same through the
gateway: streamed requests through an in-process gateway and fake engine with an in-memory
ledger, the old store ledger and the new one, interleaved three times; the difference of the
medians of CPU per request is what the ledger costs on the real path.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import httpx
from _common import write_result

from npucenter.api.context import ControlPlane
from npucenter.clock import SystemClock
from npucenter.gateway import Gateway, ReplicaEndpoint, StaticKeyResolver
from npucenter.gateway.auth import Principal
from npucenter.gateway.usage import StoreLedger
from npucenter.metering.journal import UsageJournal
from npucenter.metering.ledger import InMemoryLedger, Ledger, UsageRecord
from npucenter.settings import Settings
from npucenter.store import Database, upgrade
from npucenter.wire.fake import FakeOpenAI, FakeScript

_BODY = {
    "model": "m",
    "messages": [{"role": "user", "content": "Hello, ledger."}],
    "max_tokens": 16,
    "stream": True,
}


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


async def _gateway_cpu_s(ledger: Ledger, tenant: str, n: int) -> float:
    """CPU seconds of ``n`` streamed requests through an in-process gateway (fake engine)."""
    gateway = Gateway(
        keys=StaticKeyResolver({"sk": Principal(key_id="key-1", tenant=tenant)}),
        ledger=ledger,
        endpoints=[ReplicaEndpoint(replica_id="r0", base_url="http://engine", model_id="m")],
        transport=httpx.ASGITransport(app=FakeOpenAI(FakeScript())),
        clock=SystemClock(),
    )
    await gateway.start()
    transport = httpx.ASGITransport(app=gateway)
    headers = {"Authorization": "Bearer sk"}
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:

        async def one() -> None:
            resp = await client.post("/v1/chat/completions", json=_BODY, headers=headers)
            assert resp.status_code == 200 and b"[DONE]" in resp.content

        await asyncio.gather(*(one() for _ in range(32)))  # warm up
        cpu = time.process_time()
        for _ in range(n // 16):
            await asyncio.gather(*(one() for _ in range(16)))
        await gateway.flush()
        cpu = time.process_time() - cpu
    await gateway.aclose()
    return cpu


def _gateway_delta(
    control: ControlPlane, tenant: str, journal_dir: Path, n: int
) -> dict[str, float]:
    """CPU per request through the gateway: in-memory ledger vs the store's (journal + bulk),
    interleaved three times each; medians."""
    memory: list[float] = []
    old: list[float] = []
    store: list[float] = []
    with control.tx() as repo:
        tenant_id = repo.get_tenant(tenant).id
    for k in range(3):
        memory.append(asyncio.run(_gateway_cpu_s(InMemoryLedger(), tenant, n)) / n)
        old.append(asyncio.run(_gateway_cpu_s(_OldLedger(control, tenant_id), tenant, n)) / n)
        ledger = StoreLedger(control, journal_dir=journal_dir / str(k))
        store.append(asyncio.run(_gateway_cpu_s(ledger, tenant, n)) / n)
    base = statistics.median(memory)
    return {
        "in_memory_ledger_cpu_us_per_request": 1e6 * base,
        "before_cpu_us_per_request": 1e6 * statistics.median(old),
        "after_cpu_us_per_request": 1e6 * statistics.median(store),
        "before_ledger_cpu_us_per_request": 1e6 * (statistics.median(old) - base),
        "after_ledger_cpu_us_per_request": 1e6 * (statistics.median(store) - base),
    }


class _OldLedger:
    """The gateway's store ledger before: per-row ORM objects in the flush thread, no journal."""

    def __init__(self, control: ControlPlane, tenant_id: int) -> None:
        self._control = control
        self._tenant_id = tenant_id

    def append(self, records: list[UsageRecord]) -> None:
        _old_append(self._control, self._tenant_id, list(records))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=200)
    parser.add_argument("--database-url", default="")
    parser.add_argument("--gateway-requests", type=int, default=1600)
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
        through = _gateway_delta(control, name, Path(tmp) / "gw-journal", args.gateway_requests)
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
    result["through_the_gateway"] = {"requests": args.gateway_requests, **through}
    path = write_result("ledger" if not args.database_url else "ledger-other-database", result)
    print(
        f"ledger, {n} rows in batches of {args.batch} (this machine):\n"
        f"  before: {total_before:8.1f} µs CPU/request (ORM row + flush, off the request path)\n"
        f"  after:  {total_after:8.1f} µs CPU/request = "
        f"{result['after']['request_path_cpu_us_per_request']:.1f} on the request path (2 journal "
        f"lines) + {result['after']['flush_cpu_us_per_row']:.1f} bulk insert\n"
        f"  through the gateway (streamed, in-process fake engine, CPU/request): in-memory "
        f"ledger {through['in_memory_ledger_cpu_us_per_request']:.0f} µs; store ledger before "
        f"{through['before_cpu_us_per_request']:.0f} (+{through['before_ledger_cpu_us_per_request']:.0f}),"
        f" after {through['after_cpu_us_per_request']:.0f} "
        f"(+{through['after_ledger_cpu_us_per_request']:.0f})\n"
        f"  rows stored: {stored} (expected {2 * n})\n  -> {path}"
    )
    if stored != 2 * n:
        raise SystemExit("rows lost or doubled")


if __name__ == "__main__":
    main()
