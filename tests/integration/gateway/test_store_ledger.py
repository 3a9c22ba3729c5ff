"""The gateway's ledger in the store: one row per request id, bulk batches, journal replay."""

from __future__ import annotations

from pathlib import Path

from factories import make_database, make_tenant
from npucenter.api.context import ControlPlane
from npucenter.gateway.usage import StoreLedger
from npucenter.metering.ledger import UsageRecord
from npucenter.settings import Settings


def _control(tmp_path: Path) -> ControlPlane:
    db = make_database(tmp_path)
    control = ControlPlane(settings=Settings(data_dir=tmp_path), db=db)
    with control.tx() as repo:
        make_tenant(repo, "acme")
    return control


def _rec(request_id: str, out: int = 4, tenant: str = "acme") -> UsageRecord:
    return UsageRecord(
        request_id=request_id,
        tenant=tenant,
        key_id="key-1",
        service="m",
        endpoint="/v1/completions",
        input_tokens=3,
        output_tokens=out,
        device_s=0.5,
        started_at_s=1.0,
    )


def _rows(control: ControlPlane) -> dict[str, int]:
    with control.tx() as repo:
        rows = repo.list_usage(kind="tokens", limit=100_000)
        return {str(r.request_id): r.tokens_out for r in rows}


def test_a_batch_is_written_once_per_request_id(tmp_path: Path) -> None:
    control = _control(tmp_path)
    ledger = StoreLedger(control)
    batch = [_rec(f"r{i}", out=i) for i in range(1200)]
    ledger.append(batch)
    ledger.append([*batch[:10], _rec("r5", out=99)])  # a replayed batch: nothing doubles
    rows = _rows(control)
    assert len(rows) == 1200 and rows["r5"] == 5 and rows["r1199"] == 1199
    ledger.append([_rec("admin-1", tenant="operator")])  # admin usage: the operator tenant
    assert "admin-1" in _rows(control)
    control.db.dispose()


def test_what_a_killed_gateway_journaled_is_replayed_at_start(tmp_path: Path) -> None:
    control = _control(tmp_path)
    journal_dir = tmp_path / "usage-journal"
    first = StoreLedger(control, journal_dir=journal_dir)
    first.record(_rec("done", out=7), final=True)
    first.append([_rec("done", out=7)])  # committed: its segment may go
    first.record(_rec("sent", out=5), final=False)  # answer sent, killed before settling
    first.record(_rec("flushed-late", out=2), final=False)
    first.record(_rec("flushed-late", out=2), final=True)  # settled, killed before the flush
    first.close()  # kill -9: no flush; the process's journal locks go with it
    second = StoreLedger(control, journal_dir=journal_dir)
    assert second.recover() >= 2
    assert _rows(control) == {"done": 7, "sent": 5, "flushed-late": 2}
    assert second.recover() == 0  # replayed segments are gone
    third = StoreLedger(control, journal_dir=journal_dir)
    assert third.recover() == 0 and _rows(control) == {"done": 7, "sent": 5, "flushed-late": 2}
    control.db.dispose()
