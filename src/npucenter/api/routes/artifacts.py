"""Data sets, adapters and storage usage: a tenant's artifacts (issue 14).

``POST /api/datasets`` takes a JSONL data set (``content``, with its ``sha256``), checked line by
line; ``GET``/``DELETE`` list and remove them. ``/api/adapters`` lists, shows and deletes the
adapters fine-tunes registered (deleting one unloads it from the engines serving it).
``GET /api/storage`` gives bytes stored per tenant. Another tenant's artifact is a 404.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Response, status
from pydantic import BaseModel, ConfigDict, Field

from npucenter.api.context import RequestContext, caller_context
from npucenter.api.views import tenant_names
from npucenter.artifacts import artifact_store
from npucenter.artifacts.service import delete_artifact, upload_dataset
from npucenter.jobs.data import MAX_DATASET_BYTES
from npucenter.store.models import Adapter, Artifact

__all__ = ["ADAPTER_LISTENERS", "router"]

router = APIRouter(prefix="/api", tags=["artifacts"])

#: Called with ``(tenant_id, adapter name)`` after an adapter is deleted (the gateway unloads it).
ADAPTER_LISTENERS: list[Any] = []


class DatasetIn(BaseModel):
    """A JSONL data set: one JSON object a line (text, prompt/completion, messages, input_ids)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    name: str = Field(min_length=1, max_length=128, pattern=r"^\S(.*\S)?$")
    content: str = Field(max_length=MAX_DATASET_BYTES)
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-fA-F]{64}$")
    tenant: str | None = None  # admins upload for a tenant


class ArtifactOut(BaseModel):
    """A stored artifact (its bytes stay on the center)."""

    model_config = ConfigDict(from_attributes=True)
    id: int
    tenant_id: int
    tenant: str = ""
    kind: str
    name: str
    format: str
    sha256: str
    num_bytes: int
    num_records: int | None = None
    source_job_id: int | None = None
    created_at_s: float
    created: bool | None = None  # on upload: False when the same bytes were there already


class AdapterOut(BaseModel):
    """A LoRA adapter: request it as ``model="<name>"`` or ``"<base_model>:<name>"``."""

    model_config = ConfigDict(from_attributes=True)
    id: int
    tenant_id: int
    tenant: str = ""
    name: str
    base_model: str
    served_as: str
    rank: int
    alpha: float
    target_modules: list[str]
    artifact_id: int
    num_bytes: int = 0
    source_job_id: int | None = None
    created_at_s: float


class StorageOut(BaseModel):
    """Bytes a tenant stores, by artifact kind."""

    tenant_id: int
    tenant: str
    total_bytes: int
    bytes_by_kind: dict[str, int]


def _artifact(a: Artifact, names: dict[int, str], **extra: Any) -> ArtifactOut:
    out = ArtifactOut.model_validate(a)
    return out.model_copy(update={"tenant": names.get(a.tenant_id, ""), **extra})


def _adapter(a: Adapter, names: dict[int, str], num_bytes: int) -> AdapterOut:
    return AdapterOut(
        id=a.id,
        tenant_id=a.tenant_id,
        tenant=names.get(a.tenant_id, ""),
        name=a.name,
        base_model=a.base_model,
        served_as=f"{a.base_model}:{a.name}",
        rank=a.rank,
        alpha=a.alpha,
        target_modules=list(a.target_modules),
        artifact_id=a.artifact_id,
        num_bytes=num_bytes,
        source_job_id=a.source_job_id,
        created_at_s=a.created_at_s,
    )


@router.post("/datasets", response_model=ArtifactOut, status_code=status.HTTP_201_CREATED)
def post_dataset(
    body: DatasetIn, response: Response, ctx: RequestContext = Depends(caller_context)
) -> ArtifactOut:
    """Upload a data set; 400 names the first bad line; the same bytes again: 200, not stored twice."""
    store = artifact_store(ctx.control.settings)
    with ctx.tx() as repo:
        tenant = ctx.owner(repo, body.tenant)
        row, created = upload_dataset(
            repo, store, tenant, name=body.name, content=body.content.encode(), sha256=body.sha256
        )
        if not created:
            response.status_code = status.HTTP_200_OK
        return _artifact(row, tenant_names(repo), created=created)


@router.get("/datasets", response_model=list[ArtifactOut])
def list_datasets(ctx: RequestContext = Depends(caller_context)) -> list[ArtifactOut]:
    """Data sets: all (admin) or the caller's."""
    with ctx.tx() as repo:
        names = tenant_names(repo)
        return [
            _artifact(a, names) for a in repo.list_artifacts(tenant_id=ctx.scope, kind="dataset")
        ]


@router.get("/datasets/{ref}", response_model=ArtifactOut)
def get_dataset(ref: str, ctx: RequestContext = Depends(caller_context)) -> ArtifactOut:
    """One data set by id or name."""
    with ctx.tx() as repo:
        return _artifact(
            repo.get_artifact(ref, kind="dataset", tenant_id=ctx.scope), tenant_names(repo)
        )


@router.delete("/datasets/{ref}", status_code=status.HTTP_204_NO_CONTENT)
def delete_dataset(ref: str, ctx: RequestContext = Depends(caller_context)) -> Response:
    """Delete a data set and its bytes."""
    store = artifact_store(ctx.control.settings)
    with ctx.tx() as repo:
        delete_artifact(repo, store, repo.get_artifact(ref, kind="dataset", tenant_id=ctx.scope))
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/adapters", response_model=list[AdapterOut])
def list_adapters(ctx: RequestContext = Depends(caller_context)) -> list[AdapterOut]:
    """Adapters: all (admin) or the caller's."""
    with ctx.tx() as repo:
        names = tenant_names(repo)
        sizes = {
            a.id: a.num_bytes for a in repo.list_artifacts(tenant_id=ctx.scope, kind="adapter")
        }
        return [
            _adapter(a, names, sizes.get(a.artifact_id, 0))
            for a in repo.list_adapters(tenant_id=ctx.scope)
        ]


@router.get("/adapters/{ref}", response_model=AdapterOut)
def get_adapter(ref: str, ctx: RequestContext = Depends(caller_context)) -> AdapterOut:
    """One adapter by id or name."""
    with ctx.tx() as repo:
        adapter = repo.get_adapter(ref, tenant_id=ctx.scope)
        return _adapter(adapter, tenant_names(repo), repo.adapter_artifact(adapter).num_bytes)


@router.delete("/adapters/{ref}", status_code=status.HTTP_204_NO_CONTENT)
def delete_adapter(ref: str, ctx: RequestContext = Depends(caller_context)) -> Response:
    """Delete an adapter: unloaded from the engines serving it, its bytes removed."""
    store = artifact_store(ctx.control.settings)
    with ctx.tx() as repo:
        adapter = repo.get_adapter(ref, tenant_id=ctx.scope)
        tenant_id, name = adapter.tenant_id, adapter.name
        artifact = repo.delete_adapter(adapter)
    if artifact is not None:
        store.delete(artifact.location)
    for listener in list(ADAPTER_LISTENERS):
        listener(tenant_id, name)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/storage", response_model=list[StorageOut])
def storage(ctx: RequestContext = Depends(caller_context)) -> list[StorageOut]:
    """Bytes stored per tenant (data sets, adapters, outputs): all (admin) or the caller's."""
    with ctx.tx() as repo:
        names = tenant_names(repo)
        used = repo.artifact_bytes(tenant_id=ctx.scope)
        tenants = [t.id for t in repo.list_tenants(tenant_id=ctx.scope)]
        return [
            StorageOut(
                tenant_id=tid,
                tenant=names.get(tid, ""),
                total_bytes=used.get(tid, {}).get("total", 0),
                bytes_by_kind={k: v for k, v in used.get(tid, {}).items() if k != "total"},
            )
            for tid in tenants
        ]
