"""Jobs: submit, list, history, cancel, results; executors (admin keys) report their states.

`npucenter up` runs admitted jobs itself (:mod:`npucenter.api.runner`); an external executor
reports running/succeeded/failed through ``POST /api/jobs/{id}/state``. A job's result document
(a benchmark's JSON) is attached by the runner or uploaded with ``PUT /api/jobs/{id}/result``.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Depends, Query, status

from npucenter.api.admission import admit_after_change, check_admissible_any
from npucenter.api.context import RequestContext, caller_context
from npucenter.api.schemas import JobEventOut, JobIn, JobOut, JobStateIn
from npucenter.api.views import job_out, job_view, tenant_names
from npucenter.artifacts.service import program_job
from npucenter.errors import InvalidRequestError, PermissionDeniedError
from npucenter.policy.admission.host import HOST_JOB_KINDS
from npucenter.store.repository import canonical_device

__all__ = ["router"]

router = APIRouter(prefix="/api", tags=["jobs"])


@router.post("/jobs", response_model=JobOut, status_code=status.HTTP_201_CREATED)
def submit_job(body: JobIn, ctx: RequestContext = Depends(caller_context)) -> JobOut:
    """Queue a job; the admission cycle that follows may admit it at once."""
    with ctx.tx() as repo:
        tenant = ctx.owner(repo, body.tenant)
        accepts = [canonical_device(d) for d in (body.device_type, *body.fallback_device_types)]
        if body.num_cards == 0 and body.kind not in HOST_JOB_KINDS:
            raise InvalidRequestError(
                f"a {body.kind} job needs at least one card",
                hint=f"give num_cards >= 1; only {sorted(HOST_JOB_KINDS)} jobs run on the host",
            )
        if body.num_cards:  # a host job holds no card: no quota or server to check
            check_admissible_any(repo, tenant, accepts, body.num_cards)
        fields = body.model_dump(exclude={"tenant", "spec"})
        spec = program_job(
            repo,
            tenant,
            kind=body.kind,
            spec=body.spec,
            command=body.command,
            image=body.image,
            job_name=body.name,
            models_dir=ctx.control.settings.data_dir / "models",
        )
        if spec is not None:
            fields["command"] = spec[0]
        job = repo.submit_job(tenant, **fields)
        if spec is not None:
            repo.set_job_spec(job, spec[1])
        job_id = job.id
    admit_after_change(ctx.control)
    with ctx.tx() as repo:
        return job_view(repo, job_id)


@router.get("/jobs", response_model=list[JobOut])
def list_jobs(
    state: str | None = Query(default=None), ctx: RequestContext = Depends(caller_context)
) -> list[JobOut]:
    """Jobs: all (admin) or the caller's, optionally in one state."""
    with ctx.tx() as repo:
        names = tenant_names(repo)
        jobs = repo.list_jobs(tenant_id=ctx.scope, state=state)
        results = repo.jobs_with_results(j.id for j in jobs)
        reasons = repo.latest_reasons(j.id for j in jobs)
        return [job_out(repo, j, names, results, reasons) for j in jobs]


@router.get("/jobs/{job_id}", response_model=JobOut)
def get_job(job_id: int, ctx: RequestContext = Depends(caller_context)) -> JobOut:
    """One job."""
    with ctx.tx() as repo:
        return job_view(repo, job_id, ctx.scope)


@router.get("/jobs/{job_id}/events", response_model=list[JobEventOut])
def job_events(job_id: int, ctx: RequestContext = Depends(caller_context)) -> list[JobEventOut]:
    """The job's state history, oldest first."""
    with ctx.tx() as repo:
        job = repo.get_job(job_id, tenant_id=ctx.scope)
        return [JobEventOut.model_validate(e) for e in repo.job_events(job)]


@router.post("/jobs/{job_id}/state", response_model=JobOut)
def set_job_state(
    job_id: int, body: JobStateIn, ctx: RequestContext = Depends(caller_context)
) -> JobOut:
    """Move a job: tenants may only cancel; executors (admin keys) report the rest. 409 if illegal."""
    if body.state != "cancelled" and not ctx.is_admin:
        raise PermissionDeniedError(
            f"only the executor (an admin key) reports {body.state}", hint="tenants may cancel"
        )
    with ctx.tx() as repo:
        job = repo.get_job(job_id, tenant_id=ctx.scope)
        repo.transition_job(job, body.state, reason=body.reason or f"reported {body.state}")
    admit_after_change(ctx.control)
    with ctx.tx() as repo:
        return job_view(repo, job_id)


@router.post("/jobs/{job_id}/cancel", response_model=JobOut)
def cancel_job(job_id: int, ctx: RequestContext = Depends(caller_context)) -> JobOut:
    """Cancel a job (its cards are freed and billed)."""
    return set_job_state(job_id, JobStateIn(state="cancelled", reason="cancelled"), ctx)


@router.get("/jobs/{job_id}/result", response_model=dict[str, Any])
def get_job_result(job_id: int, ctx: RequestContext = Depends(caller_context)) -> dict[str, Any]:
    """The job's result document (a benchmark job's JSON); 404 until it has one."""
    with ctx.tx() as repo:
        return dict(repo.job_result(repo.get_job(job_id, tenant_id=ctx.scope)).document)


@router.put("/jobs/{job_id}/result", response_model=JobOut)
def put_job_result(
    job_id: int,
    document: dict[str, Any] = Body(..., description="A JSON object, at most 16 MiB."),
    ctx: RequestContext = Depends(caller_context),
) -> JobOut:
    """Attach (or replace) the job's result: its tenant or an admin (`bench run --submit`)."""
    with ctx.tx() as repo:
        job = repo.get_job(job_id, tenant_id=ctx.scope)
        repo.set_job_result(job, document, source="upload")
    with ctx.tx() as repo:
        return job_view(repo, job_id)
