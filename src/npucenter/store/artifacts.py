"""Artifacts (data sets, adapters, job outputs), registered adapters and job programs' specs.

A tenant-scoped caller sees another tenant's artifact or adapter as not found, never revealed.
The bytes are not here: ``location`` is a key of the artifact store (:mod:`npucenter.artifacts`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, select

from npucenter.errors import ConflictError, NotFoundError
from npucenter.store.base import StoreBase, check_choice, check_name, is_row_id
from npucenter.store.models import Adapter, Artifact, Job, JobSpec, Tenant

__all__ = ["ARTIFACT_KINDS", "ArtifactRecordStore"]

ARTIFACT_KINDS = ("dataset", "adapter", "output")


class ArtifactRecordStore(StoreBase):
    """Artifacts' records, adapters and job specs."""

    # --- artifacts ----------------------------------------------------------------------
    def add_artifact(
        self,
        tenant: Tenant,
        *,
        kind: str,
        name: str,
        format: str,
        sha256: str,
        num_bytes: int,
        location: str,
        num_records: int | None = None,
        source_job_id: int | None = None,
    ) -> Artifact:
        """Record an artifact; a name the tenant already uses for this kind is a conflict."""
        check_choice("kind", kind, ARTIFACT_KINDS)
        check_name(f"{kind} name", name)
        if self._artifact_named(tenant.id, kind, name) is not None:
            raise ConflictError(
                f"{kind} {name!r} exists already",
                hint=f"pick another name or delete the {kind} first",
                details={"kind": kind, "name": name},
            )
        row = Artifact(
            tenant_id=tenant.id,
            kind=kind,
            name=name,
            format=format,
            sha256=sha256,
            num_bytes=num_bytes,
            num_records=num_records,
            location=location,
            source_job_id=source_job_id,
            created_at_s=self.now_s(),
        )
        self.session.add(row)
        self.session.flush()
        return row

    def _artifact_named(self, tenant_id: int, kind: str, name: str) -> Artifact | None:
        stmt = select(Artifact).where(
            Artifact.tenant_id == tenant_id, Artifact.kind == kind, Artifact.name == name
        )
        return self.session.scalar(stmt)

    def list_artifacts(
        self, *, tenant_id: int | None = None, kind: str | None = None
    ) -> list[Artifact]:
        """Artifacts (all, or one tenant's), optionally of one kind, oldest first."""
        stmt = select(Artifact).order_by(Artifact.id)
        if tenant_id is not None:
            stmt = stmt.where(Artifact.tenant_id == tenant_id)
        if kind is not None:
            stmt = stmt.where(Artifact.kind == kind)
        return list(self.session.scalars(stmt))

    def get_artifact(
        self, ref: str | int, *, kind: str, tenant_id: int | None = None, owner: int | None = None
    ) -> Artifact:
        """An artifact of ``kind`` by id, or by name within ``owner``'s (or the caller's) own."""
        row: Artifact | None = None
        if isinstance(ref, int) or is_row_id(str(ref)):
            row = self.row(Artifact, int(ref))
        else:
            within = tenant_id if tenant_id is not None else owner
            if within is not None:
                row = self._artifact_named(within, kind, str(ref))
            else:
                rows = [a for a in self.list_artifacts(kind=kind) if a.name == ref]
                row = rows[0] if len(rows) == 1 else None
        if (
            row is None
            or row.kind != kind
            or (tenant_id is not None and row.tenant_id != tenant_id)
        ):
            raise NotFoundError(kind, str(ref))
        return row

    def delete_artifact(self, artifact: Artifact) -> None:
        """Delete an artifact's record (its adapters go with it)."""
        for adapter in self.session.scalars(
            select(Adapter).where(Adapter.artifact_id == artifact.id)
        ):
            self.session.delete(adapter)
        self.session.delete(artifact)
        self.session.flush()

    def artifact_bytes(self, *, tenant_id: int | None = None) -> dict[int, dict[str, int]]:
        """tenant id -> artifact kind -> bytes stored (and ``"total"``)."""
        stmt = select(Artifact.tenant_id, Artifact.kind, func.sum(Artifact.num_bytes)).group_by(
            Artifact.tenant_id, Artifact.kind
        )
        if tenant_id is not None:
            stmt = stmt.where(Artifact.tenant_id == tenant_id)
        out: dict[int, dict[str, int]] = {}
        for tid, kind, num_bytes in self.session.execute(stmt):
            per = out.setdefault(int(tid), {"total": 0})
            per[str(kind)] = int(num_bytes or 0)
            per["total"] += int(num_bytes or 0)
        return out

    # --- adapters -----------------------------------------------------------------------
    def add_adapter(
        self,
        tenant: Tenant,
        *,
        name: str,
        base_model: str,
        rank: int,
        alpha: float,
        target_modules: Sequence[str],
        artifact: Artifact,
        source_job_id: int | None = None,
    ) -> Adapter:
        """Register an adapter; a name the tenant already uses is a conflict."""
        check_name("adapter name", name)
        if self.find_adapter(name, tenant_id=tenant.id) is not None:
            raise ConflictError(
                f"adapter {name!r} exists already",
                hint="delete it first (npucenter adapter delete) or name the fine-tune's adapter",
                details={"name": name},
            )
        row = Adapter(
            tenant_id=tenant.id,
            name=name,
            base_model=base_model,
            rank=rank,
            alpha=alpha,
            target_modules=list(target_modules),
            artifact_id=artifact.id,
            source_job_id=source_job_id,
            created_at_s=self.now_s(),
        )
        self.session.add(row)
        self.session.flush()
        return row

    def find_adapter(self, name: str, *, tenant_id: int) -> Adapter | None:
        """The tenant's adapter called ``name``, or None."""
        stmt = select(Adapter).where(Adapter.tenant_id == tenant_id, Adapter.name == name)
        return self.session.scalar(stmt)

    def list_adapters(self, *, tenant_id: int | None = None) -> list[Adapter]:
        """Adapters (all, or one tenant's), oldest first."""
        stmt = select(Adapter).order_by(Adapter.id)
        if tenant_id is not None:
            stmt = stmt.where(Adapter.tenant_id == tenant_id)
        return list(self.session.scalars(stmt))

    def get_adapter(self, ref: str | int, *, tenant_id: int | None = None) -> Adapter:
        """An adapter by id, or by name within the caller's tenant (admins: a unique name)."""
        row: Adapter | None
        if isinstance(ref, int) or is_row_id(str(ref)):
            row = self.row(Adapter, int(ref))
        elif tenant_id is not None:
            row = self.find_adapter(str(ref), tenant_id=tenant_id)
        else:
            rows = [a for a in self.list_adapters() if a.name == ref]
            row = rows[0] if len(rows) == 1 else None
        if row is None or (tenant_id is not None and row.tenant_id != tenant_id):
            raise NotFoundError("adapter", str(ref))
        return row

    def adapter_artifact(self, adapter: Adapter) -> Artifact:
        """The artifact holding the adapter's weights."""
        row = self.row(Artifact, adapter.artifact_id)
        if row is None:
            raise NotFoundError("artifact", str(adapter.artifact_id))
        return row

    def delete_adapter(self, adapter: Adapter) -> Artifact | None:
        """Delete an adapter and its artifact record; the artifact (its bytes go too)."""
        artifact = self.row(Artifact, adapter.artifact_id)
        self.session.delete(adapter)
        if artifact is not None:
            self.session.delete(artifact)
        self.session.flush()
        return artifact

    # --- job programs' specs ------------------------------------------------------------
    def set_job_spec(self, job: Job, spec: dict[str, Any]) -> JobSpec:
        """Attach the spec a job program reads (its inputs by artifact id)."""
        row = self.session.scalar(select(JobSpec).where(JobSpec.job_id == job.id))
        if row is None:
            row = JobSpec(job_id=job.id, spec=spec)
            self.session.add(row)
        row.spec = spec
        self.session.flush()
        return row

    def job_spec(self, job_id: int) -> dict[str, Any] | None:
        """The job program's spec, or None for a job that runs its own command."""
        row = self.session.scalar(select(JobSpec).where(JobSpec.job_id == job_id))
        return None if row is None else dict(row.spec)
