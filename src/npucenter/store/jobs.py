"""Jobs (fine-tune, preprocess, benchmark): the state machine, admission onto cards, runs.

Leaving a holding state (admitted, running) releases the job's cards and bills them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from sqlalchemy import func, select

from npucenter.errors import ConflictError, InvalidConfigError, NotFoundError
from npucenter.store.base import canonical_device, check_choice, check_name
from npucenter.store.fleet import FleetStore
from npucenter.store.keys import key_in_command, redact_secrets
from npucenter.store.ledger import LedgerStore
from npucenter.store.models import Allocation, CardRow, Job, JobEvent, ServerRow, Tenant
from npucenter.store.quotas import QuotaStore

__all__ = ["JOB_KINDS", "JOB_STATES", "JOB_TRANSITIONS", "MAX_LOG_TAIL_CHARS", "JobStore"]

JOB_KINDS = ("finetune", "preprocess", "benchmark", "simulate", "plan")
JOB_STATES = ("queued", "admitted", "running", "succeeded", "failed", "preempted", "cancelled")
# NOTE(control): the job state machine. preempted always goes back to queued (the admission
# cycle does both steps in one transaction); succeeded, failed and cancelled are terminal.
JOB_TRANSITIONS: dict[str, frozenset[str]] = {
    "queued": frozenset({"admitted", "cancelled"}),
    "admitted": frozenset({"running", "preempted", "failed", "cancelled"}),
    "running": frozenset({"succeeded", "failed", "preempted", "cancelled"}),
    "preempted": frozenset({"queued", "cancelled"}),
    "succeeded": frozenset(),
    "failed": frozenset(),
    "cancelled": frozenset(),
}
_HOLDING_STATES = frozenset({"admitted", "running"})
MAX_LOG_TAIL_CHARS = 8192  # the stored log tail of a job run (its end is kept)


class JobStore(QuotaStore, FleetStore, LedgerStore):
    """Jobs, their history and their runs (quotas give the priority; held cards are billed)."""

    def submit_job(
        self,
        tenant: Tenant,
        *,
        name: str,
        kind: str,
        device_type: str,
        num_cards: int,
        image: str | None = None,
        command: Sequence[str] = (),
        priority_class: str | None = None,
        fallback_device_types: Sequence[str] = (),
    ) -> Job:
        """Queue a job; it needs an image or a command.

        ``fallback_device_types`` makes it fungible: admission places it on the first of
        ``device_type`` and these with quota and room (``device_type`` then records where).
        """
        check_name("job name", name)
        check_choice("kind", kind, JOB_KINDS)
        device_id = canonical_device(device_type)
        accepts = [device_id, *(canonical_device(d) for d in fallback_device_types)]
        if len(set(accepts)) != len(accepts):
            raise InvalidConfigError(
                "fallback_device_types", list(fallback_device_types), "names a device type twice"
            )
        host = num_cards == 0 and kind in ("simulate", "plan")  # a host job: no card
        if not (host or 1 <= num_cards <= 64):
            raise InvalidConfigError("num_cards", num_cards, "must be between 1 and 64")
        if not image and not command:
            raise InvalidConfigError("image", image, "a job needs an image or a command")
        for field, argv in (("image", [image or ""]), ("command", list(command))):
            at = key_in_command(argv)
            if at is not None:  # stored and shown: a key must not be in it
                raise InvalidConfigError(
                    field,
                    redact_secrets(argv[at]) if argv[at] != redact_secrets(argv[at]) else "…",
                    "carries an API key, which would be stored with the job",
                    hint="leave the key out: a running job gets a key of its own in "
                    "NPUCENTER_API_KEY and OPENAI_API_KEY (docs/security.md)",
                )
        now = self.now_s()
        job = Job(
            tenant_id=tenant.id,
            name=name,
            kind=kind,
            image=image or None,
            command=list(command),
            device_type=device_id,
            device_types=accepts if len(accepts) > 1 else [],
            num_cards=num_cards,
            priority_class=self.priority_for(tenant.id, device_id, priority_class),
            state="queued",
            borrowed_cards=0,
            num_preemptions=0,
            created_at_s=now,
            updated_at_s=now,
        )
        self.session.add(job)
        self.session.flush()
        self.session.add(
            JobEvent(
                job_id=job.id, from_state=None, to_state="queued", reason="submitted", at_s=now
            )
        )
        self.session.flush()
        return job

    def list_jobs(self, *, tenant_id: int | None = None, state: str | None = None) -> list[Job]:
        """Jobs, all or one tenant's, optionally in one state."""
        stmt = select(Job).order_by(Job.id)
        if tenant_id is not None:
            stmt = stmt.where(Job.tenant_id == tenant_id)
        if state is not None:
            check_choice("state", state, JOB_STATES)
            stmt = stmt.where(Job.state == state)
        return list(self.session.scalars(stmt))

    def get_job(self, job_id: int, *, tenant_id: int | None = None) -> Job:
        """A job by id; outside the caller's scope it is not found."""
        job = self.row(Job, job_id)
        if job is None or (tenant_id is not None and job.tenant_id != tenant_id):
            raise NotFoundError("job", str(job_id))
        return job

    def job_events(self, job: Job) -> list[JobEvent]:
        """The job's history, oldest first."""
        stmt = select(JobEvent).where(JobEvent.job_id == job.id).order_by(JobEvent.id)
        return list(self.session.scalars(stmt))

    def latest_reasons(self, job_ids: Iterable[int]) -> dict[int, str]:
        """The reason of each job's latest history row (why it waits, or how it ended), in one
        query per 500 jobs; a job without history is absent."""
        ids = list(job_ids)
        out: dict[int, str] = {}
        for start in range(0, len(ids), 500):
            latest = (
                select(func.max(JobEvent.id))
                .where(JobEvent.job_id.in_(ids[start : start + 500]))
                .group_by(JobEvent.job_id)
            )
            stmt = select(JobEvent.job_id, JobEvent.reason).where(JobEvent.id.in_(latest))
            out.update({job_id: reason for job_id, reason in self.session.execute(stmt)})
        return out

    def note_pending(self, reasons: Mapping[int, str]) -> int:
        """Record why each queued job still waits (job id -> reason), as a ``queued -> queued``
        history row written only when the reason changed: a job's latest row says why it waits
        now, and a center cycling every few seconds writes nothing while nothing changes.
        Jobs no longer queued are left alone. Returns the rows written."""
        latest = self.latest_reasons(reasons)
        queued = (
            set(
                self.session.scalars(
                    select(Job.id).where(Job.id.in_(list(reasons)), Job.state == "queued")
                )
            )
            if reasons
            else set()
        )
        now = self.now_s()
        rows = [
            JobEvent(job_id=job_id, from_state="queued", to_state="queued", reason=reason[:512],
                     at_s=now)
            for job_id, reason in reasons.items()
            if job_id in queued and latest.get(job_id) != reason[:512]
        ]  # fmt: skip
        self.session.add_all(rows)
        self.session.flush()
        return len(rows)

    def transition_job(
        self, job: Job, to_state: str, *, reason: str = "", energy_j: float | None = None
    ) -> Job:
        """Move a job along the state machine, releasing and billing its cards when it stops.

        ``energy_j``: the cards' measured energy since the last billing (else modelled).
        """
        check_choice("state", to_state, JOB_STATES)
        if to_state not in JOB_TRANSITIONS[job.state]:
            allowed = ", ".join(sorted(JOB_TRANSITIONS[job.state])) or "none (terminal)"
            raise ConflictError(
                f"job {job.id} cannot go from {job.state} to {to_state}",
                hint=f"from {job.state} it may go to: {allowed}",
                details={"job_id": job.id, "state": job.state, "to_state": to_state},
            )
        if job.state in _HOLDING_STATES and to_state not in _HOLDING_STATES:
            allocs = list(
                self.session.scalars(select(Allocation).where(Allocation.job_id == job.id))
            )
            kind = "preemption" if to_state == "preempted" else "job"
            self._bill(
                allocs,
                job.tenant_id,
                job.device_type,
                kind,
                f"job:{job.id} {to_state}",
                energy_j=energy_j,
            )
            job.server_id = None
            job.borrowed_cards = 0
        if to_state == "preempted":
            job.num_preemptions += 1
        now = self.now_s()
        self.session.add(
            JobEvent(
                job_id=job.id, from_state=job.state, to_state=to_state, reason=reason, at_s=now
            )
        )
        job.state = to_state
        job.updated_at_s = now
        return job

    def admit_job(
        self, job: Job, card_ids: Sequence[int], *, num_borrowed: int = 0, reason: str = "admitted"
    ) -> Job:
        """Record an admission: the job holds ``card_ids`` (the last ``num_borrowed`` borrowed);
        none for a host job (``num_cards`` 0: it runs on no server's cards)."""
        cards = self._cards(card_ids) if card_ids else []
        self.transition_job(job, "admitted", reason=reason)
        now = self.now_s()
        job.server_id = cards[0].server_id if cards else None
        job.admitted_at_s = now
        job.borrowed_cards = num_borrowed
        for i, card in enumerate(cards):
            self.session.add(
                Allocation(
                    card_id=card.id,
                    tenant_id=job.tenant_id,
                    job_id=job.id,
                    borrowed=i >= len(cards) - num_borrowed,
                    since_s=now,
                )
            )
        return job

    def preempt_job(self, job: Job, *, reason: str, energy_j: float | None = None) -> Job:
        """Preempt a job and put it back in the queue (two history rows, one ledger row)."""
        self.transition_job(job, "preempted", reason=reason, energy_j=energy_j)
        return self.transition_job(job, "queued", reason="requeued after preemption")

    # --- job runs (the job runner) --------------------------------------------------------
    def start_job_run(self, job: Job, *, runner: str, reason: str) -> Job:
        """admitted -> running, started by ``runner``; clears what an earlier run left."""
        self.transition_job(job, "running", reason=reason)
        job.runner = runner
        job.started_at_s = self.now_s()
        job.finished_at_s = None
        job.exit_code = None
        job.log_tail = None
        job.failure_code = None
        job.failure_reason = None
        return job

    def finish_job_run(
        self,
        job: Job,
        *,
        exit_code: int | None,
        log_tail: str = "",
        failure_code: str | None = None,
        failure_reason: str | None = None,
        energy_j: float | None = None,
    ) -> Job:
        """The run ended: succeeded (exit code 0, no failure) or failed; cards billed.

        ``failure_code``/``failure_reason`` say why when no exit code does (an image job the
        local runner cannot run, a command that would not start).
        """
        # what a job printed or failed with is kept and shown: never a key in it
        log_tail = redact_secrets(log_tail) if log_tail else log_tail
        failure_reason = redact_secrets(failure_reason) if failure_reason else failure_reason
        ok = exit_code == 0 and failure_code is None
        if failure_code is None and not ok:
            failure_code = "exit_code"
            failure_reason = failure_reason or f"the command exited with code {exit_code}"
        reason = "exited with code 0" if ok else (failure_reason or "failed")
        self.transition_job(
            job, "succeeded" if ok else "failed", reason=reason[:512], energy_j=energy_j
        )
        job.exit_code = exit_code
        job.log_tail = log_tail[-MAX_LOG_TAIL_CHARS:] if log_tail else None
        job.failure_code = failure_code
        job.failure_reason = failure_reason[:1024] if failure_reason else None
        job.finished_at_s = self.now_s()
        return job

    def job_cards(self, job: Job) -> tuple[str | None, list[int]]:
        """The server name and card indexes a job holds now (None, [] when it holds none)."""
        stmt = (
            select(ServerRow.name, CardRow.index)
            .join(CardRow, CardRow.server_id == ServerRow.id)
            .join(Allocation, Allocation.card_id == CardRow.id)
            .where(Allocation.job_id == job.id)
            .order_by(CardRow.index)
        )
        rows = list(self.session.execute(stmt))
        return (rows[0][0] if rows else None), [int(r[1]) for r in rows]

    def jobs_by_id(self, job_ids: Iterable[int]) -> dict[int, Job]:
        """The jobs of ``job_ids`` in one query (missing ids are left out)."""
        ids = list(job_ids)
        if not ids:
            return {}
        return {j.id: j for j in self.session.scalars(select(Job).where(Job.id.in_(ids)))}
