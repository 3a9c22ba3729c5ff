"""Fair sharing: the rank by which the cycle picks the next tenant to serve.

Weighted dominant-resource share over the fleet; see docs/admission.md.
"""

from __future__ import annotations

import math

from npucenter.policy.admission.ledger import Ledger

__all__ = ["FairSharing"]


class FairSharing(Ledger):
    """The ledger plus each tenant's fair-sharing rank (cached until its usage changes)."""

    def dominant_share(self, tenant: str) -> float:
        """max over device types of cards held / fleet cards of that type, over the weight."""
        cached = self.share_cache.get(tenant)
        if cached is not None:
            return cached
        dominant = 0.0
        for device_type, used in self.used_by_tenant.get(tenant, {}).items():
            if used:
                types = self.types.get(device_type)
                capacity = types.capacity if types is not None else 0
                dominant = max(dominant, used / capacity if capacity else math.inf)
        weight = self.quotas[tenant].fair_share_weight
        value = (math.inf if dominant else 0.0) if weight == 0 else dominant / weight
        self.share_cache[tenant] = value
        return value

    def share(self, tenant: str) -> float:
        """The fair-sharing rank of a tenant (0 for all when fair sharing is off)."""
        return self.dominant_share(tenant) if self.policy.fair_sharing else 0.0
