"""Host jobs: work that needs no accelerator card, admitted by count instead of onto cards.

The twin's jobs (kinds ``simulate`` and ``plan``) run on the host's CPU. Asked with
``num_cards: 0`` they hold no card of the tenant's quota: the card policy (:mod:`.cycle`) never
sees them, and this one admits each tenant's oldest first while the tenant runs fewer than
``limit`` of them (so one tenant cannot flood the host with simulations). They are never
preempted: they take nothing a card workload could want.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

__all__ = ["HOST_JOBS_PER_TENANT", "HOST_JOB_KINDS", "HostJob", "admit_host_jobs"]

#: Host jobs one tenant may run at once (the rest wait, oldest first).
HOST_JOBS_PER_TENANT = 2
#: The job kinds that may ask for no card.
HOST_JOB_KINDS = frozenset({"simulate", "plan"})


@dataclass(frozen=True, slots=True)
class HostJob:
    """A queued job that needs no card."""

    workload_id: str
    tenant: str
    submitted_s: float


def admit_host_jobs(
    pending: Sequence[HostJob],
    running: Mapping[str, int],
    *,
    limit: int = HOST_JOBS_PER_TENANT,
) -> tuple[list[HostJob], list[HostJob]]:
    """``(admitted, waiting)``: each tenant's oldest queued host jobs while it runs fewer than
    ``limit`` (``running``: host jobs admitted or running, per tenant)."""
    held = dict(running)
    admitted: list[HostJob] = []
    waiting: list[HostJob] = []
    for job in sorted(pending, key=lambda j: (j.submitted_s, j.workload_id)):
        if held.get(job.tenant, 0) < limit:
            held[job.tenant] = held.get(job.tenant, 0) + 1
            admitted.append(job)
        else:
            waiting.append(job)
    return admitted, waiting
