"""SQLAlchemy 2 models of the control plane: fleet, tenants, keys, quotas, deployments, jobs, ledger.

Owns the schema only; reads and writes go through :mod:`npucenter.store.repository` (the
facade over one module per aggregate). Times are
epoch seconds (``*_at_s`` floats) so device-seconds are plain differences on every backend.
The usage ledger is append-only: an ORM update or delete of a :class:`UsageEntry` raises.
Rows of a concept the core also names carry a ``Row`` suffix (``ServerRow``, ``CardRow``,
``ReplicaRow``): admission's ``Server``/``Card`` and the gateway's ``Replica`` are other things.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Float,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    event,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

__all__ = [
    "Adapter",
    "Allocation",
    "ApiKey",
    "Artifact",
    "Base",
    "CardRow",
    "Cohort",
    "ConsoleSession",
    "Deployment",
    "Job",
    "JobEvent",
    "JobResult",
    "JobSpec",
    "Quota",
    "ReplicaRow",
    "ServerRow",
    "SharedBucket",
    "SharedDocument",
    "Tenant",
    "UsageEntry",
]

# Stable constraint names so Alembic migrations are identical on SQLite and PostgreSQL.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Declarative base with the naming convention."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class ServerRow(Base):
    """A server of the fleet holding ``num_cards`` cards of one device type."""

    __tablename__ = "servers"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    device_type: Mapped[str] = mapped_column(String(64), index=True)  # canonical catalog id
    health: Mapped[str] = mapped_column(String(16), default="healthy")
    labels: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at_s: Mapped[float] = mapped_column(Float)
    cards: Mapped[list[CardRow]] = relationship(
        back_populates="server", cascade="all, delete-orphan", order_by="CardRow.index"
    )


class CardRow(Base):
    """One accelerator card (NPU or GPU) in a server."""

    __tablename__ = "cards"
    __table_args__ = (UniqueConstraint("server_id", "index", name="uq_cards_server_index"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    server_id: Mapped[int] = mapped_column(ForeignKey("servers.id", ondelete="CASCADE"))
    index: Mapped[int] = mapped_column(Integer)
    device_type: Mapped[str] = mapped_column(String(64), index=True)
    health: Mapped[str] = mapped_column(String(16), default="healthy")
    server: Mapped[ServerRow] = relationship(back_populates="cards")


class Tenant(Base):
    """A company, university or research institute using the center."""

    __tablename__ = "tenants"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    kind: Mapped[str] = mapped_column(String(32))
    created_at_s: Mapped[float] = mapped_column(Float)


class ApiKey(Base):
    """An API key: only a salted scrypt hash of the secret is stored (see :mod:`.keys`).

    ``short_id`` is public (listings, and inside generated secrets); ``tenant_id`` is null for
    admin keys. ``lookup_tag``: "" (found by short id), "*" (found by trying: an
    operator-chosen secret) or the first 8 characters of a key made before migration 0004.
    """

    __tablename__ = "api_keys"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    short_id: Mapped[str] = mapped_column(String(16), unique=True)
    secret_hash: Mapped[str] = mapped_column(String(255))
    lookup_tag: Mapped[str] = mapped_column(String(8), default="", index=True)
    tenant_id: Mapped[int | None] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), nullable=True, index=True
    )
    scope: Mapped[str] = mapped_column(String(16))  # "admin" | "tenant"
    name: Mapped[str] = mapped_column(String(128), default="")
    created_at_s: Mapped[float] = mapped_column(Float)
    revoked_at_s: Mapped[float | None] = mapped_column(Float, nullable=True)


class Quota(Base):
    """A tenant's quota for one device type (cards), in a cohort, with a priority class.

    ``borrowing_limit_cards``/``lending_limit_cards`` null means unlimited (Kueue's default).
    ``tokens_per_s`` governs request admission in the gateway for shared services.
    """

    __tablename__ = "quotas"
    __table_args__ = (UniqueConstraint("tenant_id", "device_type", name="uq_quotas_tenant_device"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    device_type: Mapped[str] = mapped_column(String(64))
    nominal_cards: Mapped[int] = mapped_column(Integer)
    borrowing_limit_cards: Mapped[int | None] = mapped_column(Integer, nullable=True)
    lending_limit_cards: Mapped[int | None] = mapped_column(Integer, nullable=True)
    cohort: Mapped[str | None] = mapped_column(String(64), nullable=True)  # None: no cohort
    priority_class: Mapped[str] = mapped_column(String(32), default="research")
    tokens_per_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    # the tenant's (same on every row): "none" | "hold" | "hold-and-drain"
    stop_policy: Mapped[str] = mapped_column(String(16), default="none")
    borrow_unnamed_device_types: Mapped[bool] = mapped_column(Boolean, default=False)
    fair_share_weight: Mapped[float] = mapped_column(Float, default=1.0)
    updated_at_s: Mapped[float] = mapped_column(Float)


class Cohort(Base):
    """A cohort with a parent and cards of its own (nested cohorts, after Kueue's Cohort).

    Cohorts tenants name without a row here are flat: no parent, no cards of their own.
    """

    __tablename__ = "cohorts"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    parent: Mapped[str | None] = mapped_column(String(64), nullable=True)
    nominal_cards: Mapped[dict[str, int]] = mapped_column(JSON, default=dict)
    borrowing_limit_cards: Mapped[dict[str, int]] = mapped_column(JSON, default=dict)
    lending_limit_cards: Mapped[dict[str, int]] = mapped_column(JSON, default=dict)
    fair_share_weight: Mapped[float] = mapped_column(Float, default=1.0)
    updated_at_s: Mapped[float] = mapped_column(Float)


class Deployment(Base):
    """An inference service: ``replicas`` replicas of ``model`` on ``tp`` cards each."""

    __tablename__ = "deployments"
    __table_args__ = (UniqueConstraint("tenant_id", "name", name="uq_deployments_tenant_name"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(128))
    model: Mapped[str] = mapped_column(String(128))
    device_type: Mapped[str] = mapped_column(String(64))
    tp: Mapped[int] = mapped_column(Integer)
    precision: Mapped[str] = mapped_column(String(16))
    replicas: Mapped[int] = mapped_column(Integer)  # desired replica count
    priority_class: Mapped[str] = mapped_column(String(32))
    created_at_s: Mapped[float] = mapped_column(Float)
    updated_at_s: Mapped[float] = mapped_column(Float)
    # the engine that serves it and its options (npucenter.engines.EngineChoice; never a secret:
    # an external server's key is named by an environment variable, api_key_env)
    engine: Mapped[str] = mapped_column(String(32), default="virtual", server_default="virtual")
    engine_options: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # autoscaling bounds (live/autoscaler.py); both None: a fixed count (migration 0010)
    min_replicas: Mapped[int | None] = mapped_column(Integer, nullable=True)
    max_replicas: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # with min_replicas 0: no request for this long -> 0 replicas (None: the policy's default;
    # migration 0012)
    idle_to_zero_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    # the device types its replicas accept, in order (device_type first; migration 0013);
    # empty or None: device_type only
    device_types: Mapped[list[str] | None] = mapped_column(JSON, nullable=True, default=list)

    def accepted_device_types(self) -> list[str]:
        """The device types its replicas accept, in order of preference."""
        return list(self.device_types or ()) or [self.device_type]


class ReplicaRow(Base):
    """One replica of a deployment: ``pending`` until admitted, then ``placed`` on one server."""

    __tablename__ = "replicas"
    __table_args__ = (UniqueConstraint("deployment_id", "index", name="uq_replicas_dep_index"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version: Mapped[int] = mapped_column(Integer, server_default="1")  # optimistic concurrency
    __mapper_args__ = {"version_id_col": version}
    deployment_id: Mapped[int] = mapped_column(ForeignKey("deployments.id", ondelete="CASCADE"))
    index: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16), default="pending")
    server_id: Mapped[int | None] = mapped_column(ForeignKey("servers.id"), nullable=True)
    created_at_s: Mapped[float] = mapped_column(Float)
    placed_at_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    # what the reconciler saw of a placed replica (migration 0012): starting | running |
    # pending (no node takes it) | failed; None: not reported. Only running (or None) bills.
    run_state: Mapped[str | None] = mapped_column(String(16), nullable=True)
    run_reason: Mapped[str | None] = mapped_column(String(512), nullable=True)
    run_since_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    # the device type admission placed it on (migration 0013); None while pending, and for
    # rows placed before: the deployment's device_type
    device_type: Mapped[str | None] = mapped_column(String(64), nullable=True)


class Job(Base):
    """A fine-tune, preprocess or benchmark job; ``state`` follows the job state machine."""

    __tablename__ = "jobs"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # Optimistic concurrency: a write based on a stale read raises (mapped to ConflictError).
    version: Mapped[int] = mapped_column(Integer, server_default="1")
    __mapper_args__ = {"version_id_col": version}
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(128))
    kind: Mapped[str] = mapped_column(
        String(16)
    )  # finetune | preprocess | benchmark | simulate | plan
    image: Mapped[str | None] = mapped_column(String(512), nullable=True)
    command: Mapped[list[str]] = mapped_column(JSON, default=list)
    device_type: Mapped[str] = mapped_column(String(64))  # where it runs (first choice if queued)
    # a fungible job's device types in order of preference (migration 0005); []: device_type only
    device_types: Mapped[list[str]] = mapped_column(JSON, default=list)
    num_cards: Mapped[int] = mapped_column(Integer)
    priority_class: Mapped[str] = mapped_column(String(32))
    state: Mapped[str] = mapped_column(String(16), index=True)
    server_id: Mapped[int | None] = mapped_column(ForeignKey("servers.id"), nullable=True)
    borrowed_cards: Mapped[int] = mapped_column(Integer, default=0)
    num_preemptions: Mapped[int] = mapped_column(Integer, default=0)
    created_at_s: Mapped[float] = mapped_column(Float)
    updated_at_s: Mapped[float] = mapped_column(Float)
    admitted_at_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    # What the runner saw (migration 0003): the last run's exit code and bounded log tail, and
    # why the job failed when no exit code says it (e.g. ``not_supported``: an image job).
    started_at_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    finished_at_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    exit_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    log_tail: Mapped[str | None] = mapped_column(Text, nullable=True)
    failure_code: Mapped[str | None] = mapped_column(String(32), nullable=True)
    failure_reason: Mapped[str | None] = mapped_column(String(1024), nullable=True)
    runner: Mapped[str | None] = mapped_column(String(32), nullable=True)  # "local" | None


class JobResult(Base):
    """A job's result document (a benchmark's JSON), at most one per job; replaced on upload."""

    __tablename__ = "job_results"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), unique=True)
    document: Mapped[dict[str, Any]] = mapped_column(JSON)
    num_bytes: Mapped[int] = mapped_column(Integer)
    source: Mapped[str] = mapped_column(String(16))  # "runner" (result file) | "upload"
    created_at_s: Mapped[float] = mapped_column(Float)


class JobEvent(Base):
    """One row of a job's history: a state transition and why."""

    __tablename__ = "job_events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    from_state: Mapped[str | None] = mapped_column(String(16), nullable=True)
    to_state: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(String(512), default="")
    at_s: Mapped[float] = mapped_column(Float)


class Allocation(Base):
    """A card held by a job or a replica; a card has at most one allocation (unique card_id)."""

    __tablename__ = "allocations"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    card_id: Mapped[int] = mapped_column(ForeignKey("cards.id", ondelete="CASCADE"), unique=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    job_id: Mapped[int | None] = mapped_column(
        ForeignKey("jobs.id", ondelete="CASCADE"), nullable=True, index=True
    )
    replica_id: Mapped[int | None] = mapped_column(
        ForeignKey("replicas.id", ondelete="CASCADE"), nullable=True, index=True
    )
    borrowed: Mapped[bool] = mapped_column(Boolean, default=False)
    since_s: Mapped[float] = mapped_column(Float)


class UsageEntry(Base):
    """One append-only row of the usage ledger."""

    __tablename__ = "usage_ledger"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"), index=True)
    kind: Mapped[str] = mapped_column(String(32))  # job | replica | preemption | tokens | ...
    device_type: Mapped[str | None] = mapped_column(String(64), nullable=True)
    device_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    tokens_in: Mapped[int] = mapped_column(Integer, default=0)
    tokens_out: Mapped[int] = mapped_column(Integer, default=0)
    energy_j: Mapped[float] = mapped_column(Float, default=0.0)
    cost_usd: Mapped[float | None] = mapped_column(Float, nullable=True)
    ref: Mapped[str] = mapped_column(String(256), default="")
    at_s: Mapped[float] = mapped_column(Float, index=True)
    # The gateway request a ``tokens`` row meters (migration 0006): at most one row per request,
    # so replaying the usage journal after a crash never bills a request twice.
    request_id: Mapped[str | None] = mapped_column(String(64), nullable=True, unique=True)


@event.listens_for(UsageEntry, "before_update")
@event.listens_for(UsageEntry, "before_delete")
def _ledger_is_append_only(mapper: Any, connection: Any, target: UsageEntry) -> None:
    raise RuntimeError("the usage ledger is append-only")


# --- artifacts (migration 0007): data sets, adapters and job outputs of a tenant ------------
class Artifact(Base):
    """A tenant's stored file or directory (bytes in the artifact store under ``location``)."""

    __tablename__ = "artifacts"
    __table_args__ = (UniqueConstraint("tenant_id", "kind", "name"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # dataset | adapter | output
    name: Mapped[str] = mapped_column(String(128))
    format: Mapped[str] = mapped_column(String(32))  # jsonl | packed-jsonl | peft-lora
    sha256: Mapped[str] = mapped_column(String(64))
    num_bytes: Mapped[int] = mapped_column(Integer)
    num_records: Mapped[int | None] = mapped_column(Integer, nullable=True)
    location: Mapped[str] = mapped_column(String(512))  # the artifact store's key
    source_job_id: Mapped[int | None] = mapped_column(
        ForeignKey("jobs.id", ondelete="SET NULL"), nullable=True
    )
    created_at_s: Mapped[float] = mapped_column(Float)


class Adapter(Base):
    """A LoRA adapter a fine-tune produced: served as ``<name>`` or ``<base_model>:<name>``."""

    __tablename__ = "adapters"
    __table_args__ = (UniqueConstraint("tenant_id", "name"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(128))
    base_model: Mapped[str] = mapped_column(String(128))
    rank: Mapped[int] = mapped_column(Integer)
    alpha: Mapped[float] = mapped_column(Float)
    target_modules: Mapped[list[str]] = mapped_column(JSON, default=list)
    artifact_id: Mapped[int] = mapped_column(ForeignKey("artifacts.id", ondelete="CASCADE"))
    source_job_id: Mapped[int | None] = mapped_column(
        ForeignKey("jobs.id", ondelete="SET NULL"), nullable=True
    )
    created_at_s: Mapped[float] = mapped_column(Float)


class JobSpec(Base):
    """What a job program (``preprocess``, ``finetune``) is given: its spec, inputs by id."""

    __tablename__ = "job_specs"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), unique=True)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)


class SharedBucket(Base):
    """A token bucket several gateway processes share (:mod:`npucenter.store.coordination`)."""

    __tablename__ = "shared_buckets"
    bucket: Mapped[str] = mapped_column(String(160), primary_key=True)  # "<tenant>/<kind>"
    rate_per_s: Mapped[float] = mapped_column(Float)
    burst: Mapped[float] = mapped_column(Float)
    level: Mapped[float] = mapped_column(Float)  # at updated_s
    updated_s: Mapped[float] = mapped_column(Float)


class SharedDocument(Base):
    """A document the leading process publishes for the others (e.g. the replicas it serves)."""

    __tablename__ = "shared_documents"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    document: Mapped[dict[str, Any]] = mapped_column(JSON)
    updated_at_s: Mapped[float] = mapped_column(Float)


class ConsoleSession(Base):
    """A console sign-in (migration 0011): a hash of its token, never the token or the key.

    ``key_id`` is the API key that signed in (its principal); ``expires_at_s`` moves forward
    while the session is used (idle timeout), never past ``created_at_s`` plus the longest life.
    """

    __tablename__ = "console_sessions"
    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)  # sha256 hex
    key_id: Mapped[int] = mapped_column(ForeignKey("api_keys.id", ondelete="CASCADE"), index=True)
    csrf: Mapped[str] = mapped_column(String(64))
    created_at_s: Mapped[float] = mapped_column(Float)
    expires_at_s: Mapped[float] = mapped_column(Float, index=True)
