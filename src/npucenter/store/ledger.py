"""The usage ledger: append-only rows of device-seconds, tokens, energy and cost per tenant.

Rows are never updated or deleted (the model refuses it). Held cards are billed from their
allocation's billing cursor, which ``checkpoint_usage`` moves forward. The gateway's rows come
in batches (:meth:`LedgerStore.append_request_rows`): one multi-row INSERT per batch, at most one
row per request id (a row already there is skipped, so replaying a batch is harmless).
Totals are summed in SQL (:meth:`LedgerStore.summarize_usage`: GROUP BY tenant, kind, model or
adapter, time bucket), so a summary costs one query however long the ledger grows.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import BigInteger, ColumnElement, case, cast, func, insert, literal, select

from npucenter.errors import InvalidConfigError, NotFoundError
from npucenter.store.base import StoreBase, check_choice, check_name
from npucenter.store.models import Allocation, Deployment, Job, ReplicaRow, Tenant, UsageEntry

__all__ = ["SUMMARY_GROUPS", "LedgerStore", "RequestUsage", "UsageTotals"]

_MAX_ROWS_PER_INSERT = 500  # bound on one statement's bound parameters (SQLite: 32766)
#: What a usage summary can be grouped by (``model``: a gateway row's model or adapter service,
#: else the device type of a card-time row).
SUMMARY_GROUPS = ("tenant", "kind", "model")
_MAX_SUMMARY_GROUPS = 100_000
_NO_MODEL = "—"  # an em dash: a row that names no model or device


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestUsage:
    """One gateway request's ledger row (kind ``tokens``), as :meth:`append_request_rows` takes it."""

    request_id: str
    tenant_id: int
    device_type: str | None = None
    device_seconds: float = 0.0
    tokens_in: int = 0
    tokens_out: int = 0
    energy_j: float = 0.0
    cost_usd: float | None = None
    ref: str = ""
    at_s: float = 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class UsageTotals:
    """Ledger totals of one group (the fields not grouped by are None)."""

    tenant_id: int | None
    kind: str | None
    model: str | None
    bucket_start_s: float | None  # the time bucket's start (epoch-aligned), when bucketed
    device_seconds: float
    tokens_in: int
    tokens_out: int
    energy_j: float
    cost_usd: float | None  # None: no row of the group is priced
    num_entries: int
    first_at_s: float
    last_at_s: float


class LedgerStore(StoreBase):
    """Ledger rows and the billing of held cards."""

    def append_usage(
        self,
        *,
        tenant_id: int,
        kind: str,
        device_type: str | None = None,
        device_seconds: float = 0.0,
        tokens_in: int = 0,
        tokens_out: int = 0,
        energy_j: float = 0.0,
        cost_usd: float | None = None,
        ref: str = "",
        at_s: float | None = None,
    ) -> UsageEntry:
        """Append one ledger row (the ledger is never updated or deleted)."""
        check_name("usage kind", kind)
        for field, value in (
            ("device_seconds", device_seconds),
            ("tokens_in", tokens_in),
            ("tokens_out", tokens_out),
            ("energy_j", energy_j),
            ("cost_usd", cost_usd),
        ):
            if value is not None and value < 0:
                raise InvalidConfigError(field, value, "must be >= 0")
        if self.row(Tenant, tenant_id) is None:
            raise NotFoundError("tenant", str(tenant_id))
        entry = UsageEntry(
            tenant_id=tenant_id,
            kind=kind,
            device_type=device_type,
            device_seconds=float(device_seconds),
            tokens_in=int(tokens_in),
            tokens_out=int(tokens_out),
            energy_j=float(energy_j),
            cost_usd=cost_usd,
            ref=ref[:256],
            at_s=self.now_s() if at_s is None else at_s,
        )
        self.session.add(entry)
        self.session.flush()
        return entry

    def append_request_rows(self, rows: Sequence[RequestUsage]) -> int:
        """Append gateway request rows in bulk, skipping request ids already in the ledger.

        Returns the number of rows written. Values are the gateway's (non-negative by
        construction, checked again here); one statement per 500 rows, no ORM objects.
        """
        if not rows:
            return 0
        by_id: dict[str, RequestUsage] = {}
        for row in rows:  # the last row of a request id wins (a settlement after its reservation)
            if not row.request_id or len(row.request_id) > 64:
                raise InvalidConfigError("request_id", row.request_id, "must be 1-64 characters")
            for field in ("device_seconds", "tokens_in", "tokens_out", "energy_j"):
                if getattr(row, field) < 0:
                    raise InvalidConfigError(field, getattr(row, field), "must be >= 0")
            by_id[row.request_id] = row
        known = set(
            self.session.scalars(
                select(UsageEntry.request_id).where(UsageEntry.request_id.in_(list(by_id)))
            )
        )
        fresh = [
            {
                "tenant_id": r.tenant_id,
                "kind": "tokens",
                "device_type": r.device_type,
                "device_seconds": float(r.device_seconds),
                "tokens_in": int(r.tokens_in),
                "tokens_out": int(r.tokens_out),
                "energy_j": float(r.energy_j),
                "cost_usd": r.cost_usd,
                "ref": r.ref[:256],
                "at_s": float(r.at_s),
                "request_id": r.request_id,
            }
            for r in by_id.values()
            if r.request_id not in known
        ]
        for start in range(0, len(fresh), _MAX_ROWS_PER_INSERT):
            self.session.execute(insert(UsageEntry), fresh[start : start + _MAX_ROWS_PER_INSERT])
        return len(fresh)

    def list_usage(
        self,
        *,
        tenant_id: int | None = None,
        kind: str | None = None,
        since_s: float | None = None,
        limit: int = 1000,
    ) -> list[UsageEntry]:
        """Ledger rows, oldest first, filtered."""
        stmt = select(UsageEntry).order_by(UsageEntry.id).limit(max(1, min(limit, 100_000)))
        if tenant_id is not None:
            stmt = stmt.where(UsageEntry.tenant_id == tenant_id)
        if kind is not None:
            stmt = stmt.where(UsageEntry.kind == kind)
        if since_s is not None:
            stmt = stmt.where(UsageEntry.at_s >= since_s)
        return list(self.session.scalars(stmt))

    def summarize_usage(
        self,
        *,
        by: Sequence[str] = ("tenant", "kind"),
        tenant_id: int | None = None,
        kind: str | None = None,
        since_s: float | None = None,
        bucket_s: float | None = None,
    ) -> list[UsageTotals]:
        """Ledger totals per group, summed by the database (one GROUP BY query).

        ``by``: any of :data:`SUMMARY_GROUPS`; ``bucket_s``: also per time bucket of that many
        seconds (epoch-aligned: 3600 gives clock hours). Groups come sorted by their keys.
        """
        for group in by:
            check_choice("by", group, SUMMARY_GROUPS)
        if bucket_s is not None and not 1e-3 <= bucket_s <= 1e9:
            raise InvalidConfigError("bucket_s", bucket_s, "must be between 0.001 and 1e9")
        keys: list[ColumnElement[Any]] = []
        if "tenant" in by:
            keys.append(UsageEntry.tenant_id.label("tenant_id"))
        if "kind" in by:
            keys.append(UsageEntry.kind.label("kind"))
        if "model" in by:
            keys.append(self._model_column().label("model"))
        if bucket_s is not None:
            keys.append(self._bucket_column(bucket_s).label("bucket"))
        stmt = select(
            *keys,
            func.sum(UsageEntry.device_seconds).label("device_seconds"),
            func.sum(UsageEntry.tokens_in).label("tokens_in"),
            func.sum(UsageEntry.tokens_out).label("tokens_out"),
            func.sum(UsageEntry.energy_j).label("energy_j"),
            func.sum(UsageEntry.cost_usd).label("cost_usd"),
            func.count().label("num_entries"),
            func.min(UsageEntry.at_s).label("first_at_s"),
            func.max(UsageEntry.at_s).label("last_at_s"),
        )
        if tenant_id is not None:
            stmt = stmt.where(UsageEntry.tenant_id == tenant_id)
        if kind is not None:
            stmt = stmt.where(UsageEntry.kind == kind)
        if since_s is not None:
            stmt = stmt.where(UsageEntry.at_s >= since_s)
        if keys:
            stmt = stmt.group_by(*keys).order_by(*keys)
        out: list[UsageTotals] = []
        for row in self.session.execute(stmt.limit(_MAX_SUMMARY_GROUPS)).mappings():
            if not row["num_entries"]:  # no row at all: an aggregate without GROUP BY says so
                continue
            bucket = row["bucket"] if bucket_s is not None else None
            out.append(
                UsageTotals(
                    tenant_id=row["tenant_id"] if "tenant" in by else None,
                    kind=row["kind"] if "kind" in by else None,
                    model=row["model"] if "model" in by else None,
                    bucket_start_s=None if bucket is None else float(bucket) * (bucket_s or 0.0),
                    device_seconds=float(row["device_seconds"] or 0.0),
                    tokens_in=int(row["tokens_in"] or 0),
                    tokens_out=int(row["tokens_out"] or 0),
                    energy_j=float(row["energy_j"] or 0.0),
                    cost_usd=None if row["cost_usd"] is None else float(row["cost_usd"]),
                    num_entries=int(row["num_entries"]),
                    first_at_s=float(row["first_at_s"]),
                    last_at_s=float(row["last_at_s"]),
                )
            )
        return out

    def _model_column(self) -> ColumnElement[str]:
        """A row's model: the second word of a gateway row's ref (``endpoint service status
        request key replica``; the service is the model or the adapter), else its device type."""
        ref = UsageEntry.ref
        if self._dialect() == "postgresql":
            word: ColumnElement[str] = func.split_part(ref, " ", 2)
        else:  # SQLite: the text between the first and the second space
            rest = func.substr(ref, func.instr(ref, " ") + 1)
            word = case(
                (func.instr(ref, " ") == 0, literal("")),
                (func.instr(rest, " ") == 0, rest),
                else_=func.substr(rest, 1, func.instr(rest, " ") - 1),
            )
        return case(
            (UsageEntry.kind == "tokens", func.coalesce(func.nullif(word, ""), _NO_MODEL)),
            else_=func.coalesce(UsageEntry.device_type, _NO_MODEL),
        )

    def _bucket_column(self, bucket_s: float) -> ColumnElement[Any]:
        """The index of a row's time bucket, floor(at_s / bucket_s)."""
        scaled = UsageEntry.at_s / literal(bucket_s)
        if self._dialect() == "postgresql":
            return func.floor(scaled)
        return cast(scaled, BigInteger)  # SQLite truncates toward zero: at_s >= 0 here

    def _dialect(self) -> str:
        return self.session.get_bind().dialect.name

    def checkpoint_usage(self) -> list[UsageEntry]:
        """Bill every held card up to now (moves each allocation's billing cursor)."""
        rows: list[UsageEntry] = []
        jobs: dict[int, list[Allocation]] = {}
        reps: dict[int, list[Allocation]] = {}
        for alloc in self.session.scalars(select(Allocation).order_by(Allocation.id)):
            if alloc.job_id is not None:
                jobs.setdefault(alloc.job_id, []).append(alloc)
            elif alloc.replica_id is not None:
                reps.setdefault(alloc.replica_id, []).append(alloc)
        for job_id, allocs in jobs.items():
            job = self.row(Job, job_id)
            assert job is not None
            rows += self._bill(
                allocs,
                job.tenant_id,
                job.device_type,
                "job",
                f"job:{job.id} checkpoint",
                release=False,
            )[1]
        for rep_id, allocs in reps.items():
            rep = self.row(ReplicaRow, rep_id)
            assert rep is not None
            if rep.run_state in ("starting", "pending", "failed"):  # no engine serves: unbilled
                for alloc in allocs:
                    alloc.since_s = self.now_s()
                continue
            dep = self.row(Deployment, rep.deployment_id)
            assert dep is not None
            rows += self._bill(  # placed or draining (scaled down, its engine not yet stopped)
                allocs,
                dep.tenant_id,
                rep.device_type or dep.device_type,  # a fungible replica: where it was placed
                "replica",
                f"deployment:{dep.id}/replica:{rep.index} checkpoint",
                release=False,
            )[1]
        return rows

    def _bill(
        self,
        allocs: Iterable[Allocation],
        tenant_id: int,
        device_type: str,
        kind: str,
        ref: str,
        *,
        release: bool = True,
        energy_j: float | None = None,
    ) -> tuple[float, list[UsageEntry]]:
        """Append one ledger row for the cards' device-seconds since their billing cursor.

        Energy is ``energy_j`` when measured, else device-seconds times the modelled power of
        a card; cost is the tariff's price of the device-seconds (see :mod:`.rates`).
        """
        now = self.now_s()
        allocs = list(allocs)
        used = sum(max(0.0, now - a.since_s) for a in allocs)
        out: list[UsageEntry] = []
        if allocs:
            out.append(
                self.append_usage(
                    tenant_id=tenant_id,
                    kind=kind,
                    device_type=device_type,
                    device_seconds=used,
                    energy_j=max(0.0, energy_j)
                    if energy_j is not None
                    else used * self.rates.power_w(device_type),
                    cost_usd=self.rates.cost_usd(device_type, used),
                    ref=ref,
                    at_s=now,
                )
            )
        for alloc in allocs:
            if release:
                self.session.delete(alloc)
            else:
                alloc.since_s = now
        self.session.flush()
        return used, out
