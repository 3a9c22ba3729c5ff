"""Jobs in the twin: the fleet file's ``jobs:`` admitted over time by the live center's policy.

Fine-tune, preprocessing and benchmark jobs arrive at ``arrival_s`` and hold ``cards`` cards for
``duration_s``. At every arrival and finish an admission cycle
(:func:`npucenter.policy.admission.decide_admission`) runs on a snapshot of the fleet, the
tenants' quotas and what runs (the replicas placed at time 0, and jobs), exactly as the control
plane runs it: owners reclaim lent cards, higher-priority work preempts its tenant's lower
priority work. A preempted job is requeued and restarts from scratch (the live job runner kills
and requeues it); a preempted replica leaves its service's routing until it is admitted again.
Admission reads no load, so the timeline is computed before the requests are served. At most
64 cycles run at one instant; if work is still queued after them, one more decision gives each
waiting workload admission's reason (not applied: the run may end there). Pure.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from npucenter.fleet.jobs import JobSpec
from npucenter.fleet.placement import FleetPlacement, fleet_admission
from npucenter.policy.admission import (
    AdmissionDecision,
    AdmissionSnapshot,
    Admitted,
    PendingReason,
    Workload,
    decide_admission,
)

if TYPE_CHECKING:
    from npucenter.fleet.spec import FleetSpec

__all__ = [
    "JobRecord",
    "JobTimeline",
    "ReplicaOutage",
    "simulate_jobs",
]

_MAX_CYCLES_PER_INSTANT = 64  # admission cycles at one time stamp (each admits or preempts)


@dataclass(frozen=True, slots=True, kw_only=True)
class JobRecord:
    """What happened to one job."""

    name: str
    tenant: str
    device: str
    num_cards: int
    arrival_s: float
    duration_s: float
    start_s: float | None  # its last start; None: never started
    finish_s: float | None  # None: never finished
    wait_s: float  # time queued in all (first wait and every wait after a preemption)
    num_preemptions: int
    pending_reason: str | None  # why it waits at the end (None: it finished)
    pending_message: str | None = None  # admission's line saying what to do about it
    device_ran: str | None = None  # the device type of its last start (a fungible job's choice)


@dataclass(frozen=True, slots=True, kw_only=True)
class ReplicaOutage:
    """A replica preempted by admission at ``down_s`` and admitted again at ``up_s``."""

    replica_id: str
    down_s: float
    up_s: float | None  # None: never admitted again
    pending_reason: str | None = None  # why it still waits at the end (None: admitted again)
    pending_message: str | None = None  # admission's line saying what to do about it
    device_type: str | None = None  # the type it was admitted again on (a fungible one chooses)


@dataclass(frozen=True, slots=True, kw_only=True)
class JobTimeline:
    """The jobs' admission history: records, replica outages and who held which cards when."""

    jobs: tuple[JobRecord, ...]
    outages: tuple[ReplicaOutage, ...]
    end_s: float  # the last admission event
    #: (device type, "replica" | "job", cards, start_s, end_s or None: still held)
    holds: tuple[tuple[str, str, int, float, float | None], ...]

    def summary(self, fleet: FleetSpec, horizon_s: float) -> dict[str, Any]:
        """Jobs' waits and per-device card allocation over ``[0, max(horizon_s, end_s)]``."""
        horizon = max(horizon_s, self.end_s)
        waits = sorted(j.wait_s for j in self.jobs if j.finish_s is not None)
        used: dict[str, dict[str, float]] = {}
        for device, kind, cards, start, end in self.holds:
            stop = horizon if end is None else min(end, horizon)
            per = used.setdefault(device, {"replica": 0.0, "job": 0.0})
            per[kind] += cards * max(0.0, stop - start)
        allocation: dict[str, dict[str, float]] = {}
        for pool in fleet.servers:
            capacity = pool.num_cards * horizon
            per = used.get(pool.device.lower(), {"replica": 0.0, "job": 0.0})
            allocation[pool.device] = {
                "replica_fraction": per["replica"] / capacity if capacity else 0.0,
                "job_fraction": per["job"] / capacity if capacity else 0.0,
                "allocated_fraction": (per["replica"] + per["job"]) / capacity if capacity else 0.0,
            }
        return {
            "num_jobs": len(self.jobs),
            "finished": sum(j.finish_s is not None for j in self.jobs),
            "mean_wait_s": sum(waits) / len(waits) if waits else None,
            "max_wait_s": waits[-1] if waits else None,
            "preemptions": sum(j.num_preemptions for j in self.jobs),
            "replica_preemptions": len(self.outages),
            "horizon_s": horizon,
            "card_allocation": allocation,
            "jobs": [
                {
                    "name": j.name,
                    "tenant": j.tenant,
                    "device": j.device,
                    "cards": j.num_cards,
                    "arrival_s": j.arrival_s,
                    "start_s": j.start_s,
                    "finish_s": j.finish_s,
                    "wait_s": j.wait_s,
                    "preemptions": j.num_preemptions,
                    "pending_reason": j.pending_reason,
                    "pending_message": j.pending_message,
                    "device_ran": j.device_ran,
                }
                for j in self.jobs
            ],
            "replica_outages": [
                {
                    "replica_id": o.replica_id,
                    "down_s": o.down_s,
                    "up_s": o.up_s,
                    "pending_reason": o.pending_reason,
                    "pending_message": o.pending_message,
                    "device_type": o.device_type,
                }
                for o in self.outages
            ],
        }


def simulate_jobs(fleet: FleetSpec, placement: FleetPlacement) -> JobTimeline:
    """Admit the fleet's jobs over time against the replicas placed at time 0."""
    return _JobLoop(fleet, placement).run()


class _JobLoop:
    """One timeline's mutable state."""

    def __init__(self, fleet: FleetSpec, placement: FleetPlacement) -> None:
        setup = fleet_admission(fleet)
        self.base = setup.snapshot
        self.workloads: dict[str, Workload] = dict(setup.workloads)
        self.replica_id = {p.workload_id: p.replica_id for p in placement.replicas}
        self.running: dict[str, Admitted] = {a.workload_id: a for a in placement.running}
        self.held_since: dict[str, float] = dict.fromkeys(self.running, 0.0)
        self.jobs: dict[str, JobSpec] = {}
        for k, job in enumerate(fleet.jobs):
            workload_id = f"job{k:04d}-{job.name}"
            self.jobs[workload_id] = job
            self.workloads[workload_id] = Workload(
                workload_id=workload_id,
                tenant=job.tenant,
                kind=job.kind,
                device_type=fleet.pool(job.device).device.lower(),
                fallback_device_types=tuple(
                    fleet.pool(d).device.lower() for d in job.fallback_devices
                ),
                num_cards=job.num_cards,
                tp_size=job.tp,
                priority_class=job.priority_class,
                submitted_s=job.arrival_s,
                max_duration_s=job.duration_s,
            )
        self.queue: dict[str, Workload] = {}
        self.queued_since: dict[str, float] = {}
        self.wait_s: dict[str, float] = dict.fromkeys(self.jobs, 0.0)
        self.start_s: dict[str, float] = {}
        self.finish_s: dict[str, float] = {}
        self.preemptions: dict[str, int] = dict.fromkeys(self.jobs, 0)
        self.reason: dict[str, PendingReason] = {}
        self.message: dict[str, str] = {}
        self.device_ran: dict[str, str] = {}
        self.version: dict[str, int] = {}
        self.finishes: list[tuple[float, int, str, int]] = []  # (time, seq, id, version)
        self.seq = 0
        self.outages: list[ReplicaOutage] = []
        self.down_since: dict[str, float] = {}
        self.holds: list[tuple[str, str, int, float, float | None]] = []

    def run(self) -> JobTimeline:
        arrivals = sorted(self.jobs, key=lambda w: (self.jobs[w].arrival_s, w))
        i, t = 0, 0.0
        while i < len(arrivals) or self.finishes:
            next_arrival = self.jobs[arrivals[i]].arrival_s if i < len(arrivals) else math.inf
            t = min(next_arrival, self.finishes[0][0] if self.finishes else math.inf)
            while i < len(arrivals) and self.jobs[arrivals[i]].arrival_s <= t:
                self._enqueue(arrivals[i], t)
                i += 1
            while self.finishes and self.finishes[0][0] <= t:
                _, _, workload_id, version = heapq.heappop(self.finishes)
                if self.version.get(workload_id) == version and workload_id in self.running:
                    self._stop(workload_id, t)
                    self.finish_s[workload_id] = t
            self._cycle(t)
        return self._timeline(t)

    def _enqueue(self, workload_id: str, t: float) -> None:
        self.queue[workload_id] = self.workloads[workload_id]
        self.queued_since[workload_id] = t

    def _stop(self, workload_id: str, t: float) -> None:
        placed = self.running.pop(workload_id)
        kind = "job" if workload_id in self.jobs else "replica"
        start = self.held_since.pop(workload_id)
        self.holds.append((placed.device_type, kind, placed.num_cards, start, t))

    def _decide(self, t: float) -> AdmissionDecision:
        """One admission decision on what runs and waits now; records why each waits."""
        snapshot = AdmissionSnapshot(
            fleet=self.base.fleet,
            quotas=self.base.quotas,
            running=tuple(self.running.values()),
            now_s=t,
        )
        decision = decide_admission(snapshot, tuple(self.queue.values()), t)
        for entry in decision.pending:
            self.reason[entry.workload_id] = entry.reason
            self.message[entry.workload_id] = entry.message
        return decision

    def _cycle(self, t: float) -> None:
        for _ in range(_MAX_CYCLES_PER_INSTANT):
            if not self.queue:
                return
            decision = self._decide(t)
            if not decision.admitted and not decision.preempted:
                return
            for stop in decision.preempted:
                self._stop(stop.workload_id, t)
                self._enqueue(stop.workload_id, t)
                if stop.workload_id in self.jobs:
                    self.preemptions[stop.workload_id] += 1
                else:
                    self.down_since[stop.workload_id] = t
            for placed in decision.admitted:
                workload_id = placed.workload_id
                del self.queue[workload_id]
                self.running[workload_id] = placed
                self.held_since[workload_id] = t
                self.reason.pop(workload_id, None)
                if workload_id in self.jobs:
                    self.wait_s[workload_id] += t - self.queued_since.pop(workload_id)
                    self.start_s[workload_id] = t
                    self.device_ran[workload_id] = placed.device_type
                    self.version[workload_id] = self.version.get(workload_id, 0) + 1
                    self.seq += 1
                    heapq.heappush(
                        self.finishes,
                        (t + self.jobs[workload_id].duration_s, self.seq, workload_id,
                         self.version[workload_id]),
                    )  # fmt: skip
                else:
                    self._replica_up(workload_id, t, placed.device_type)
        if self.queue:  # the cycles ran out: what the last one requeued is decided, not applied
            self._waiting_reasons(t)

    def _waiting_reasons(self, t: float) -> None:
        """Give every workload still queued admission's reason (the run may end here)."""
        decision = self._decide(t)
        starting = {a.workload_id for a in decision.admitted}
        for workload_id in self.queue:
            if workload_id in starting or workload_id not in self.reason:
                # admission would start it (or make room for it) at its next cycle: at this
                # instant the cards it needs are not free for it
                self.reason[workload_id] = PendingReason.NO_CAPACITY
                self.message[workload_id] = (
                    f"admission would start it at its next cycle; the twin stops after "
                    f"{_MAX_CYCLES_PER_INSTANT} admission cycles at one instant ({t:g} s): "
                    "work preempting other work in turn"
                )

    def _replica_up(self, workload_id: str, t: float, device_type: str) -> None:
        self.queued_since.pop(workload_id, None)
        down = self.down_since.pop(workload_id, None)
        if down is not None:
            self.outages.append(
                ReplicaOutage(
                    replica_id=self.replica_id[workload_id],
                    down_s=down,
                    up_s=t,
                    device_type=device_type,
                )
            )

    def _timeline(self, end_s: float) -> JobTimeline:
        for workload_id, down in sorted(self.down_since.items()):
            reason = self.reason.get(workload_id)
            self.outages.append(
                ReplicaOutage(
                    replica_id=self.replica_id[workload_id],
                    down_s=down,
                    up_s=None,
                    pending_reason=reason.value if reason is not None else None,
                    pending_message=self.message.get(workload_id) if reason is not None else None,
                )
            )
        holds = list(self.holds)
        for workload_id, placed in sorted(self.running.items()):
            kind = "job" if workload_id in self.jobs else "replica"
            holds.append(
                (placed.device_type, kind, placed.num_cards, self.held_since[workload_id], None)
            )
        records = []
        for workload_id, job in self.jobs.items():
            waiting = workload_id in self.queue
            wait = self.wait_s[workload_id]
            if waiting:
                wait += end_s - self.queued_since[workload_id]
            reason = self.reason.get(workload_id) if waiting else None
            records.append(
                JobRecord(
                    name=job.name,
                    tenant=job.tenant,
                    device=job.device,
                    num_cards=job.num_cards,
                    arrival_s=job.arrival_s,
                    duration_s=job.duration_s,
                    start_s=self.start_s.get(workload_id),
                    finish_s=self.finish_s.get(workload_id),
                    wait_s=wait,
                    num_preemptions=self.preemptions[workload_id],
                    pending_reason=reason.value if reason is not None else None,
                    pending_message=self.message.get(workload_id) if reason is not None else None,
                    device_ran=self.device_ran.get(workload_id),
                )
            )
        return JobTimeline(
            jobs=tuple(records),
            outages=tuple(sorted(self.outages, key=lambda o: (o.down_s, o.replica_id))),
            end_s=end_s,
            holds=tuple(holds),
        )
