"""The service layer over the store: every read and write of control-plane objects goes here.

Callers open a transaction with ``Database.session()`` and wrap it in a :class:`Repository`
(``now_s`` injected). Validation that needs stored state (duplicates, ownership, state machine)
happens here and raises npucenter errors. A tenant-scoped caller passes ``tenant_id`` so that
another tenant's objects are reported as not found, never revealed.

The gateway calls :meth:`Repository.lookup_key`, :meth:`Repository.tenant_quotas` and
:meth:`Repository.append_usage`.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, selectinload

from npucenter.catalog import default_catalog
from npucenter.errors import (
    AuthenticationError,
    ConflictError,
    InvalidConfigError,
    NotFoundError,
)
from npucenter.store.models import (
    Allocation,
    ApiKey,
    Card,
    Deployment,
    Job,
    JobEvent,
    JobResult,
    Quota,
    Replica,
    Server,
    Tenant,
    UsageEntry,
)
from npucenter.store.rates import CardRates

__all__ = [
    "HEALTH_STATES",
    "JOB_KINDS",
    "JOB_STATES",
    "JOB_TRANSITIONS",
    "KEY_PREFIX",
    "MAX_LOG_TAIL_CHARS",
    "MAX_RESULT_BYTES",
    "PRIORITY_CLASSES",
    "TENANT_KINDS",
    "Principal",
    "QuotaView",
    "Repository",
    "canonical_device",
    "check_runs_on",
    "hash_secret",
    "new_secret",
]

KEY_PREFIX = "npc_"
TENANT_KINDS = ("company", "university", "research_institute")
PRIORITY_CLASSES = ("production", "research", "education", "best-effort")  # highest first
JOB_KINDS = ("finetune", "preprocess", "benchmark")
HEALTH_STATES = ("healthy", "degraded", "down")
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
MAX_RESULT_BYTES = 16 * 1024 * 1024  # a result document, as compact JSON


def new_secret() -> str:
    """A fresh API key secret: ``npc_`` and 43 URL-safe random characters."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_secret(secret: str) -> str:
    """The sha256 hex digest stored for a secret (keys are high-entropy, so no salt is needed)."""
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True, slots=True, kw_only=True)
class Principal:
    """Who is calling: an admin (``tenant_id`` None) or one tenant."""

    key_id: int
    scope: str  # "admin" | "tenant"
    tenant_id: int | None
    tenant_name: str | None

    @property
    def is_admin(self) -> bool:
        """Whether the key has the admin scope."""
        return self.scope == "admin"


@dataclass(frozen=True, slots=True, kw_only=True)
class QuotaView:
    """A tenant's quota for one device type, as the gateway and the admission snapshot see it.

    ``cohort``, ``priority_class`` and ``tokens_per_s`` are the same on every row of a tenant.
    """

    tenant_id: int
    tenant_name: str
    device_type: str
    nominal_cards: int
    borrowing_limit_cards: int | None
    lending_limit_cards: int | None
    cohort: str | None
    priority_class: str
    tokens_per_s: float | None


class Repository:
    """Reads and writes of one transaction; ``now_s`` gives epoch seconds (injected).

    ``rates`` prices held cards on the ledger (energy from modelled power, cost from the
    center's tariff); by default energy is modelled and nothing is priced.
    """

    def __init__(
        self, session: Session, now_s: Callable[[], float], rates: CardRates | None = None
    ) -> None:
        self.session = session
        self.now_s = now_s
        self.rates = rates or CardRates()

    # --- tenants ------------------------------------------------------------------------
    def create_tenant(self, name: str, kind: str) -> Tenant:
        """Create a tenant; a duplicate name raises ConflictError."""
        _check_name("tenant name", name)
        _check_choice("kind", kind, TENANT_KINDS)
        if self.session.scalar(select(Tenant).where(Tenant.name == name)) is not None:
            raise ConflictError(f"tenant {name!r} exists already", details={"name": name})
        tenant = Tenant(name=name, kind=kind, created_at_s=self.now_s())
        self.session.add(tenant)
        self.session.flush()
        return tenant

    def list_tenants(self, *, tenant_id: int | None = None) -> list[Tenant]:
        """All tenants (or only ``tenant_id``'s own record)."""
        stmt = select(Tenant).order_by(Tenant.id)
        if tenant_id is not None:
            stmt = stmt.where(Tenant.id == tenant_id)
        return list(self.session.scalars(stmt))

    def get_tenant(self, ref: str | int, *, tenant_id: int | None = None) -> Tenant:
        """A tenant by id or name; outside the caller's scope it is not found."""
        if isinstance(ref, int) or str(ref).isdigit():
            tenant = self.session.get(Tenant, int(ref))
        else:
            tenant = self.session.scalar(select(Tenant).where(Tenant.name == ref))
        if tenant is None or (tenant_id is not None and tenant.id != tenant_id):
            raise NotFoundError("tenant", str(ref))
        return tenant

    # --- API keys -----------------------------------------------------------------------
    def create_key(
        self, *, tenant_id: int | None, scope: str, name: str = "", secret: str | None = None
    ) -> tuple[ApiKey, str]:
        """Store a new key (hashed) and return it with its secret, which is never stored."""
        _check_choice("scope", scope, ("admin", "tenant"))
        if (scope == "tenant") != (tenant_id is not None):
            raise InvalidConfigError("scope", scope, "tenant keys need a tenant; admin keys none")
        secret = secret or new_secret()
        key = ApiKey(
            prefix=secret[:12],
            secret_sha256=hash_secret(secret),
            tenant_id=tenant_id,
            scope=scope,
            name=name,
            created_at_s=self.now_s(),
        )
        self.session.add(key)
        self.session.flush()
        return key, secret

    def ensure_admin_key(self, secret: str | None) -> str | None:
        """At first start store the admin key (``secret`` or a new one); return a new secret."""
        exists = self.session.scalar(
            select(ApiKey.id).where(ApiKey.scope == "admin", ApiKey.revoked_at_s.is_(None))
        )
        if exists is not None:
            return None
        _, stored = self.create_key(tenant_id=None, scope="admin", name="admin", secret=secret)
        return None if secret else stored

    def list_keys(self, *, tenant_id: int | None = None) -> list[ApiKey]:
        """Keys (never their secrets), all or one tenant's."""
        stmt = select(ApiKey).order_by(ApiKey.id)
        if tenant_id is not None:
            stmt = stmt.where(ApiKey.tenant_id == tenant_id)
        return list(self.session.scalars(stmt))

    def revoke_key(self, key_id: int, *, tenant_id: int | None = None) -> ApiKey:
        """Mark a key revoked; it stops authenticating at once."""
        key = self.session.get(ApiKey, key_id)
        if key is None or (tenant_id is not None and key.tenant_id != tenant_id):
            raise NotFoundError("key", str(key_id))
        if key.revoked_at_s is None:
            key.revoked_at_s = self.now_s()
        return key

    def lookup_key(self, secret: str) -> Principal:
        """The principal of a secret; raises AuthenticationError when unknown or revoked."""
        key = self.session.scalar(select(ApiKey).where(ApiKey.secret_sha256 == hash_secret(secret)))
        if key is None or key.revoked_at_s is not None:
            raise AuthenticationError(
                "the API key is not valid", hint="check NPUCENTER_API_KEY or ask for a new key"
            )
        name = None
        if key.tenant_id is not None:
            tenant = self.session.get(Tenant, key.tenant_id)
            name = tenant.name if tenant else None
        return Principal(key_id=key.id, scope=key.scope, tenant_id=key.tenant_id, tenant_name=name)

    # --- fleet --------------------------------------------------------------------------
    def create_server(
        self, name: str, device_type: str, num_cards: int, labels: dict[str, Any] | None = None
    ) -> Server:
        """Register a server with ``num_cards`` cards of a catalog device type."""
        _check_name("server name", name)
        device_id = canonical_device(device_type)
        if not 1 <= num_cards <= 64:
            raise InvalidConfigError("num_cards", num_cards, "must be between 1 and 64")
        if self.session.scalar(select(Server).where(Server.name == name)) is not None:
            raise ConflictError(f"server {name!r} exists already", details={"name": name})
        server = Server(
            name=name, device_type=device_id, labels=dict(labels or {}), created_at_s=self.now_s()
        )
        server.cards = [Card(index=i, device_type=device_id) for i in range(num_cards)]
        self.session.add(server)
        self.session.flush()
        return server

    def list_servers(self) -> list[Server]:
        """Every server with its cards."""
        stmt = select(Server).order_by(Server.id).options(selectinload(Server.cards))
        return list(self.session.scalars(stmt))

    def get_server(self, ref: str | int) -> Server:
        """A server by id or name."""
        if isinstance(ref, int) or str(ref).isdigit():
            server = self.session.get(Server, int(ref))
        else:
            server = self.session.scalar(select(Server).where(Server.name == ref))
        if server is None:
            raise NotFoundError("server", str(ref))
        return server

    def set_health(self, server: Server, health: str, card_index: int | None = None) -> Server:
        """Set a server's (or one card's) health; ``down`` cards take no new work."""
        _check_choice("health", health, HEALTH_STATES)
        if card_index is None:
            server.health = health
            for card in server.cards:
                card.health = health
        else:
            cards = [c for c in server.cards if c.index == card_index]
            if not cards:
                raise NotFoundError("card", f"{server.name}/{card_index}")
            cards[0].health = health
        return server

    def delete_server(self, server: Server) -> None:
        """Remove a server; refused while any of its cards is allocated."""
        card_ids = [c.id for c in server.cards]
        if card_ids and self.session.scalar(
            select(func.count(Allocation.id)).where(Allocation.card_id.in_(card_ids))
        ):
            raise ConflictError(
                f"server {server.name!r} has allocated cards",
                hint="drain it first (set its health to down and stop its workloads)",
            )
        self.session.execute(update(Job).where(Job.server_id == server.id).values(server_id=None))
        self.session.execute(
            update(Replica).where(Replica.server_id == server.id).values(server_id=None)
        )
        self.session.delete(server)

    def cards_in_use(self) -> dict[tuple[int, str], tuple[int, int]]:
        """(tenant id, device type) -> (cards held, of which borrowed)."""
        stmt = (
            select(Allocation.tenant_id, Card.device_type, Allocation.borrowed, func.count())
            .join(Card, Card.id == Allocation.card_id)
            .group_by(Allocation.tenant_id, Card.device_type, Allocation.borrowed)
        )
        out: dict[tuple[int, str], tuple[int, int]] = {}
        for tenant_id, device_type, borrowed, count in self.session.execute(stmt):
            used, lent = out.get((tenant_id, device_type), (0, 0))
            out[(tenant_id, device_type)] = (used + count, lent + (count if borrowed else 0))
        return out

    def allocations(self) -> list[Allocation]:
        """Every current card allocation."""
        return list(self.session.scalars(select(Allocation).order_by(Allocation.id)))

    # --- quotas -------------------------------------------------------------------------
    def set_quota(
        self,
        tenant: Tenant,
        device_type: str,
        *,
        nominal_cards: int,
        borrowing_limit_cards: int | None = None,
        lending_limit_cards: int | None = None,
        cohort: str | None = None,
        priority_class: str = "research",
        tokens_per_s: float | None = None,
    ) -> Quota:
        """Create or replace the tenant's quota for a device type."""
        device_id = canonical_device(device_type)
        for field, value in (
            ("nominal_cards", nominal_cards),
            ("borrowing_limit_cards", borrowing_limit_cards),
            ("lending_limit_cards", lending_limit_cards),
            ("tokens_per_s", tokens_per_s),
        ):
            if value is not None and value < 0:
                raise InvalidConfigError(field, value, "must be >= 0")
        if lending_limit_cards is not None and lending_limit_cards > nominal_cards:
            raise InvalidConfigError(
                "lending_limit_cards", lending_limit_cards, "cannot exceed nominal_cards"
            )
        if cohort is not None:
            _check_name("cohort", cohort)
        _check_choice("priority_class", priority_class, PRIORITY_CLASSES)
        quota = self.session.scalar(
            select(Quota).where(Quota.tenant_id == tenant.id, Quota.device_type == device_id)
        )
        if quota is None:
            quota = Quota(tenant_id=tenant.id, device_type=device_id)
            self.session.add(quota)
        quota.nominal_cards = nominal_cards
        quota.borrowing_limit_cards = borrowing_limit_cards
        quota.lending_limit_cards = lending_limit_cards
        quota.cohort, quota.priority_class, quota.updated_at_s = (
            cohort,
            priority_class,
            self.now_s(),
        )
        # Cohort, priority class and token rate are the tenant's (as in policy.TenantQuota):
        # setting them on one row sets them on every row of the tenant.
        for row in [quota, *self.list_quotas(tenant_id=tenant.id)]:
            row.cohort = cohort
            row.priority_class = priority_class
            row.tokens_per_s = tokens_per_s
            row.updated_at_s = self.now_s()
        self.session.flush()
        return quota

    def list_quotas(self, *, tenant_id: int | None = None) -> list[Quota]:
        """Quotas, all or one tenant's."""
        stmt = select(Quota).order_by(Quota.tenant_id, Quota.device_type)
        if tenant_id is not None:
            stmt = stmt.where(Quota.tenant_id == tenant_id)
        return list(self.session.scalars(stmt))

    def delete_quota(self, quota_id: int) -> None:
        """Remove a quota row (the tenant keeps what it holds until the next reclaim)."""
        quota = self.session.get(Quota, quota_id)
        if quota is None:
            raise NotFoundError("quota", str(quota_id))
        self.session.delete(quota)

    def tenant_quotas(self, tenant_id: int) -> list[QuotaView]:
        """The tenant's quotas as values (for the gateway's token limits and the snapshot)."""
        tenant = self.get_tenant(tenant_id)
        return [_quota_view(q, tenant.name) for q in self.list_quotas(tenant_id=tenant_id)]

    def all_quota_views(self) -> list[QuotaView]:
        """Every quota as a value, with tenant names."""
        names = {t.id: t.name for t in self.list_tenants()}
        return [_quota_view(q, names[q.tenant_id]) for q in self.list_quotas()]

    def priority_for(self, tenant_id: int, device_type: str, requested: str | None) -> str:
        """The workload's priority: the quota's class, or a lower one the caller asked for."""
        quota = self.session.scalar(
            select(Quota).where(Quota.tenant_id == tenant_id, Quota.device_type == device_type)
        )
        ceiling = quota.priority_class if quota else "best-effort"
        if requested is None:
            return ceiling
        _check_choice("priority_class", requested, PRIORITY_CLASSES)
        if PRIORITY_CLASSES.index(requested) < PRIORITY_CLASSES.index(ceiling):
            raise InvalidConfigError(
                "priority_class",
                requested,
                f"above the tenant's quota class {ceiling!r} for {device_type}",
            )
        return requested

    # --- deployments --------------------------------------------------------------------
    def create_deployment(
        self,
        tenant: Tenant,
        *,
        name: str,
        model: str,
        device_type: str,
        tp: int,
        precision: str,
        replicas: int,
        priority_class: str | None = None,
    ) -> Deployment:
        """Create a deployment after checking the model runs on the device (perf model)."""
        _check_name("deployment name", name)
        device_id = canonical_device(device_type)
        model_id, precision_id = check_runs_on(model, device_id, precision, tp)
        if not 0 <= replicas <= 256:
            raise InvalidConfigError("replicas", replicas, "must be between 0 and 256")
        exists = self.session.scalar(
            select(Deployment).where(Deployment.tenant_id == tenant.id, Deployment.name == name)
        )
        if exists is not None:
            raise ConflictError(f"deployment {name!r} exists already", details={"name": name})
        now = self.now_s()
        dep = Deployment(
            tenant_id=tenant.id,
            name=name,
            model=model_id,
            device_type=device_id,
            tp=tp,
            precision=precision_id,
            replicas=replicas,
            priority_class=self.priority_for(tenant.id, device_id, priority_class),
            created_at_s=now,
            updated_at_s=now,
        )
        self.session.add(dep)
        self.session.flush()
        self.session.add_all(
            Replica(deployment_id=dep.id, index=i, created_at_s=now) for i in range(replicas)
        )
        self.session.flush()
        return dep

    def list_deployments(self, *, tenant_id: int | None = None) -> list[Deployment]:
        """Deployments, all or one tenant's."""
        stmt = select(Deployment).order_by(Deployment.id)
        if tenant_id is not None:
            stmt = stmt.where(Deployment.tenant_id == tenant_id)
        return list(self.session.scalars(stmt))

    def get_deployment(self, dep_id: int, *, tenant_id: int | None = None) -> Deployment:
        """A deployment by id; outside the caller's scope it is not found."""
        dep = self.session.get(Deployment, dep_id)
        if dep is None or (tenant_id is not None and dep.tenant_id != tenant_id):
            raise NotFoundError("deployment", str(dep_id))
        return dep

    def replicas_of(self, dep: Deployment) -> list[Replica]:
        """The deployment's replicas, by index."""
        stmt = select(Replica).where(Replica.deployment_id == dep.id).order_by(Replica.index)
        return list(self.session.scalars(stmt))

    def scale_deployment(self, dep: Deployment, replicas: int) -> Deployment:
        """Set the desired replica count: new replicas wait for admission, extra ones stop."""
        if not 0 <= replicas <= 256:
            raise InvalidConfigError("replicas", replicas, "must be between 0 and 256")
        now = self.now_s()
        current = self.replicas_of(dep)
        for rep in current[replicas:]:
            self.release_replica(rep, dep, reason="scaled down")
            self.session.delete(rep)
        next_index = current[-1].index + 1 if current else 0
        for i in range(len(current), replicas):
            self.session.add(
                Replica(deployment_id=dep.id, index=next_index + i - len(current), created_at_s=now)
            )
        dep.replicas = replicas
        dep.updated_at_s = now
        self.session.flush()
        return dep

    def delete_deployment(self, dep: Deployment) -> None:
        """Stop every replica (billing what they used) and remove the deployment."""
        for rep in self.replicas_of(dep):
            self.release_replica(rep, dep, reason="deleted")
        self.session.delete(dep)

    def place_replica(
        self, rep: Replica, dep: Deployment, card_ids: Sequence[int], *, num_borrowed: int = 0
    ) -> None:
        """Record an admitted replica on its cards."""
        now = self.now_s()
        cards = self._cards(card_ids)
        rep.state = "placed"
        rep.server_id = cards[0].server_id
        rep.placed_at_s = now
        for i, card in enumerate(cards):
            self.session.add(
                Allocation(
                    card_id=card.id,
                    tenant_id=dep.tenant_id,
                    replica_id=rep.id,
                    borrowed=i >= len(cards) - num_borrowed,
                    since_s=now,
                )
            )

    def release_replica(
        self, rep: Replica, dep: Deployment, *, reason: str, kind: str = "replica"
    ) -> float:
        """Free a replica's cards, bill them to the ledger and mark it pending; device-seconds."""
        allocs = list(
            self.session.scalars(select(Allocation).where(Allocation.replica_id == rep.id))
        )
        used, _ = self._bill(
            allocs,
            dep.tenant_id,
            dep.device_type,
            kind,
            f"deployment:{dep.id}/replica:{rep.index} {reason}",
        )
        rep.state = "pending"
        rep.server_id = None
        rep.placed_at_s = None
        self.session.flush()
        return used

    # --- jobs ---------------------------------------------------------------------------
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
    ) -> Job:
        """Queue a job; it needs an image or a command."""
        _check_name("job name", name)
        _check_choice("kind", kind, JOB_KINDS)
        device_id = canonical_device(device_type)
        if not 1 <= num_cards <= 64:
            raise InvalidConfigError("num_cards", num_cards, "must be between 1 and 64")
        if not image and not command:
            raise InvalidConfigError("image", image, "a job needs an image or a command")
        now = self.now_s()
        job = Job(
            tenant_id=tenant.id,
            name=name,
            kind=kind,
            image=image or None,
            command=list(command),
            device_type=device_id,
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
            _check_choice("state", state, JOB_STATES)
            stmt = stmt.where(Job.state == state)
        return list(self.session.scalars(stmt))

    def get_job(self, job_id: int, *, tenant_id: int | None = None) -> Job:
        """A job by id; outside the caller's scope it is not found."""
        job = self.session.get(Job, job_id)
        if job is None or (tenant_id is not None and job.tenant_id != tenant_id):
            raise NotFoundError("job", str(job_id))
        return job

    def job_events(self, job: Job) -> list[JobEvent]:
        """The job's history, oldest first."""
        stmt = select(JobEvent).where(JobEvent.job_id == job.id).order_by(JobEvent.id)
        return list(self.session.scalars(stmt))

    def transition_job(
        self, job: Job, to_state: str, *, reason: str = "", energy_j: float | None = None
    ) -> Job:
        """Move a job along the state machine, releasing and billing its cards when it stops.

        ``energy_j``: the cards' measured energy since the last billing (else modelled).
        """
        _check_choice("state", to_state, JOB_STATES)
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
        """Record an admission: the job holds ``card_ids`` (the last ``num_borrowed`` borrowed)."""
        cards = self._cards(card_ids)
        self.transition_job(job, "admitted", reason=reason)
        now = self.now_s()
        job.server_id = cards[0].server_id
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

    def set_job_result(self, job: Job, document: dict[str, Any], *, source: str) -> JobResult:
        """Attach (or replace) the job's result document; at most MAX_RESULT_BYTES as JSON."""
        import json

        if not isinstance(document, dict):
            raise InvalidConfigError(
                "result", type(document).__name__, "a result must be a JSON object"
            )
        try:
            num_bytes = len(json.dumps(document, separators=(",", ":"), allow_nan=False))
        except (TypeError, ValueError) as exc:
            raise InvalidConfigError(
                "result", type(document).__name__, f"not storable as JSON: {exc}"
            ) from exc
        if num_bytes > MAX_RESULT_BYTES:
            raise InvalidConfigError(
                "result",
                f"{num_bytes} bytes",
                f"larger than {MAX_RESULT_BYTES} bytes",
                hint="drop per-request records (keep the summary) before uploading",
            )
        row = self.session.scalar(select(JobResult).where(JobResult.job_id == job.id))
        if row is None:
            row = JobResult(job_id=job.id)
            self.session.add(row)
        row.document = document
        row.num_bytes = num_bytes
        row.source = source
        row.created_at_s = self.now_s()
        self.session.flush()
        return row

    def job_result(self, job: Job) -> JobResult:
        """The job's result document; NotFoundError when it has none."""
        row = self.session.scalar(select(JobResult).where(JobResult.job_id == job.id))
        if row is None:
            raise NotFoundError("job result", str(job.id))
        return row

    def jobs_with_results(self, job_ids: Iterable[int]) -> set[int]:
        """Which of ``job_ids`` have a result document."""
        ids = list(job_ids)
        if not ids:
            return set()
        stmt = select(JobResult.job_id).where(JobResult.job_id.in_(ids))
        return set(self.session.scalars(stmt))

    def job_cards(self, job: Job) -> tuple[str | None, list[int]]:
        """The server name and card indexes a job holds now (None, [] when it holds none)."""
        stmt = (
            select(Server.name, Card.index)
            .join(Card, Card.server_id == Server.id)
            .join(Allocation, Allocation.card_id == Card.id)
            .where(Allocation.job_id == job.id)
            .order_by(Card.index)
        )
        rows = list(self.session.execute(stmt))
        return (rows[0][0] if rows else None), [int(r[1]) for r in rows]

    # --- usage ledger -------------------------------------------------------------------
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
        _check_name("usage kind", kind)
        for field, value in (
            ("device_seconds", device_seconds),
            ("tokens_in", tokens_in),
            ("tokens_out", tokens_out),
            ("energy_j", energy_j),
            ("cost_usd", cost_usd),
        ):
            if value is not None and value < 0:
                raise InvalidConfigError(field, value, "must be >= 0")
        if self.session.get(Tenant, tenant_id) is None:
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

    def checkpoint_usage(self) -> list[UsageEntry]:
        """Bill every held card up to now (moves each allocation's billing cursor)."""
        rows: list[UsageEntry] = []
        jobs: dict[int, list[Allocation]] = {}
        reps: dict[int, list[Allocation]] = {}
        for alloc in self.allocations():
            if alloc.job_id is not None:
                jobs.setdefault(alloc.job_id, []).append(alloc)
            elif alloc.replica_id is not None:
                reps.setdefault(alloc.replica_id, []).append(alloc)
        for job_id, allocs in jobs.items():
            job = self.session.get(Job, job_id)
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
            rep = self.session.get(Replica, rep_id)
            assert rep is not None
            dep = self.session.get(Deployment, rep.deployment_id)
            assert dep is not None
            rows += self._bill(
                allocs,
                dep.tenant_id,
                dep.device_type,
                "replica",
                f"deployment:{dep.id}/replica:{rep.index} checkpoint",
                release=False,
            )[1]
        return rows

    # --- helpers ------------------------------------------------------------------------
    def _cards(self, card_ids: Sequence[int]) -> list[Card]:
        cards = [self.session.get(Card, cid) for cid in card_ids]
        if not cards or any(c is None for c in cards):
            raise NotFoundError("card", ",".join(map(str, card_ids)))
        return [c for c in cards if c is not None]

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


def canonical_device(device_type: str) -> str:
    """The catalog id of a device type or alias; raises NotFoundError listing the valid ids."""
    if not isinstance(device_type, str) or not device_type.strip():
        raise InvalidConfigError("device_type", device_type, "must name a catalog device")
    return default_catalog().device(device_type).device_id


def check_runs_on(model: str, device_id: str, precision: str, tp: int) -> tuple[str, str]:
    """Check with the perf model that ``model`` runs on ``tp`` cards of the device.

    Returns the canonical (model id, precision). Raises ModelDoesNotFitError (with ``min_tp``),
    MissingFigureError, NotSupportedError or NotFoundError.
    """
    from npucenter.perf import build_perf_model

    if not 1 <= tp <= 64:
        raise InvalidConfigError("tp", tp, "must be between 1 and 64")
    catalog = default_catalog()
    model_id = catalog.model(model).model_id
    pm = build_perf_model(catalog, model=model_id, device=device_id, precision=precision, tp=tp)
    return model_id, str(getattr(pm.precision, "value", pm.precision))


def _quota_view(q: Quota, tenant_name: str) -> QuotaView:
    return QuotaView(
        tenant_id=q.tenant_id,
        tenant_name=tenant_name,
        device_type=q.device_type,
        nominal_cards=q.nominal_cards,
        borrowing_limit_cards=q.borrowing_limit_cards,
        lending_limit_cards=q.lending_limit_cards,
        cohort=q.cohort,
        priority_class=q.priority_class,
        tokens_per_s=q.tokens_per_s,
    )


def _check_name(field: str, value: str) -> None:
    if (
        not isinstance(value, str)
        or not value.strip()
        or len(value) > 128
        or value != value.strip()
    ):
        raise InvalidConfigError(field, value, "must be 1-128 characters without outer spaces")


def _check_choice(field: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise InvalidConfigError(field, value, f"choose one of {', '.join(choices)}")
