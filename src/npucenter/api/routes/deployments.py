"""Deployments (inference services): checked against the perf model, replicas placed by admission."""

from __future__ import annotations

from fastapi import APIRouter, Depends, status

from npucenter.api.admission import admit_after_change, check_admissible_any, quota_cards
from npucenter.api.context import RequestContext, caller_context
from npucenter.api.schemas import (
    DeploymentIn,
    DeploymentOut,
    DeploymentPatch,
    SloAttainmentOut,
)
from npucenter.api.views import deployment_out, deployment_view, placements, tenant_names
from npucenter.engines import engine_choice, engine_for_device
from npucenter.errors import ConflictError, InvalidRequestError
from npucenter.store.models import Deployment
from npucenter.store.repository import Repository

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
        accepts = dep.accepted_device_types()
        for device_type in accepts:  # an engine of the device's family serves each replica
            engine_for_device(choice, device_type)
        if dep.replicas:
            check_admissible_any(repo, tenant, accepts, dep.tp)
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
        return [_attained(ctx, deployment_out(repo, d, names, placed)) for d in deps]


@router.get("/deployments/{dep_id}", response_model=DeploymentOut)
def get_deployment(dep_id: int, ctx: RequestContext = Depends(caller_context)) -> DeploymentOut:
    """One deployment (with its SLO attainment where a gateway runs in this process)."""
    with ctx.tx() as repo:
        return _attained(ctx, deployment_view(repo, dep_id, ctx.scope))


def _attained(ctx: RequestContext, out: DeploymentOut) -> DeploymentOut:
    """``out`` with its SLO attainment over the gateway's recent window, where there is one."""
    attainment = ctx.control.slo_attainment
    if attainment is not None:
        doc = attainment(out.tenant, out.name, out.model)
        out.slo_attainment = SloAttainmentOut(**doc) if doc is not None else None
    return out


@router.patch("/deployments/{dep_id}", response_model=DeploymentOut)
def scale_deployment(
    dep_id: int, body: DeploymentPatch, ctx: RequestContext = Depends(caller_context)
) -> DeploymentOut:
    """Scale to ``replicas``, and/or set the autoscaling bounds (a tenant: its own only).

    400 when no field is given or min > max; 409 when ``max_replicas`` replicas do not fit the
    tenant's quota. The leader's autoscaler uses new bounds at its next tick.
    """
    bounds = {"min_replicas", "max_replicas", "idle_to_zero_s"} & body.model_fields_set
    if body.replicas is None and not bounds:
        raise InvalidRequestError(
            "nothing to change",
            hint="give replicas, or min_replicas/max_replicas/idle_to_zero_s",
        )
    with ctx.tx() as repo:
        dep = repo.get_deployment(dep_id, tenant_id=ctx.scope)
        if bounds:
            _set_bounds(repo, dep, body, bounds)
        if body.replicas is not None:
            inflight = ctx.control.replica_inflight
            repo.scale_deployment(
                dep, body.replicas, inflight=inflight() if inflight is not None else None
            )
    admit_after_change(ctx.control)
    with ctx.tx() as repo:
        return deployment_view(repo, dep_id)


def _set_bounds(repo: Repository, dep: Deployment, body: DeploymentPatch, given: set[str]) -> None:
    """The deployment's bounds with the fields given changed; checked against the quota."""
    new = {
        k: getattr(body, k) if k in given else getattr(dep, k)
        for k in ("min_replicas", "max_replicas", "idle_to_zero_s")
    }
    low, high = new["min_replicas"], new["max_replicas"]
    if low is not None and high is not None and low > high:
        raise InvalidRequestError(
            f"min_replicas {low} is above max_replicas {high}",
            hint="give 0 <= min_replicas <= max_replicas",
            details={"min_replicas": low, "max_replicas": high},
        )
    if high is not None:
        tenant = repo.get_tenant(dep.tenant_id)
        # fungible replicas may spread over every type they accept
        limit = sum(quota_cards(repo, tenant, d) for d in dep.accepted_device_types())
        if high * dep.tp > limit:
            raise ConflictError(
                f"max_replicas {high} of {dep.name} needs {high * dep.tp} {dep.device_type} "
                f"cards; the quota of {tenant.name} allows {limit:g}",
                hint=f"give --max {int(limit // dep.tp)} or less, or ask the operator for quota",
                details={"max_replicas": high, "cards": high * dep.tp, "quota_cards": limit},
            )
    repo.set_autoscale(dep, **new)


@router.delete("/deployments/{dep_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_deployment(dep_id: int, ctx: RequestContext = Depends(caller_context)) -> None:
    """Remove the deployment at once (404 after, its name free); its replicas' engines drain
    on their cards, billed, until the reconciler reports them gone (the ledger keeps it all)."""
    with ctx.tx() as repo:
        repo.delete_deployment(repo.get_deployment(dep_id, tenant_id=ctx.scope))
    admit_after_change(ctx.control)
