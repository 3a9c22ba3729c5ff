"""The store seen through the gateway's and metering's seams.

:class:`StoreKeyResolver` implements ``gateway.auth.KeyResolver`` (API key -> principal with the
tenant's priority and token limit) and :class:`StoreLedger` implements ``metering.Ledger``
(usage records -> append-only ledger rows, one transaction per call). Wrap the resolver in the
gateway's ``CachingKeyResolver`` so the hot path does not wait on the database.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from npucenter.api.context import ControlPlane
from npucenter.gateway.auth import Principal as GatewayPrincipal
from npucenter.gateway.auth import TenantLimits
from npucenter.metering.ledger import UsageRecord
from npucenter.policy.quota import PriorityClass

__all__ = ["ADMIN_TENANT", "StoreKeyResolver", "StoreLedger"]

log = logging.getLogger(__name__)

#: The tenant name the gateway sees for an admin key (no ledger rows are kept for it).
ADMIN_TENANT = "_admin"


class StoreKeyResolver:
    """API keys from the control-plane store (``gateway.auth.KeyResolver``)."""

    def __init__(self, control: ControlPlane) -> None:
        self.control = control

    def resolve(self, api_key: str) -> GatewayPrincipal:
        """The principal of ``api_key``; raises AuthenticationError when unknown or revoked."""
        with self.control.tx() as repo:
            found = repo.lookup_key(api_key)
            if found.is_admin or found.tenant_id is None:
                return GatewayPrincipal(
                    key_id=str(found.key_id),
                    tenant=ADMIN_TENANT,
                    scopes=frozenset({"admin", "inference"}),
                    is_admin=True,
                )
            quotas = repo.tenant_quotas(found.tenant_id)
        priority = max(
            (PriorityClass.parse(q.priority_class) for q in quotas),
            default=PriorityClass.BEST_EFFORT,
        )
        rates = [q.tokens_per_s for q in quotas if q.tokens_per_s is not None]
        return GatewayPrincipal(
            key_id=str(found.key_id),
            tenant=found.tenant_name or str(found.tenant_id),
            scopes=frozenset({"inference"}),
            priority=int(priority),
            limits=TenantLimits(tokens_per_min=rates[0] * 60.0 if rates else None),
        )


class StoreLedger:
    """Usage records into the store's append-only ledger (``metering.Ledger``)."""

    def __init__(self, control: ControlPlane) -> None:
        self.control = control

    def append(self, records: Sequence[UsageRecord]) -> None:
        """Append rows in one transaction; rows of admin keys or unknown tenants are skipped."""
        if not records:
            return
        with self.control.tx() as repo:
            ids = {t.name: t.id for t in repo.list_tenants()}
            for rec in records:
                tenant_id = ids.get(rec.tenant)
                if tenant_id is None:
                    log.warning(
                        "usage of unknown tenant %r not recorded (%s)", rec.tenant, rec.request_id
                    )
                    continue
                repo.append_usage(
                    tenant_id=tenant_id,
                    kind="tokens",
                    device_type=rec.device_id or None,
                    device_seconds=rec.device_s,
                    tokens_in=rec.input_tokens,
                    tokens_out=rec.output_tokens,
                    energy_j=rec.energy_j,
                    cost_usd=rec.cost_usd,
                    ref=f"{rec.request_id} {rec.service} {rec.status}",
                    at_s=rec.started_at_s or None,
                )
