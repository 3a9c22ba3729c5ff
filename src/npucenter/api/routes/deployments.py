"""Deployments (inference services): checked against the perf model, replicas placed by admission."""

from __future__ import annotations

from fastapi import APIRouter, Depends, status

from npucenter.api.admission import admit_after_change, check_admissible
from npucenter.api.context import RequestContext, caller_context
from npucenter.api.schemas import DeploymentIn, DeploymentOut, DeploymentPatch
from npucenter.api.views import deployment_out, deployment_view, placements, tenant_names
from npucenter.engines import engine_choice

__all__ = ["router"]

router = APIRouter(prefix="/api", tags=["deployments"])


@router.post("/deployments", response_model=DeploymentOut, status_code=status.HTTP_201_CREATED)
def create_deployment(
    body: DeploymentIn, ctx: RequestContext = Depends(caller_context)
) -> DeploymentOut:
    """Deploy a service; 422 when the model cannot run on the device at this TP/precision."""
    choice = engine_choice({**body.engine_options, "name": body.engine})  # 4xx when not valid
    with ctx.tx() as repo:
        tenant = ctx.owner(repo, body.tenant)
        fields = body.model_dump(exclude={"tenant", "engine"})
        dep = repo.create_deployment(tenant, engine=choice.name, **fields)
        if dep.replicas:
            check_admissible(repo, tenant, dep.device_type, dep.tp)
        dep_id = dep.id
    admit_after_change(ctx.control)
    with ctx.tx() as repo:
        return deployment_view(repo, dep_id)


@router.get("/deployments", response_model=list[DeploymentOut])
def list_deployments(ctx: RequestContext = Depends(caller_context)) -> list[DeploymentOut]:
    """Deployments: all (admin) or the caller's."""
    with ctx.tx() as repo:
        names = tenant_names(repo)
        placed = placements(repo)
        deps = repo.list_deployments(tenant_id=ctx.scope)
        return [deployment_out(repo, d, names, placed) for d in deps]


@router.get("/deployments/{dep_id}", response_model=DeploymentOut)
def get_deployment(dep_id: int, ctx: RequestContext = Depends(caller_context)) -> DeploymentOut:
    """One deployment."""
    with ctx.tx() as repo:
        return deployment_view(repo, dep_id, ctx.scope)


@router.patch("/deployments/{dep_id}", response_model=DeploymentOut)
def scale_deployment(
    dep_id: int, body: DeploymentPatch, ctx: RequestContext = Depends(caller_context)
) -> DeploymentOut:
    """Scale to ``replicas``."""
    with ctx.tx() as repo:
        repo.scale_deployment(repo.get_deployment(dep_id, tenant_id=ctx.scope), body.replicas)
    admit_after_change(ctx.control)
    with ctx.tx() as repo:
        return deployment_view(repo, dep_id)


@router.delete("/deployments/{dep_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_deployment(dep_id: int, ctx: RequestContext = Depends(caller_context)) -> None:
    """Stop every replica and remove the deployment (the ledger keeps what it used)."""
    with ctx.tx() as repo:
        repo.delete_deployment(repo.get_deployment(dep_id, tenant_id=ctx.scope))
    admit_after_change(ctx.control)
