"""The one facade over the store: a transaction's reads and writes across every aggregate.

Each aggregate lives in its own module (:mod:`.tenants`, :mod:`.keys`, :mod:`.fleet`,
:mod:`.quotas`, :mod:`.deployments`, :mod:`.jobs`, :mod:`.ledger`, :mod:`.results`,
:mod:`.artifacts`, :mod:`.sessions`); this class
combines them so that callers open a transaction with ``Database.session()`` and wrap it in a
:class:`Repository` (``now_s`` injected). Every SQLAlchemy query of the center is behind it:
api/, gateway/ and executors/ call its methods and never build a query themselves.
"""

from __future__ import annotations

from npucenter.store.artifacts import ARTIFACT_KINDS, ArtifactRecordStore
from npucenter.store.base import StoreBase, canonical_device, check_runs_on
from npucenter.store.deployments import REPLICA_STATES, DeploymentStore
from npucenter.store.fleet import HEALTH_STATES, FleetStore
from npucenter.store.jobs import (
    JOB_KINDS,
    JOB_STATES,
    JOB_TRANSITIONS,
    MAX_LOG_TAIL_CHARS,
    JobStore,
)
from npucenter.store.keys import (
    KEY_PREFIX,
    AdminKeyStatus,
    KeyStore,
    Principal,
    hash_secret,
    new_secret,
    verify_secret,
)
from npucenter.store.ledger import LedgerStore
from npucenter.store.quotas import PRIORITY_CLASSES, QuotaStore, QuotaView
from npucenter.store.results import MAX_RESULT_BYTES, ResultStore
from npucenter.store.sessions import ConsoleSessionStore, SessionView
from npucenter.store.tenants import TENANT_KINDS, TenantStore

__all__ = [
    "ARTIFACT_KINDS",
    "HEALTH_STATES",
    "JOB_KINDS",
    "JOB_STATES",
    "JOB_TRANSITIONS",
    "KEY_PREFIX",
    "MAX_LOG_TAIL_CHARS",
    "MAX_RESULT_BYTES",
    "PRIORITY_CLASSES",
    "REPLICA_STATES",
    "TENANT_KINDS",
    "AdminKeyStatus",
    "Principal",
    "QuotaView",
    "Repository",
    "SessionView",
    "StoreBase",
    "canonical_device",
    "check_runs_on",
    "hash_secret",
    "new_secret",
    "verify_secret",
]


class Repository(
    DeploymentStore,
    JobStore,
    ResultStore,
    QuotaStore,
    ConsoleSessionStore,
    KeyStore,
    TenantStore,
    FleetStore,
    LedgerStore,
    ArtifactRecordStore,
):
    """Reads and writes of one transaction over every aggregate (see the module docstring).

    ``Repository(session, now_s, rates)``: ``now_s`` gives epoch seconds; ``rates`` prices held
    cards on the ledger (energy from modelled power, cost from the center's tariff).
    """
