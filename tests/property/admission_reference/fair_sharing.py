"""Fair sharing: the rank by which the cycle picks the next tenant to serve.

Two bases (``AdmissionPolicy.fair_sharing_basis``). ``borrowed`` is Kueue's dominant resource
share: over device types, the cards a tenant holds above its nominal quota divided by what its
cohort could lend it, divided by its weight; a tenant within its quota ranks 0. ``usage`` is
Kueue's admission fair sharing: decayed card-seconds of recent use (kept by the caller with
:func:`decayed_usage_card_s`) plus the cards it holds now, counted as if held for
``usage_half_life_s / ln 2``, divided by its weight. Either way the rank includes the workload
about to be admitted, so capacity left over is shared out in proportion to the weights.
"""

from __future__ import annotations

import math

from npucenter.errors import InvalidConfigError
from npucenter.policy.admission.types import AdmissionPolicy, AdmissionSnapshot, FairSharingBasis

from .ledger import Ledger, Node, potential

__all__ = ["FairSharing", "decayed_usage_card_s"]


def decayed_usage_card_s(
    previous_card_s: float, held_cards: float, elapsed_s: float, half_life_s: float
) -> float:
    """A tenant's usage history after ``elapsed_s`` holding ``held_cards`` cards.

    Exponential decay with ``half_life_s``; holding c cards for ever converges to
    ``c * half_life_s / ln 2`` card-seconds, the figure the cycle adds for cards held now.

    Raises:
        InvalidConfigError: a negative or non-finite argument, or a half-life <= 0.
    """
    for name, value in (
        ("previous_card_s", previous_card_s),
        ("held_cards", held_cards),
        ("elapsed_s", elapsed_s),
    ):
        if not (math.isfinite(value) and value >= 0):
            raise InvalidConfigError(name, value, "must be finite and >= 0")
    if not (math.isfinite(half_life_s) and half_life_s > 0):
        raise InvalidConfigError("half_life_s", half_life_s, "must be > 0")
    keep: float = 0.5 ** (elapsed_s / half_life_s)
    return previous_card_s * keep + held_cards * half_life_s / math.log(2) * (1.0 - keep)


class FairSharing(Ledger):
    """The ledger plus each tenant's fair-sharing rank."""

    def __init__(self, snapshot: AdmissionSnapshot, now_s: float, policy: AdmissionPolicy) -> None:
        super().__init__(snapshot, now_s, policy)
        self.by_usage = policy.fair_sharing_basis is FairSharingBasis.USAGE
        self.history = dict(snapshot.usage_history_card_s)
        self.hold_s = policy.usage_half_life_s / math.log(2)
        self.lendable: dict[tuple[str, str], float] = {}  # (tenant, type) -> what it could borrow

    def _lendable(self, node: Node, device_type: str) -> float:
        key = (node.name, device_type)
        found = self.lendable.get(key)
        if found is None:
            parent = node.parent
            found = self.lendable[key] = 0.0 if parent is None else potential(parent, device_type)
        return found

    def share_with(self, tenant: str, device_type: str | None, cards: int) -> float:
        """The tenant's rank if it also held ``cards`` more cards of ``device_type``."""
        node = self.nodes[tenant]
        if self.by_usage:
            value = self.history.get(tenant, 0.0) + (node.total + cards) * self.hold_s
        else:
            if node.parent is None:
                return 0.0
            value = self._ratio(tenant)
            if device_type is not None and cards:
                # adding cards only raises this type's ratio, so the max of the two is the max
                borrowed = node.usage.get(device_type, 0) + cards
                borrowed -= node.subtree_quota.get(device_type, 0)
                if borrowed > 0:
                    lendable = self._lendable(node, device_type)
                    if lendable > 0 and borrowed / lendable > value:
                        value = borrowed / lendable
        return _weighted(value, node.weight)

    def _ratio(self, tenant: str) -> float:
        """The unweighted dominant share of what the tenant holds now (cached)."""
        cached = self.ratio_cache.get(tenant)
        if cached is None:
            node = self.nodes[tenant]
            cached = self.ratio_cache[tenant] = self._dominant(node, node.usage)
        return cached

    def _dominant(self, node: Node, held: dict[str, int]) -> float:
        """The most over device types of the cards ``held`` above quota over what is lendable."""
        value = 0.0
        for d, used in held.items():
            borrowed = used - node.subtree_quota.get(d, 0)
            if borrowed > 0:
                lendable = self._lendable(node, d)
                if lendable > 0 and borrowed / lendable > value:
                    value = borrowed / lendable
        return value

    def old_share(self, tenant: str) -> float:
        """The tenant's rank counting only the work it ran before the cycle (and still runs).

        Fair-sharing preemption compares victims by this share: it does not rise with what the
        cycle admits, so a failed search stays failed until the next preemption.
        """
        node = self.nodes[tenant]
        if self.by_usage:
            value = self.history.get(tenant, 0.0) + sum(node.old.values()) * self.hold_s
        else:
            if node.parent is None:
                return 0.0
            value = self._dominant(node, node.old)
        return _weighted(value, node.weight)

    def dominant_share(self, tenant: str) -> float:
        """The tenant's rank with what it holds now (cached until its usage changes)."""
        cached = self.share_cache.get(tenant)
        if cached is None:
            cached = self.share_cache[tenant] = self.share_with(tenant, None, 0)
        return cached


def _weighted(value: float, weight: float) -> float:
    """A share divided by the tenant's weight (weight 0: infinite once it holds anything)."""
    if weight == 0:
        return math.inf if value else 0.0
    return value / weight
