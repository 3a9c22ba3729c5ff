"""Pydantic models of the control-plane API: request bodies (extra fields refused) and responses.

Field names carry units like the core (``_cards``, ``_s``, ``_j``). Range checks that need no
stored state live here so that malformed bodies are answered 422 before touching the store;
request bodies are strict (no booleans or strings for numbers, no NaN, no unknown fields).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "AdmissionReport",
    "AllocationOut",
    "CardOut",
    "DeploymentIn",
    "DeploymentOut",
    "DeploymentPatch",
    "ErrorBody",
    "HealthIn",
    "JobEventOut",
    "JobIn",
    "JobOut",
    "JobStateIn",
    "KeyCreated",
    "KeyIn",
    "KeyOut",
    "PendingOut",
    "QuotaIn",
    "QuotaOut",
    "ReplicaOut",
    "ServerIn",
    "ServerOut",
    "TenantIn",
    "TenantOut",
    "UsageIn",
    "UsageOut",
    "UsageSummaryRow",
    "WhoAmI",
]

TenantKind = Literal["company", "university", "research_institute"]
PriorityClass = Literal["production", "research", "education", "best-effort"]
Health = Literal["healthy", "degraded", "down"]
Name = Field(min_length=1, max_length=128, pattern=r"^\S(.*\S)?$")


class _In(BaseModel):
    # strict: true/false are not numbers and "3" is not an integer ({"replicas": false} is a
    # 422, not a scale to 0); NaN and Infinity are refused.
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class _Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class ErrorBody(BaseModel):
    """The error document: ``{"error": {"code", "message", "details"}}``."""

    error: dict[str, Any]


class WhoAmI(_Out):
    """The caller's identity."""

    scope: str
    tenant_id: int | None
    tenant: str | None
    key_id: int


class TenantIn(_In):
    """Create a tenant."""

    name: str = Name
    kind: TenantKind


class TenantOut(_Out):
    """A tenant."""

    id: int
    name: str
    kind: str
    created_at_s: float


class KeyIn(_In):
    """Create an API key for a tenant (or, by an admin with ``scope="admin"``, an admin key)."""

    tenant: str | None = None
    scope: Literal["tenant", "admin"] = "tenant"
    name: str = Field(default="", max_length=128)


class KeyOut(_Out):
    """An API key without its secret."""

    id: int
    short_id: str  # public; generated secrets read npc_<short_id>_...
    scope: str
    tenant_id: int | None
    name: str
    created_at_s: float
    revoked_at_s: float | None


class KeyCreated(KeyOut):
    """A new key: ``key`` is the secret, shown this one time only."""

    key: str


class ServerIn(_In):
    """Register a server of ``num_cards`` cards of one catalog device type."""

    name: str = Name
    device_type: str = Field(min_length=1, max_length=64)
    num_cards: int = Field(ge=1, le=64)
    labels: dict[str, str] = Field(default_factory=dict)


class CardOut(_Out):
    """A card and what holds it."""

    index: int
    health: str
    held_by: str | None = None  # "job:ID" | "deployment:ID/replica:N" | None
    tenant: str | None = None
    borrowed: bool = False
    # a replica holder's engine: starting | running | pending | failed (None: not reported);
    # draining: scaled down, held until its engine has finished its requests and stopped
    run_state: str | None = None


class ServerOut(_Out):
    """A server with its cards."""

    id: int
    name: str
    device_type: str
    device_kind: str
    health: str
    labels: dict[str, Any]
    num_cards: int
    num_free_cards: int
    # held cards on which nothing runs: a replica whose engine is pending or failed
    num_idle_held_cards: int = 0
    cards: list[CardOut]


class HealthIn(_In):
    """Set the health of a server or one of its cards."""

    health: Health
    card_index: int | None = Field(default=None, ge=0)


class QuotaIn(_In):
    """Create or replace a tenant's quota for a device type (cards)."""

    tenant: str = Field(min_length=1)
    device_type: str = Field(min_length=1, max_length=64)
    nominal_cards: int = Field(ge=0, le=100_000)
    borrowing_limit_cards: int | None = Field(default=None, ge=0, le=100_000)
    lending_limit_cards: int | None = Field(default=None, ge=0, le=100_000)
    cohort: str | None = Field(default=None, min_length=1, max_length=64)  # None: no cohort
    priority_class: PriorityClass = "research"
    tokens_per_s: float | None = Field(default=None, ge=0)
    #: the tenant's: hold admits nothing new, hold-and-drain also preempts what runs
    stop_policy: Literal["none", "hold", "hold-and-drain"] = "none"
    #: opt-in: borrow device types the tenant's quota does not name (default: never)
    borrow_unnamed_device_types: bool = False
    fair_share_weight: float = Field(default=1.0, ge=0, le=1_000)


class QuotaOut(_Out):
    """A quota row with what the tenant holds now."""

    id: int
    tenant_id: int
    tenant: str
    device_type: str
    nominal_cards: int
    borrowing_limit_cards: int | None
    lending_limit_cards: int | None
    cohort: str | None
    priority_class: str
    tokens_per_s: float | None
    stop_policy: str = "none"
    borrow_unnamed_device_types: bool = False
    fair_share_weight: float = 1.0
    used_cards: int = 0
    borrowed_cards: int = 0


class CohortIn(_In):
    """Create or replace a cohort's parent and cards of its own (nested cohorts)."""

    name: str = Field(min_length=1, max_length=64)
    parent: str | None = Field(default=None, min_length=1, max_length=64)  # None: a root
    nominal_cards: dict[str, int] = Field(default_factory=dict)  # device type -> cards
    borrowing_limit_cards: dict[str, int] = Field(default_factory=dict)  # missing: unlimited
    lending_limit_cards: dict[str, int] = Field(default_factory=dict)  # missing: lend all
    fair_share_weight: float = Field(default=1.0, ge=0, le=1_000)


class CohortOut(_Out):
    """A cohort row."""

    name: str
    parent: str | None
    nominal_cards: dict[str, int]
    borrowing_limit_cards: dict[str, int]
    lending_limit_cards: dict[str, int]
    fair_share_weight: float


class DeploymentIn(_In):
    """Deploy an inference service."""

    name: str = Name
    model: str = Field(min_length=1, max_length=128)
    device_type: str = Field(min_length=1, max_length=64)
    tp: int = Field(default=1, ge=1, le=64)
    precision: str = Field(default="bf16", min_length=1, max_length=16)
    replicas: int = Field(default=1, ge=0, le=256)
    priority_class: PriorityClass | None = None
    tenant: str | None = None  # admins deploy on a tenant's behalf
    engine: str = Field(default="virtual", min_length=1, max_length=32)
    # the engine's options (docs/engines.md): model_path, max_model_len, base_url, api_key_env...
    engine_options: dict[str, Any] = Field(default_factory=dict)
    # autoscaling (docs/control-plane.md): either set -> scaled on load, to zero when min is 0
    min_replicas: int | None = Field(default=None, ge=0, le=256)
    max_replicas: int | None = Field(default=None, ge=1, le=256)
    # with min_replicas 0: idle this long -> 0 replicas (default: the policy's, 300 s)
    idle_to_zero_s: float | None = Field(default=None, ge=0, le=30 * 86400)
    #: fungible replicas: tried in order after device_type; each replica runs on the first with
    #: quota and room, served by the engine of that device's family (docs/admission.md)
    fallback_device_types: list[str] = Field(default_factory=list, max_length=8)


class DeploymentPatch(_In):
    """Scale a deployment, or set its autoscaling bounds (only the fields given change).

    ``min_replicas``/``max_replicas``/``idle_to_zero_s`` set to null together make the count
    fixed again; ``max_replicas`` must fit the tenant's quota (409 otherwise).
    """

    replicas: int | None = Field(default=None, ge=0, le=256)
    min_replicas: int | None = Field(default=None, ge=0, le=256)
    max_replicas: int | None = Field(default=None, ge=1, le=256)
    idle_to_zero_s: float | None = Field(default=None, ge=0, le=30 * 86400)


class ReplicaOut(_Out):
    """One replica."""

    index: int
    state: str  # pending | placed | draining (scaled down; on its cards until its engine stops)
    server: str | None = None
    card_indexes: list[int] = Field(default_factory=list)
    num_borrowed_cards: int = 0
    # a placed (or draining) replica's engine as the reconciler saw it: starting | running |
    # pending | failed (None: not reported); why it is not running
    run_state: str | None = None
    run_reason: str | None = None
    device_type: str | None = None  # a placed replica's device type (admission's choice)


class SloAttainmentOut(_Out):
    """A deployment's requests over the last ``window_s`` against its SLO (live/attainment.py):
    the share whose TTFT was within ``ttft_s``, whose TPOT was within ``tpot_s``, and the smaller
    (None: no request in the window)."""

    slo: str
    ttft_s: float | None = None
    tpot_s: float | None = None
    window_s: float
    num_requests: int
    ttft_met_fraction: float | None = None
    tpot_met_fraction: float | None = None
    fraction: float | None = None


class DeploymentOut(_Out):
    """A deployment and its replicas."""

    id: int
    tenant_id: int
    tenant: str
    name: str
    model: str
    device_type: str
    device_types: list[str] = Field(default_factory=list)  # accepted, in order (first: device_type)
    tp: int
    precision: str
    replicas: int
    num_placed_replicas: int
    # placed replicas whose engine runs (the reconciler's word; placed ones when none reports)
    num_running_replicas: int = 0
    min_replicas: int | None = None
    max_replicas: int | None = None
    idle_to_zero_s: float | None = None
    priority_class: str
    created_at_s: float
    replica_states: list[ReplicaOut]
    engine: str = "virtual"
    engine_options: dict[str, Any] | None = None
    # over a recent window, from a gateway in this process (`npucenter up`); None: no gateway
    # here or no SLO for it in the fleet file
    slo_attainment: SloAttainmentOut | None = None


class JobIn(_In):
    """Submit a job: an image or a command, and the cards it needs (one server)."""

    name: str = Name
    kind: Literal["finetune", "preprocess", "benchmark", "simulate", "plan"]
    device_type: str = Field(min_length=1, max_length=64)
    #: 0: a host job holding no card (kinds simulate and plan only; policy/admission/host.py)
    num_cards: int = Field(default=1, ge=0, le=64)
    image: str | None = Field(default=None, max_length=512)
    command: list[str] = Field(default_factory=list, max_length=256)
    priority_class: PriorityClass | None = None
    tenant: str | None = None  # admins submit on a tenant's behalf
    #: a fungible job: tried in order after device_type; it runs on the first with quota and room
    fallback_device_types: list[str] = Field(default_factory=list, max_length=8)
    #: a preprocess/finetune job run by the center's own program (npucenter.jobs.spec), or a
    #: simulate/plan job running the twin (npucenter.jobs.twin); no command
    spec: dict[str, Any] | None = None


class JobStateIn(_In):
    """Report a job's progress (executors and admins): running, succeeded, failed."""

    state: Literal["running", "succeeded", "failed", "cancelled"]
    reason: str = Field(default="", max_length=512)


class JobOut(_Out):
    """A job."""

    id: int
    tenant_id: int
    tenant: str
    name: str
    kind: str
    image: str | None
    command: list[str]
    device_type: str
    device_types: list[str] = Field(default_factory=list)  # a fungible job's, in order
    num_cards: int
    priority_class: str
    state: str
    server: str | None = None
    borrowed_cards: int
    num_preemptions: int
    created_at_s: float
    updated_at_s: float
    started_at_s: float | None = None
    finished_at_s: float | None = None
    exit_code: int | None = None  # of the last run (negative: killed by that signal)
    log_tail: str | None = None  # the end of the last run's output (bounded)
    failure_code: str | None = None  # why it failed: exit_code, not_supported, cannot_start
    failure_reason: str | None = None
    has_result: bool = False  # GET /api/jobs/{id}/result
    latest_reason: str = ""  # its latest history row's reason: why it waits, or how it ended


class JobEventOut(_Out):
    """One row of a job's history."""

    from_state: str | None
    to_state: str
    reason: str
    at_s: float


class UsageIn(_In):
    """Append a ledger row (admins, metering)."""

    tenant: str = Field(min_length=1)
    kind: str = Field(min_length=1, max_length=32)
    device_type: str | None = None
    device_seconds: float = Field(default=0.0, ge=0)
    tokens_in: int = Field(default=0, ge=0, le=2**31 - 1)
    tokens_out: int = Field(default=0, ge=0, le=2**31 - 1)
    energy_j: float = Field(default=0.0, ge=0)
    cost_usd: float | None = Field(default=None, ge=0)
    ref: str = Field(default="", max_length=256)


class UsageOut(_Out):
    """One ledger row."""

    id: int
    tenant_id: int
    tenant: str
    kind: str
    device_type: str | None
    device_seconds: float
    tokens_in: int
    tokens_out: int
    energy_j: float
    cost_usd: float | None
    ref: str
    at_s: float
    request_id: str | None = None  # a gateway request's x-request-id (tokens rows)


class UsageSummaryRow(_Out):
    """Ledger totals of one group (tenant, kind, model or adapter, time bucket: what ``by``
    and ``bucket_s`` asked for; the others are null)."""

    tenant: str | None = None
    kind: str | None = None
    model: str | None = None  # a gateway row's model or adapter; a card-time row's device
    bucket_start_s: float | None = None
    device_seconds: float
    tokens_in: int
    tokens_out: int
    energy_j: float
    cost_usd: float | None = None  # null: no row of the group is priced
    num_entries: int
    first_at_s: float
    last_at_s: float


class AllocationOut(_Out):
    """One admission or preemption of a cycle."""

    workload: str
    tenant: str
    server: str | None = None
    card_indexes: list[int] = Field(default_factory=list)
    num_borrowed_cards: int = 0
    reason: str = ""


class PendingOut(_Out):
    """A workload left waiting, with the policy's reason and an actionable line."""

    workload: str
    tenant: str
    reason: str
    message: str


class AdmissionReport(_Out):
    """What one admission cycle did."""

    admitted: list[AllocationOut]
    preempted: list[AllocationOut]
    pending: list[PendingOut] = Field(default_factory=list)
    num_pending: int
    num_still_pending: int
