"""The gateway's ledger in the control plane's store: journaled first, then bulk-inserted.

:class:`StoreLedger` is the :class:`~npucenter.metering.Ledger` of ``npucenter up``. The gateway
calls :meth:`StoreLedger.record` on the request path (one journal line, see
:mod:`npucenter.metering.journal`) and :meth:`StoreLedger.append` from its flush task (one
transaction and one multi-row INSERT per batch, off the request path). :meth:`recover` replays
what a killed process journaled but never committed, before the gateway serves.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Protocol

from npucenter.errors import NotFoundError
from npucenter.metering.journal import UsageJournal, read_segments
from npucenter.metering.ledger import UsageRecord
from npucenter.store.ledger import RequestUsage

__all__ = ["OPERATOR_TENANT", "StoreLedger"]

log = logging.getLogger(__name__)

#: Admin keys belong to no tenant; their usage is metered to this tenant of the center itself.
OPERATOR_TENANT = "operator"


class _Control(Protocol):
    def tx(self) -> AbstractContextManager[Any]: ...


class StoreLedger:
    """Usage rows into the store's append-only ledger (kind ``tokens``), one per request id.

    ``journal_dir``: where the write-ahead journal lives (None: no journal; rows buffered by
    the gateway are lost if the process is killed before its next flush).
    """

    def __init__(self, control: _Control, *, journal_dir: Path | None = None) -> None:
        self._control = control
        self._tenant_ids: dict[str, int] = {}
        self.journal = UsageJournal(journal_dir) if journal_dir is not None else None

    def record(self, record: UsageRecord, *, final: bool) -> None:
        """Journal a request's row ahead of the database (request path: one file write)."""
        if self.journal is not None:
            self.journal.write(record, final=final)

    def append(self, records: Sequence[UsageRecord]) -> None:
        """Write ``records`` in one transaction (request ids already stored are skipped)."""
        if not records:
            return
        with self._control.tx() as repo:
            rows = [self._row(repo, r) for r in records]
            repo.append_request_rows(rows)
        if self.journal is not None:
            self.journal.committed(r.request_id for r in records)

    def recover(self) -> int:
        """Replay journal segments a previous process left; the number of request rows in them."""
        if self.journal is None:
            return 0
        segments = self.journal.leftover()
        if not segments:
            return 0
        records = read_segments(segments)
        for start in range(0, len(records), 5000):
            self.append(records[start : start + 5000])
        self.journal.discard(segments)
        log.warning(
            "usage journal: replayed %d request rows left by a stopped process", len(records)
        )
        return len(records)

    def close(self) -> None:
        """Close the journal's open segment (what it holds is replayed at the next start)."""
        if self.journal is not None:
            self.journal.close()

    def _row(self, repo: Any, r: UsageRecord) -> RequestUsage:
        return RequestUsage(
            request_id=r.request_id,
            tenant_id=self._tenant_id(repo, r.tenant),
            device_type=r.device_id or None,
            device_seconds=r.device_s,
            tokens_in=r.input_tokens,
            tokens_out=r.output_tokens,
            energy_j=r.energy_j,
            cost_usd=r.cost_usd,
            ref=f"{r.endpoint} {r.service} {r.status} {r.request_id} {r.key_id} {r.replica_id}",
            at_s=r.started_at_s,
        )

    def _tenant_id(self, repo: Any, name: str) -> int:
        tenant_id = self._tenant_ids.get(name)
        if tenant_id is None:
            try:
                tenant_id = int(repo.get_tenant(name or OPERATOR_TENANT).id)
            except NotFoundError:
                if name and name != OPERATOR_TENANT:
                    raise
                tenant_id = int(repo.create_tenant(OPERATOR_TENANT, "company").id)
            self._tenant_ids[name] = tenant_id
        return tenant_id
